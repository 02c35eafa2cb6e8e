"""Test-setup helpers: build valid objects and put them straight into the store.

Builders are pure (they return dicts); `seed*` functions write to a `Store` directly,
bypassing HTTP and RBAC but not validation, keeping the given creationTimestamp, so a test
can lay out history (pods created, scheduled and ready at known times) that the controller
then reads through the official client.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from .resources import BY_KIND
from .storage import Store, rfc3339

DEFAULT_IMAGE = "vllm/vllm-openai:v0.6.0"


def seed(store: Store, obj: dict) -> dict:
    """Store any served kind as given (uid and creationTimestamp kept when present)."""
    return store.create(BY_KIND[obj["kind"]], obj, seed=True)


def pod_template(labels: dict[str, str], image: str = DEFAULT_IMAGE,
                 requests: dict[str, str] | None = None) -> dict:
    container: dict = {"name": "server", "image": image}
    if requests:
        container["resources"] = {"requests": dict(requests), "limits": dict(requests)}
    return {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}}


def deployment(name: str, namespace: str, replicas: int, *, image: str = DEFAULT_IMAGE,
               requests: dict[str, str] | None = None, kind: str = "Deployment") -> dict:
    """A Deployment (or StatefulSet with kind="StatefulSet") selecting `app: <name>`."""
    labels = {"app": name}
    spec = {"replicas": replicas, "selector": {"matchLabels": labels},
            "template": pod_template(labels, image, requests)}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}


def hpa(name: str, namespace: str, target: str, min_replicas: int, max_replicas: int, *,
        target_kind: str = "Deployment", cpu_utilization_pct: int = 70) -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": target_kind, "name": target},
            "minReplicas": min_replicas, "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": cpu_utilization_pct}}}],
        },
    }


def scaled_object(name: str, namespace: str, target: str, min_count: int, max_count: int, *,
                  query: str = "sum(rate(http_requests_total[1m]))",
                  prometheus_url: str = "http://prometheus:9090") -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"name": target},
            "minReplicaCount": min_count, "maxReplicaCount": max_count,
            "triggers": [{"type": "prometheus", "metadata": {
                "serverAddress": prometheus_url, "query": query, "threshold": "10"}}],
        },
    }


def pod(name: str, namespace: str, labels: dict[str, str], created_at: datetime, *,
        scheduled_after_s: float | None, ready_after_s: float | None,
        owner: dict | None = None, image: str = DEFAULT_IMAGE) -> dict:
    """A pod whose PodScheduled / Ready conditions turned True at the given offsets
    (None: not yet, the condition is False and the pod Pending)."""
    def at(offset_s: float) -> str:
        return rfc3339(created_at + timedelta(seconds=offset_s))

    conditions = []
    if scheduled_after_s is not None:
        conditions.append({"type": "PodScheduled", "status": "True",
                           "lastTransitionTime": at(scheduled_after_s)})
    else:
        conditions.append({"type": "PodScheduled", "status": "False",
                           "lastTransitionTime": at(0), "reason": "Unschedulable"})
    if ready_after_s is not None:
        for kind in ("Initialized", "ContainersReady", "Ready"):
            conditions.append({"type": kind, "status": "True",
                               "lastTransitionTime": at(ready_after_s)})
    elif scheduled_after_s is not None:
        conditions.append({"type": "Ready", "status": "False",
                           "lastTransitionTime": at(scheduled_after_s),
                           "reason": "ContainersNotReady"})
    running = ready_after_s is not None
    metadata: dict = {"name": name, "namespace": namespace, "labels": dict(labels),
                      "creationTimestamp": rfc3339(created_at)}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"containers": [{"name": "server", "image": image}]},
        "status": {"phase": "Running" if running else "Pending", "conditions": conditions},
    }


def _per_pod(value: float | None | Sequence[float | None], count: int) -> list[float | None]:
    if value is None or isinstance(value, int | float):
        return [value] * count
    if len(value) != count:
        raise ValueError(f"need one value per pod ({count}), got {len(value)}")
    return list(value)


def seed_deployment_with_pods(
    store: Store, name: str, namespace: str, replicas: int, *, created_at: datetime,
    scheduled_after_s: float | None | Sequence[float | None] = 5.0,
    ready_after_s: float | None | Sequence[float | None] = 60.0,
    spacing_s: float = 0.0, kind: str = "Deployment",
) -> tuple[dict, list[dict]]:
    """A Deployment (or StatefulSet) with `replicas` pods, pod i created at
    `created_at + i * spacing_s`, its status counting the pods that are Ready."""
    workload = deployment(name, namespace, replicas, kind=kind)
    workload["metadata"]["creationTimestamp"] = rfc3339(created_at)
    scheduled = _per_pod(scheduled_after_s, replicas)
    ready = _per_pod(ready_after_s, replicas)
    ready_count = sum(r is not None for r in ready)
    workload["status"] = {"observedGeneration": 1, "replicas": replicas,
                          "readyReplicas": ready_count, "availableReplicas": ready_count,
                          "updatedReplicas": replicas}
    stored = seed(store, workload)
    owner_name = f"{name}-7d4b9c" if kind == "Deployment" else name
    owner_uid = stored["metadata"]["uid"]
    if kind == "Deployment":  # pods belong to the Deployment's ReplicaSet (not served here)
        owner_uid = str(uuid.uuid5(uuid.NAMESPACE_OID, owner_uid))
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet" if kind == "Deployment" else kind,
             "name": owner_name, "uid": owner_uid, "controller": True}
    pods = [
        seed(store, pod(f"{owner_name}-{i:05d}" if kind == "Deployment" else f"{name}-{i}",
                        namespace, {"app": name}, created_at + timedelta(seconds=i * spacing_s),
                        scheduled_after_s=scheduled[i], ready_after_s=ready[i], owner=owner))
        for i in range(replicas)
    ]
    return stored, pods
