"""autoscaler/auth.py: static tokens (parsing and checking), KubeAuth against the project's test
Kubernetes API server over HTTP with the official client (TokenReview + SubjectAccessReview,
RBAC from manifests/base/rbac.yaml), caching on a fake clock, and authenticator_for."""

from __future__ import annotations

import hashlib
import logging
import string
from concurrent.futures import ThreadPoolExecutor

import kubernetes.client as k8s
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.auth import (
    AuthUnavailable,
    Caller,
    Forbidden,
    KubeAuth,
    NoAuth,
    StaticTokens,
    Unauthenticated,
    authenticator_for,
)
from autoscaler.errors import ConfigError
from autoscaler.settings import Settings
from tests.kubeserver import KubeServer
from tests.kubeserver.rbac import UserInfo, service_account_user

SECRET = "s3cretTOKENvalue42"  # must never show up in any message
OTHER = "an0therSECRETtoken"
NO_ENV: dict[str, str] = {}


def sha6(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:6]


def allowed_scopes(auth, token: str) -> set[str]:
    """The scopes `auth` grants `token` (raises Unauthenticated for an unknown token)."""
    granted = set()
    for scope in ("read", "write"):
        try:
            auth.authenticate(f"Bearer {token}", scope)
            granted.add(scope)
        except Forbidden:
            pass
    return granted


# ====================================================================== static tokens: parsing
@pytest.mark.parametrize(("env", "file_text", "expected"), [
    pytest.param("alpha1:read,beta2:write", None,
                 {"alpha1": {"read"}, "beta2": {"read", "write"}}, id="env-write-implies-read"),
    pytest.param(" alpha1 : read , , beta2:write ,", None,
                 {"alpha1": {"read"}, "beta2": {"read", "write"}}, id="env-spaces-empty-items"),
    pytest.param(None, "# operators\nalpha1:read\n\n  beta2:write  # ci bot\n#gamma3:write\n",
                 {"alpha1": {"read"}, "beta2": {"read", "write"}}, id="file-comments"),
    pytest.param("alpha1:read", "beta2:write\n",
                 {"alpha1": {"read"}, "beta2": {"read", "write"}}, id="env-and-file"),
    pytest.param("alpha1:write", "alpha1:write\n", {"alpha1": {"read", "write"}},
                 id="duplicate-same-scope"),
    pytest.param(None, "abc+/_~.-XYZ==:read\n", {"abc+/_~.-XYZ==": {"read"}},
                 id="rfc6750-characters"),
])
def test_static_tokens_parse(tmp_path, env, file_text, expected):
    environ = {} if env is None else {"AUTOSCALER_API_TOKENS": env}
    path = None
    if file_text is not None:
        path = tmp_path / "tokens"
        path.write_text(file_text)
    tokens = StaticTokens.from_sources(environ, path)
    assert not tokens.empty
    for token, scopes in expected.items():
        assert allowed_scopes(tokens, token) == scopes
    with pytest.raises(Unauthenticated):
        tokens.authenticate("Bearer gamma3", "read")  # commented out / never listed


@pytest.mark.parametrize(("env", "file_text", "where", "why"), [
    pytest.param(SECRET, None, "AUTOSCALER_API_TOKENS entry 1", "expected token:read",
                 id="no-scope"),
    pytest.param(f"{OTHER}:read,{SECRET}:admin", None, "AUTOSCALER_API_TOKENS entry 2",
                 "must be read or write", id="bad-scope"),
    pytest.param(f"{SECRET}:READ", None, "entry 1", "must be read or write", id="scope-case"),
    pytest.param(f"{SECRET}:", None, "entry 1", "must be read or write", id="empty-scope"),
    pytest.param(":read", None, "entry 1", "empty token", id="empty-token"),
    pytest.param(f"{SECRET}:read:write", None, "entry 1", "must be read or write",
                 id="two-colons"),
    pytest.param(f"{SECRET} x:read", None, "entry 1", "cannot carry", id="space-in-token"),
    pytest.param(f"{SECRET}:read,{SECRET}:write", None, "AUTOSCALER_API_TOKENS entry 2",
                 "also listed at AUTOSCALER_API_TOKENS entry 1", id="duplicate-conflict-env"),
    pytest.param(f"{SECRET}:write", f"# x\n{SECRET}:read\n", "line 2",
                 "also listed at AUTOSCALER_API_TOKENS entry 1", id="duplicate-conflict-file"),
    pytest.param(None, f"{OTHER}:write\n{SECRET}:writ\n", "line 2", "must be read or write",
                 id="file-bad-scope"),
])
def test_static_tokens_reject(tmp_path, env, file_text, where, why):
    environ = {} if env is None else {"AUTOSCALER_API_TOKENS": env}
    path = None
    if file_text is not None:
        path = tmp_path / "tokens"
        path.write_text(file_text)
    with pytest.raises(ConfigError) as caught:
        StaticTokens.from_sources(environ, path)
    message = str(caught.value)
    assert where in message and why in message
    assert "\n" not in message
    assert SECRET not in message and OTHER not in message


def test_static_tokens_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read") as caught:
        StaticTokens.from_sources(NO_ENV, tmp_path / "missing")
    assert "\n" not in str(caught.value)


def test_static_tokens_empty_and_repr(tmp_path):
    (tmp_path / "tokens").write_text("# nobody yet\n\n")
    assert StaticTokens.from_sources({"AUTOSCALER_API_TOKENS": " , "}, tmp_path / "tokens").empty
    tokens = StaticTokens.from_sources({"AUTOSCALER_API_TOKENS": f"{SECRET}:write"}, None)
    assert SECRET not in repr(tokens)


b64token = st.text(string.ascii_letters + string.digits + "-._~+/", min_size=12, max_size=40)


@settings(max_examples=60, deadline=None)
@given(token=b64token, scope=st.sampled_from(["read", "write"]))
def test_static_caller_is_hash_never_token(token, scope):
    tokens = StaticTokens.from_sources({"AUTOSCALER_API_TOKENS": f"{token}:{scope}"}, None)
    caller = tokens.authenticate(f"Bearer {token}", "read")
    assert caller == Caller(sha6(token))
    assert token not in caller.name


@settings(max_examples=60, deadline=None)
@given(token=b64token, bad=st.sampled_from(["admin", "", "rw", "Write", "read write"]))
def test_static_config_error_never_has_token(token, bad):
    with pytest.raises(ConfigError) as caught:
        StaticTokens.from_sources({"AUTOSCALER_API_TOKENS": f"x:read,{token}:{bad}"}, None)
    assert token not in str(caught.value) and "\n" not in str(caught.value)


# ====================================================================== static tokens: checking
STATIC = {"AUTOSCALER_API_TOKENS": f"{SECRET}:read,{OTHER}:write"}


@pytest.mark.parametrize(("header", "scope", "outcome"), [
    pytest.param(None, "read", Unauthenticated, id="no-header"),
    pytest.param("", "read", Unauthenticated, id="empty-header"),
    pytest.param(f"Basic {SECRET}", "read", Unauthenticated, id="wrong-scheme"),
    pytest.param(f"Token {SECRET}", "read", Unauthenticated, id="other-scheme"),
    pytest.param("Bearer", "read", Unauthenticated, id="scheme-only"),
    pytest.param("Bearer   ", "read", Unauthenticated, id="blank-token"),
    pytest.param(SECRET, "read", Unauthenticated, id="no-scheme"),
    pytest.param("Bearer unknownToken1", "read", Unauthenticated, id="unknown-token"),
    pytest.param(f"Bearer {SECRET}x", "read", Unauthenticated, id="longer-token"),
    pytest.param(f"Bearer {SECRET[:-1]}", "read", Unauthenticated, id="prefix-of-token"),
    pytest.param(f"Bearer {SECRET} {OTHER}", "read", Unauthenticated, id="two-tokens"),
    pytest.param(f"Bearer {SECRET}", "write", Forbidden, id="read-token-asks-write"),
    pytest.param(f"Bearer {SECRET}", "read", sha6(SECRET), id="read-token-reads"),
    pytest.param(f"bearer  {SECRET} ", "read", sha6(SECRET), id="scheme-case-and-spaces"),
    pytest.param(f"Bearer {OTHER}", "write", sha6(OTHER), id="write-token-writes"),
    pytest.param(f"Bearer {OTHER}", "read", sha6(OTHER), id="write-token-reads"),
])
def test_static_authenticate(header, scope, outcome):
    tokens = StaticTokens.from_sources(STATIC, None)
    if isinstance(outcome, str):
        assert tokens.authenticate(header, scope) == Caller(outcome)
        return
    with pytest.raises(outcome) as caught:
        tokens.authenticate(header, scope)
    assert type(caught.value) is outcome
    assert SECRET not in str(caught.value) and OTHER not in str(caught.value)


def test_no_auth_lets_everyone_in():
    assert NoAuth().authenticate(None, "write") == Caller("anonymous")
    assert NoAuth().authenticate("Bearer whatever", "read") == Caller("anonymous")


# ====================================================================== KubeAuth
VIEWER, EDITOR = "predictive-autoscaler-viewer", "predictive-autoscaler-editor"
POLICY_GROUP = "autoscaling.predictive.dev"


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def cluster_role(server: KubeServer, name: str, rules: list[dict]) -> None:
    server.policy.add_document({"kind": "ClusterRole", "metadata": {"name": name},
                                "rules": rules})


def cluster_binding(server: KubeServer, role: str, subject: dict) -> None:
    server.policy.add_document({"kind": "ClusterRoleBinding", "metadata": {"name": role},
                                "roleRef": {"kind": "ClusterRole", "name": role},
                                "subjects": [subject]})


@pytest.fixture
def people(kube_server: KubeServer) -> KubeServer:
    """alice views, bob edits, dave edits through a group, the ServiceAccount team-a/tuner
    views through a ServiceAccount subject, erin is authenticated but bound to nothing."""
    server = kube_server
    server.add_token("alice-token", UserInfo("alice", ("system:authenticated",)))
    server.add_token("bob-token", UserInfo("bob", ("system:authenticated",)))
    server.add_token("dave-token", UserInfo("dave", ("policy-editors", "system:authenticated")))
    server.add_token("erin-token", UserInfo("erin", ("system:authenticated",)))
    server.add_token("tuner-sa-token", service_account_user("team-a", "tuner"))
    server.policy.bind("ClusterRole", VIEWER, user="alice")
    server.policy.bind("ClusterRole", EDITOR, user="bob")
    server.policy.bind("ClusterRole", EDITOR, group="policy-editors")
    cluster_binding(server, VIEWER, {"kind": "ServiceAccount", "name": "tuner",
                                     "namespace": "team-a"})
    return server


@pytest.mark.parametrize(("token", "scope", "outcome"), [
    pytest.param("alice-token", "read", "alice", id="viewer-reads"),
    pytest.param("alice-token", "write", Forbidden, id="viewer-cannot-write"),
    pytest.param("bob-token", "read", "bob", id="editor-reads"),
    pytest.param("bob-token", "write", "bob", id="editor-writes"),
    pytest.param("dave-token", "write", "dave", id="editor-by-group"),
    pytest.param("tuner-sa-token", "read", "system:serviceaccount:team-a:tuner",
                 id="serviceaccount-reads"),
    pytest.param("tuner-sa-token", "write", Forbidden, id="serviceaccount-cannot-write"),
    pytest.param("erin-token", "read", Forbidden, id="unbound-user"),
    pytest.param("unknown-token", "read", Unauthenticated, id="unknown-token"),
    pytest.param("unknown-token", "write", Unauthenticated, id="unknown-token-write"),
])
def test_kube_auth_roles(people, kube_client, token, scope, outcome):
    auth = KubeAuth(kube_client)
    if isinstance(outcome, str):
        assert auth.authenticate(f"Bearer {token}", scope) == Caller(outcome)
        return
    with pytest.raises(outcome) as caught:
        auth.authenticate(f"Bearer {token}", scope)
    assert type(caught.value) is outcome and token not in str(caught.value)


def test_kube_auth_serviceaccount_by_group(kube_server, kube_client):
    """A binding to the group of every ServiceAccount of a namespace covers its accounts."""
    kube_server.add_token("bot-token", service_account_user("team-b", "bot"))
    kube_server.policy.bind("ClusterRole", EDITOR, group="system:serviceaccounts:team-b")
    assert KubeAuth(kube_client).authenticate("Bearer bot-token", "write") == \
        Caller("system:serviceaccount:team-b:bot")


EXACT = {"apiGroups": [POLICY_GROUP], "resources": ["policies"]}


@pytest.mark.parametrize(("rule", "granted"), [
    pytest.param({**EXACT, "verbs": ["get"]}, {"read"}, id="get-is-read"),
    pytest.param({**EXACT, "verbs": ["update"]}, {"write"}, id="update-is-write"),
    pytest.param({**EXACT, "verbs": ["list", "watch", "create", "patch", "delete"]}, set(),
                 id="other-verbs"),
    pytest.param({"apiGroups": ["autoscaling"], "resources": ["policies"],
                  "verbs": ["get", "update"]}, set(), id="other-group"),
    pytest.param({"apiGroups": [""], "resources": ["policies"],
                  "verbs": ["get", "update"]}, set(), id="core-group"),
    pytest.param({"apiGroups": [POLICY_GROUP], "resources": ["targets", "policy"],
                  "verbs": ["get", "update"]}, set(), id="other-resource"),
    pytest.param({"apiGroups": [POLICY_GROUP], "resources": ["policies/status"],
                  "verbs": ["get", "update"]}, set(), id="subresource-only"),
    pytest.param({**EXACT, "verbs": ["get", "update"], "resourceNames": ["web"]}, set(),
                 id="named-policies-only"),
])
def test_kube_auth_asks_exactly_get_update_on_policies(kube_server, kube_client, rule, granted):
    """Only a rule on verb get/update, resource policies, group autoscaling.predictive.dev
    (no subresource, no name) lets a caller in: the review asks exactly that."""
    kube_server.add_token("carol-token", UserInfo("carol", ("system:authenticated",)))
    cluster_role(kube_server, "custom", [rule])
    kube_server.policy.bind("ClusterRole", "custom", user="carol")
    assert allowed_scopes(KubeAuth(kube_client), "carol-token") == granted


def test_kube_auth_caches_answers_for_the_ttl(people, kube_client):
    counts = people.api.review_counts
    clock = FakeClock()
    auth = KubeAuth(kube_client, cache_ttl_s=10.0, clock=clock)
    assert auth.authenticate("Bearer alice-token", "read") == Caller("alice")
    assert auth.authenticate("Bearer alice-token", "read") == Caller("alice")
    assert counts == {"TokenReview": 1, "SubjectAccessReview": 1}
    # Refusals are cached too, per scope.
    for _ in range(2):
        with pytest.raises(Forbidden):
            auth.authenticate("Bearer alice-token", "write")
    assert counts == {"TokenReview": 2, "SubjectAccessReview": 2}
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            auth.authenticate("Bearer nobody-token", "read")
    assert counts == {"TokenReview": 3, "SubjectAccessReview": 2}  # no SAR for a bad token
    # A malformed header never reaches the server.
    with pytest.raises(Unauthenticated):
        auth.authenticate("Basic alice-token", "read")
    assert counts == {"TokenReview": 3, "SubjectAccessReview": 2}
    clock.now_s += 9.999
    auth.authenticate("Bearer alice-token", "read")
    assert counts == {"TokenReview": 3, "SubjectAccessReview": 2}
    clock.now_s += 0.001  # exactly the TTL after the first answer: asked again
    auth.authenticate("Bearer alice-token", "read")
    assert counts == {"TokenReview": 4, "SubjectAccessReview": 3}


def test_kube_auth_revocation_takes_effect_after_the_ttl(people, kube_client):
    clock = FakeClock()
    auth = KubeAuth(kube_client, cache_ttl_s=10.0, clock=clock)
    assert auth.authenticate("Bearer bob-token", "write") == Caller("bob")
    del people.tokens["bob-token"]
    clock.now_s += 9.0
    assert auth.authenticate("Bearer bob-token", "write") == Caller("bob")
    clock.now_s += 1.0
    with pytest.raises(Unauthenticated):
        auth.authenticate("Bearer bob-token", "write")
    # A new binding is seen once the cached refusal expires.
    with pytest.raises(Forbidden):
        auth.authenticate("Bearer erin-token", "read")
    people.policy.bind("ClusterRole", VIEWER, user="erin")
    with pytest.raises(Forbidden):
        auth.authenticate("Bearer erin-token", "read")
    clock.now_s += 10.0
    assert auth.authenticate("Bearer erin-token", "read") == Caller("erin")


def test_kube_auth_cache_is_bounded(people, kube_client):
    counts = people.api.review_counts
    auth = KubeAuth(kube_client, cache_ttl_s=60.0, clock=FakeClock(), max_entries=2)
    for token in ("alice-token", "bob-token", "dave-token"):  # alice's entry is evicted
        auth.authenticate(f"Bearer {token}", "read")
    auth.authenticate("Bearer dave-token", "read")
    assert counts["TokenReview"] == 3
    auth.authenticate("Bearer alice-token", "read")
    assert counts["TokenReview"] == 4


def test_kube_auth_server_down_is_unavailable(people, kube_client):
    auth = KubeAuth(kube_client, clock=FakeClock())
    people.stop()
    for token in ("alice-token", "unknown-token"):
        with pytest.raises(AuthUnavailable) as caught:
            auth.authenticate(f"Bearer {token}", "read")
        assert not isinstance(caught.value, Unauthenticated | Forbidden)
        assert token not in str(caught.value)


def test_kube_auth_reviewer_without_rights_is_unavailable_and_not_cached(
        people, make_kube_client):
    """A reviewer the API server refuses (403 on TokenReview/SubjectAccessReview) is our
    misconfiguration: 503, not the caller's 401/403, and retried on the next request."""
    people.add_token("reviewer-token", UserInfo("reviewer", ("system:authenticated",)))
    auth = KubeAuth(make_kube_client("reviewer-token"), clock=FakeClock())
    with pytest.raises(AuthUnavailable, match="TokenReview failed: 403"):
        auth.authenticate("Bearer alice-token", "read")
    people.policy.allow([("reviewer", "create", "authentication.k8s.io", "tokenreviews")])
    with pytest.raises(AuthUnavailable, match="SubjectAccessReview failed: 403"):
        auth.authenticate("Bearer alice-token", "read")
    people.policy.allow([("reviewer", "create", "authorization.k8s.io",
                          "subjectaccessreviews")])
    assert auth.authenticate("Bearer alice-token", "read") == Caller("alice")


def test_review_server_rejects_what_a_real_server_rejects(kube_server, kube_client):
    """The test server's review handlers refuse malformed reviews as the real one does."""
    with pytest.raises(k8s.ApiException) as caught:
        k8s.AuthenticationV1Api(kube_client).create_token_review({"spec": {"token": ""}})
    assert caught.value.status == 400
    authz = k8s.AuthorizationV1Api(kube_client)
    attrs = {"group": POLICY_GROUP, "resource": "policies", "verb": "get"}
    for spec in ({"resourceAttributes": attrs},
                 {"user": "alice"},
                 {"user": "alice", "resourceAttributes": attrs,
                  "nonResourceAttributes": {"path": "/x", "verb": "get"}}):
        with pytest.raises(k8s.ApiException) as caught:
            authz.create_subject_access_review({"spec": spec})
        assert caught.value.status == 422, spec


# ====================================================================== authenticator_for
def test_standalone_without_tokens_refuses_to_start():
    with pytest.raises(ConfigError) as caught:
        authenticator_for(Settings(), standalone=True, api_client=None,
                          insecure_no_auth=False, environ=NO_ENV)
    assert str(caught.value) == ("no API token configured: set AUTOSCALER_API_TOKENS or "
                                 "api_tokens_file, or pass --insecure-no-auth")


def test_standalone_insecure_is_no_auth(caplog):
    with caplog.at_level(logging.WARNING, logger="autoscaler.auth"):
        auth = authenticator_for(Settings(), standalone=True, api_client=None,
                                 insecure_no_auth=True, environ=NO_ENV)
    assert isinstance(auth, NoAuth)
    assert any("insecure-no-auth" in r.getMessage() for r in caplog.records)


def test_standalone_tokens_from_env_and_settings_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"{OTHER}:write\n")
    auth = authenticator_for(Settings(api_tokens_file=path), standalone=True, api_client=None,
                             insecure_no_auth=False,
                             environ={"AUTOSCALER_API_TOKENS": f"{SECRET}:read"})
    assert isinstance(auth, StaticTokens)
    assert allowed_scopes(auth, SECRET) == {"read"}
    assert allowed_scopes(auth, OTHER) == {"read", "write"}


def test_in_cluster_is_kube_auth(people, kube_client):
    auth = authenticator_for(Settings(), standalone=False, api_client=kube_client,
                             insecure_no_auth=False,
                             environ={"AUTOSCALER_API_TOKENS": f"{SECRET}:write"})
    assert isinstance(auth, KubeAuth)
    assert auth.authenticate("Bearer bob-token", "write") == Caller("bob")
    with pytest.raises(Unauthenticated):  # static tokens mean nothing in-cluster
        auth.authenticate(f"Bearer {SECRET}", "read")


def test_kube_auth_is_safe_across_threads(people, kube_client):
    """The API serves requests on a thread pool: one KubeAuth answers them all correctly."""
    auth = KubeAuth(kube_client, clock=FakeClock())
    asks = [("alice-token", "read"), ("bob-token", "write"), ("alice-token", "write")] * 20

    def outcome(ask: tuple[str, str]) -> str:
        try:
            return auth.authenticate(f"Bearer {ask[0]}", ask[1]).name  # type: ignore[arg-type]
        except Forbidden:
            return "forbidden"

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(outcome, asks))
    assert got == ["alice", "bob", "forbidden"] * 20
