"""Node pre-warming: placeholder ("balloon") pods sized like an inference pod. Not pure (API).

Ahead of a predicted scale-up, `Prewarmer.reconcile` keeps `balloons_needed(...)` placeholder
pods per target: each has the inference pod's resource requests, node selector, tolerations
and affinity (so the cluster autoscaler adds the same kind of GPU node), runs the pause image,
and carries a low PriorityClass, so a real pod preempts it the moment it needs the room.  As
real pods are created the need shrinks and surplus placeholders are deleted (pending ones
first: they hold no node yet).  The PriorityClass (negative value, preemptionPolicy Never) is
the cluster admin's to create; its name is a setting.

RBAC: pods create/delete/list and deployments/statefulsets get, as manifests/base/rbac.yaml
grants.  Deletes carry the pod's uid as a precondition; a pod already gone is not an error.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import kubernetes.client as k8s
import urllib3.exceptions

from autoscaler.kube_actuator import ActuatorTarget, call_api, translate_error

PLACEHOLDER_LABEL = "autoscaling.predictive.dev/placeholder-for"
PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
# copied from the inference pod so the placeholder needs the same kind of node
_PLACEMENT_FIELDS = ("nodeSelector", "tolerations", "affinity", "runtimeClassName")


def balloons_needed(predicted_replicas: int, current_replicas: int, max_balloons: int) -> int:
    """Placeholders to hold for a target: the predicted pods not yet created, capped. Pure."""
    return max(0, min(predicted_replicas - current_replicas, max_balloons))


def live_pods(pods: Iterable[Any]) -> int:
    """The pods that exist for a workload (official-client objects): not being deleted and
    not finished. A pod counts from its creation, scheduled or not: from then on it claims
    (or waits for) the node its placeholder was holding. Pure."""
    return sum(1 for p in pods
               if p.metadata.deletion_timestamp is None
               and (p.status is None or p.status.phase not in ("Succeeded", "Failed")))


def placeholder_pod(target: ActuatorTarget, template: dict[str, Any],
                    priority_class: str) -> dict[str, Any]:
    """A placeholder pod for `target` from its pod template (JSON, camelCase). Pure."""
    spec = template.get("spec") or {}
    containers = [
        {"name": f"hold-{i}", "image": PAUSE_IMAGE,
         "resources": copy.deepcopy({k: v for k, v in (c.get("resources") or {}).items()
                                     if k in ("requests", "limits")})}
        for i, c in enumerate(spec.get("containers") or ())
    ]
    pod_spec: dict[str, Any] = {"containers": containers, "priorityClassName": priority_class,
                                "terminationGracePeriodSeconds": 0,
                                "automountServiceAccountToken": False}
    for name in _PLACEMENT_FIELDS:
        if spec.get(name) is not None:
            pod_spec[name] = copy.deepcopy(spec[name])
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": f"{target.name}-placeholder-", "namespace": target.namespace,
                     "labels": {PLACEHOLDER_LABEL: target.name}},
        "spec": pod_spec,
    }


@dataclass(frozen=True)
class PrewarmAction:
    """What a reconcile did (or would do, in dry run).

    wanted: placeholders wanted; existing: found before acting;
    created, deleted: pod names (deleted) and how many were created.
    """

    target: ActuatorTarget
    wanted: int
    existing: int
    created: int
    deleted: tuple[str, ...]
    dry_run: bool


class Prewarmer:
    """Keeps each target's placeholder pods at the wanted count.

    priority_class: the low PriorityClass of placeholders (must exist in the cluster).
    dry_run: global dry run (OR-ed with each target's).
    """

    def __init__(self, api_client: k8s.ApiClient, *, priority_class: str,
                 dry_run: bool = False) -> None:
        self._client = api_client
        self._core = k8s.CoreV1Api(api_client)
        self._apps = k8s.AppsV1Api(api_client)
        self.priority_class = priority_class
        self.dry_run = dry_run

    def reconcile(self, target: ActuatorTarget, wanted: int, *,
                  priority_class: str | None = None) -> PrewarmAction:
        """Create or delete placeholders so that `wanted` live ones exist for `target`
        (priority_class: this target's, else the Prewarmer's)."""
        dry = self.dry_run or target.dry_run
        where = f"{target.namespace}/{target.name}"
        listed = call_api(f"list placeholders of {where}", lambda: self._core.list_namespaced_pod(
            target.namespace, label_selector=f"{PLACEHOLDER_LABEL}={target.name}")).items
        live = [p for p in listed if p.metadata.deletion_timestamp is None]
        # surplus: pending (unscheduled) first, then the newest
        live.sort(key=lambda p: (p.spec.node_name is not None,
                                 -p.metadata.creation_timestamp.timestamp(), p.metadata.name))
        surplus = live[:max(0, len(live) - wanted)]
        missing = max(0, wanted - len(live))
        if not dry:
            if missing:
                body: Any = placeholder_pod(target, self._template(target),
                                            priority_class or self.priority_class)
                for _ in range(missing):
                    call_api(f"create placeholder for {where}",
                          lambda: self._core.create_namespaced_pod(target.namespace, body))
            for pod in surplus:
                self._delete(pod)
        return PrewarmAction(target, wanted, len(live), missing,
                             tuple(p.metadata.name for p in surplus), dry)

    def _template(self, target: ActuatorTarget) -> dict[str, Any]:
        read = (self._apps.read_namespaced_deployment if target.kind == "Deployment"
                else self._apps.read_namespaced_stateful_set)
        workload = call_api(f"read {target.kind} {target.namespace}/{target.name}",
                         lambda: read(target.name, target.namespace))
        return self._client.sanitize_for_serialization(workload.spec.template)

    def _delete(self, pod: Any) -> None:
        options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=pod.metadata.uid),
                                      grace_period_seconds=0)
        try:
            self._core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                             body=options)
        except k8s.ApiException as error:
            if error.status != 404:  # already gone (preempted): what we wanted
                raise translate_error(f"delete placeholder {pod.metadata.name}", error) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise translate_error(f"delete placeholder {pod.metadata.name}", error) from error
