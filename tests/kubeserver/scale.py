"""The `scale` subresource: an autoscaling/v1 Scale view of a Deployment or StatefulSet.

Pure.  The Scale mirrors the parent: name, namespace, uid, creationTimestamp and
resourceVersion from its metadata, `spec.replicas` from its spec, `status.replicas` from its
status and `status.selector` as the label-selector string of `spec.selector` (what the HPA
reads).  Writing a Scale writes only the parent's `spec.replicas`, under the Scale's
resourceVersion, so a stale Scale conflicts like a stale parent.
"""

from __future__ import annotations

from .resources import ResourceType
from .selectors import selector_string

SCALE_TYPE = ResourceType("autoscaling", "v1", "scale", "Scale", stored=False)


def to_scale(parent: dict) -> dict:
    meta = parent["metadata"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {k: meta[k] for k in
                     ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": (parent.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (parent.get("status") or {}).get("replicas", 0),
            "selector": selector_string((parent.get("spec") or {}).get("selector")),
        },
    }


def apply_scale(parent: dict, scale: dict) -> dict:
    """The parent with the Scale's spec.replicas and the Scale's resourceVersion (if any)."""
    out = dict(parent)
    out["spec"] = dict(parent.get("spec") or {})
    out["spec"]["replicas"] = (scale.get("spec") or {}).get("replicas", 0)
    out["metadata"] = dict(parent["metadata"])
    sent_rv = (scale.get("metadata") or {}).get("resourceVersion")
    if sent_rv:
        out["metadata"]["resourceVersion"] = sent_rv
    else:
        out["metadata"].pop("resourceVersion", None)
    return out
