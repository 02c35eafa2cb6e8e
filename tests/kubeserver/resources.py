"""The resource types the test API server knows: one table, nothing else is served.

Pure data.  Each entry says how a type is addressed (group, version, plural), whether it is
namespaced, which subresources it has, and how it behaves where real types differ (a delete
that returns the object, an update that must carry a resourceVersion, no strategic merge).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    custom: bool = False  # a CRD: merge/JSON patch only, update needs a resourceVersion
    stored: bool = True  # False for review APIs: create answers, nothing is kept
    delete_returns_object: bool = False  # pods and custom objects answer a delete with the object

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def has_status_subresource(self) -> bool:
        """With a status subresource, writes to the main resource leave status unchanged."""
        return "status" in self.subresources


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("apps", "v1", "deployments", "Deployment", subresources=("scale", "status")),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", subresources=("scale", "status")),
    ResourceType(
        "autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
        subresources=("status",),
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("", "v1", "pods", "Pod", subresources=("status",), delete_returns_object=True),
    ResourceType("", "v1", "events", "Event"),
    ResourceType("", "v1", "configmaps", "ConfigMap"),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType(
        "keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", subresources=("status",),
        custom=True, delete_returns_object=True,
    ),
    ResourceType(
        "authentication.k8s.io", "v1", "tokenreviews", "TokenReview", namespaced=False,
        stored=False,
    ),
    ResourceType(
        "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview",
        namespaced=False, stored=False,
    ),
)

BY_PATH = {(t.group, t.version, t.plural): t for t in RESOURCE_TYPES}
BY_KEY = {t.key: t for t in RESOURCE_TYPES}
BY_KIND = {t.kind: t for t in RESOURCE_TYPES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return BY_PATH.get((group, version, plural))
