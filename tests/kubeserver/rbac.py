"""Authentication by bearer token and authorization by RBAC rules read from a manifest.

Pure once built (reads the YAML in `from_manifest`).  Authorization follows the RBAC
authorizer's matching rules: a verb and an API group match literally or by `*`; a resource
matches `*`, `plural`, `plural/subresource` or `*/subresource`; `resourceNames`, when
present, must contain the request's name (so they never grant create or list); a Role only
counts through a RoleBinding in the request's namespace; a ClusterRole counts everywhere
through a ClusterRoleBinding and in one namespace through a RoleBinding.  Not supported:
aggregated ClusterRoles (`aggregationRule`) and nonResourceURLs rules.

Besides the manifest: members of `system:masters` may do everything (the admin token), and
an `allowed` table of (user, verb, group, resource) tuples -- `*` matching anything and
resource possibly `plural/sub` -- grants extra access, e.g. for SubjectAccessReview answers
in the REST API's tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SUPERUSER_GROUP = "system:masters"
CONTROLLER_USER = "system:serviceaccount:predictive-autoscaler:predictive-autoscaler"
ADMIN_TOKEN = "admin-token"
CONTROLLER_TOKEN = "controller-token"


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    def as_dict(self) -> dict:
        return {"username": self.username, "uid": self.uid, "groups": list(self.groups)}


def service_account_user(namespace: str, name: str) -> UserInfo:
    return UserInfo(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        uid=f"sa-{namespace}-{name}",
    )


def default_tokens() -> dict[str, UserInfo]:
    return {
        ADMIN_TOKEN: UserInfo("kubernetes-admin", (SUPERUSER_GROUP, "system:authenticated"),
                              uid="admin"),
        CONTROLLER_TOKEN: service_account_user("predictive-autoscaler", "predictive-autoscaler"),
    }


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, as the RBAC authorizer sees it."""

    user: UserInfo
    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def describe(self) -> str:
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        where = f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        return (f'User "{self.user.username}" cannot {self.verb} resource "{what}" in API group '
                f'"{self.group}"{where}')


@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: dict) -> Rule:
        return cls(frozenset(raw.get("verbs") or ()), frozenset(raw.get("apiGroups") or ()),
                   frozenset(raw.get("resources") or ()),
                   frozenset(raw.get("resourceNames") or ()))

    def matches(self, a: Attributes) -> bool:
        combined = a.resource + (f"/{a.subresource}" if a.subresource else "")
        resource_ok = ("*" in self.resources or combined in self.resources
                       or (a.subresource and f"*/{a.subresource}" in self.resources))
        return bool(
            ("*" in self.verbs or a.verb in self.verbs)
            and ("*" in self.api_groups or a.group in self.api_groups)
            and resource_ok
            and (not self.resource_names or a.name in self.resource_names)
        )


@dataclass(frozen=True)
class Binding:
    role_kind: str  # Role or ClusterRole
    role_name: str
    namespace: str | None  # None for a ClusterRoleBinding
    subjects: tuple[tuple[str, str, str], ...]  # (kind, name, namespace)

    def covers(self, user: UserInfo) -> bool:
        for kind, name, namespace in self.subjects:
            if kind == "User" and name == user.username:
                return True
            if kind == "Group" and name in user.groups:
                return True
            sa_namespace = namespace or self.namespace or ""
            if kind == "ServiceAccount" and (
                    user.username == f"system:serviceaccount:{sa_namespace}:{name}"):
                return True
        return False


@dataclass
class RbacPolicy:
    cluster_roles: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    roles: dict[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)
    allowed: set[tuple[str, str, str, str]] = field(default_factory=set)

    @classmethod
    def from_manifest(cls, path: Path) -> RbacPolicy:
        policy = cls()
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc:
                policy.add_document(doc)
        return policy

    def add_document(self, doc: dict) -> None:
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        rules = tuple(Rule.parse(r) for r in doc.get("rules") or ())
        if kind == "ClusterRole":
            self.cluster_roles[meta["name"]] = rules
        elif kind == "Role":
            self.roles[(meta.get("namespace", "default"), meta["name"])] = rules
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            subjects = tuple((s["kind"], s["name"], s.get("namespace", ""))
                             for s in doc.get("subjects") or ())
            namespace = meta.get("namespace", "default") if kind == "RoleBinding" else None
            self.bindings.append(Binding(doc["roleRef"]["kind"], doc["roleRef"]["name"],
                                         namespace, subjects))

    def bind(self, role_kind: str, role_name: str, *, user: str = "", group: str = "",
             namespace: str | None = None) -> None:
        """Add a binding in a test, e.g. bind("ClusterRole", "predictive-autoscaler-viewer",
        user="alice")."""
        subject = ("User", user, "") if user else ("Group", group, "")
        self.bindings.append(Binding(role_kind, role_name, namespace, (subject,)))

    def allow(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        self.allowed.update(entries)

    def authorize(self, a: Attributes) -> tuple[bool, str]:
        """(allowed, reason), the reason naming what granted it."""
        if SUPERUSER_GROUP in a.user.groups:
            return True, f"member of {SUPERUSER_GROUP}"
        combined = a.resource + (f"/{a.subresource}" if a.subresource else "")
        for user, verb, group, resource in self.allowed:
            if (user in ("*", a.user.username) and verb in ("*", a.verb)
                    and group in ("*", a.group) and resource in ("*", combined)):
                return True, "allowed by the test table"
        for binding in self.bindings:
            if not binding.covers(a.user):
                continue
            if binding.namespace is not None and binding.namespace != a.namespace:
                continue
            if binding.role_kind == "Role":
                rules = self.roles.get((binding.namespace or "", binding.role_name), ())
            else:
                rules = self.cluster_roles.get(binding.role_name, ())
            if any(rule.matches(a) for rule in rules):
                kind = "RoleBinding" if binding.namespace is not None else "ClusterRoleBinding"
                return True, f'RBAC: allowed by {kind} of {binding.role_kind} "{binding.role_name}"'
        return False, ""
