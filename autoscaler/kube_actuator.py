"""Acting on Kubernetes beside the HPA: the three ways, chosen per target. Not pure (API calls).

- floor (default): the target's HPA gets spec.minReplicas = the predictive floor (a KEDA
  ScaledObject gets spec.minReplicaCount instead: KEDA owns its HPA and would undo ours).  The
  user's own minimum is written once into the annotation USER_MIN_ANNOTATION when we first
  raise it, and put back (annotation removed) when the need falls to it or on `restore`.  The
  floor never exceeds the scaler's maximum and never goes below the user's minimum; raising
  minReplicas never lowers what the HPA itself wants, so the floor is only ever a floor.
- direct: the workload's `scale` subresource gets the decision's count, only when no HPA or
  ScaledObject scales it (two writers of one count would fight: refused with ConfigError).
- metric: nothing is written here (the forecast is exported as a metric elsewhere).
`dry_run` (per target or for the whole actuator) computes the same patch and writes nothing,
not even an Event.

Every write is a JSON merge patch carrying the resourceVersion it was computed from, so it
cannot clobber a concurrent writer: a 409 Conflict re-reads and re-applies, up to
`ConflictRetry.attempts` times with its backoff schedule (the injected `sleep` waits; the
delays taken are returned in the Action), then raises WriteConflict.  Each write emits a core/v1
Event on the object written.  ApiException and transport errors become autoscaler.errors here.
RBAC: only the verbs manifests/base/rbac.yaml grants (get/list/patch of HPAs, ScaledObjects and
scale subresources; create of events).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kubernetes.client as k8s
import urllib3.exceptions

from autoscaler.errors import (
    ActuationError,
    ConfigError,
    KubernetesUnavailable,
    WriteConflict,
)
from policies.types import Decision

log = logging.getLogger(__name__)

USER_MIN_ANNOTATION = "autoscaling.predictive.dev/user-min-replicas"
MODES = ("floor", "direct", "metric")
MERGE_PATCH = "application/merge-patch+json"
KEDA = ("keda.sh", "v1alpha1", "scaledobjects")
KEDA_DEFAULT_MIN = 0  # KEDA's defaults when the ScaledObject leaves them out
KEDA_DEFAULT_MAX = 100
EVENT_REASON_MAX = 128  # the API server's limit on Event.reason


@dataclass(frozen=True)
class ActuatorTarget:
    """One workload to act on.

    namespace, name: the Deployment or StatefulSet.
    kind: "Deployment" or "StatefulSet".
    mode: "floor" (default), "direct" or "metric".
    dry_run: compute and report, write nothing.
    """

    namespace: str
    name: str
    kind: str = "Deployment"
    mode: str = "floor"
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"{self.namespace}/{self.name}: mode {self.mode!r} is not one of "
                              f"{', '.join(MODES)}")
        if self.kind not in ("Deployment", "StatefulSet"):
            raise ConfigError(f"{self.namespace}/{self.name}: kind {self.kind!r} is not "
                              "Deployment or StatefulSet")


@dataclass(frozen=True)
class ConflictRetry:
    """How 409 Conflicts are retried.

    attempts: writes tried in all (>= 1) before WriteConflict is raised.
    backoff_s: delay before retry i (the last one repeats), seconds.
    """

    attempts: int = 4
    backoff_s: tuple[float, ...] = (0.05, 0.2, 0.8)

    def delay_s(self, retry: int) -> float:
        return self.backoff_s[min(retry, len(self.backoff_s) - 1)] if self.backoff_s else 0.0


@dataclass(frozen=True)
class Action:
    """What was written (or would have been, in dry run), for the decision log.

    object_kind/object_name: what was (to be) patched: HorizontalPodAutoscaler, ScaledObject,
        Deployment or StatefulSet ("" in metric mode).
    field_path: the field set ("spec.minReplicas", "spec.minReplicaCount", "spec.replicas").
    before, after: its value read and its value written (equal when nothing changed).
    user_min: the user's own minimum (floor mode).
    patch: the merge patch sent or that would be sent (None when nothing to write).
    written: True when the API server accepted a write.
    retries_s: the backoff delays taken after conflicts.
    event: the name of the Event emitted (None when none was).
    """

    target: ActuatorTarget
    mode: str
    dry_run: bool
    reason: str
    object_kind: str = ""
    object_name: str = ""
    field_path: str = ""
    before: int | None = None
    after: int | None = None
    user_min: int | None = None
    patch: dict[str, Any] | None = None
    written: bool = False
    retries_s: tuple[float, ...] = ()
    event: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FloorChange:
    """The pure floor rule's answer: the new minimum and the annotation to leave.

    annotation: the value to store, or None to remove it (the user's minimum is back).
    """

    user_min: int
    new_min: int
    annotation: str | None


def floor_change(spec_min: int, annotation: str | None, max_replicas: int,
                 need: int) -> FloorChange:
    """The floor to write for a predicted `need`, without depending on the API. Pure.

    The user's minimum is the annotation when we raised the floor before, else the current
    minimum.  The new minimum is the need, but never below the user's nor above the maximum.
    """
    if annotation is None:
        user_min = spec_min
    else:
        try:
            user_min = int(annotation)
        except ValueError:
            raise ConfigError(f"annotation {USER_MIN_ANNOTATION}={annotation!r} is not an "
                              "integer: set it to the minimum you want restored") from None
    new_min = min(max(need, user_min), max_replicas)
    if new_min <= user_min:
        return FloorChange(user_min, user_min, None)
    return FloorChange(user_min, new_min, str(user_min))


# ------------------------------------------------------------------ boundary: errors
def translate_error(what: str, error: Exception) -> Exception:
    """An ApiException or transport error as one of autoscaler.errors (409 -> WriteConflict,
    429/5xx/unreachable -> KubernetesUnavailable, the rest -> permanent ActuationError)."""
    if isinstance(error, k8s.ApiException):
        reason, message = "", error.reason or ""
        try:
            body = json.loads(error.body or "{}")
            reason, message = body.get("reason", ""), body.get("message", message)
        except (TypeError, ValueError):
            pass
        text = f"{what}: {error.status} {reason or error.reason}: {message}"
        if error.status == 409 and reason != "AlreadyExists":
            return WriteConflict(text)
        if error.status == 429 or (error.status or 0) >= 500:
            retry_after = (error.headers or {}).get("Retry-After")
            return KubernetesUnavailable(
                text, retry_after_s=float(retry_after) if retry_after else None)
        return ActuationError(text)
    return KubernetesUnavailable(f"{what}: {error}")


def call_api(what: str, call: Callable[[], Any]) -> Any:
    """Run one API call, translating its failures (`what` names it in the message)."""
    try:
        return call()
    except (k8s.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
        raise translate_error(what, error) from error


# ------------------------------------------------------------------ scalers
@dataclass(frozen=True)
class _Scaler:
    kind: str  # HorizontalPodAutoscaler or ScaledObject
    name: str
    obj: dict[str, Any]

    @property
    def min_field(self) -> str:
        return "minReplicaCount" if self.kind == "ScaledObject" else "minReplicas"

    def spec_min(self) -> int:
        default = KEDA_DEFAULT_MIN if self.kind == "ScaledObject" else 1
        return int(self.obj["spec"].get(self.min_field, default))

    def spec_max(self) -> int:
        if self.kind == "ScaledObject":
            return int(self.obj["spec"].get("maxReplicaCount", KEDA_DEFAULT_MAX))
        return int(self.obj["spec"]["maxReplicas"])


def _targets(ref: dict[str, Any], target: ActuatorTarget) -> bool:
    return ref.get("name") == target.name and ref.get("kind", "Deployment") == target.kind


class KubeActuator:
    """Applies decisions to Kubernetes through the official client (see the module docstring).

    api_client: an authenticated `kubernetes.client.ApiClient`.
    dry_run: global dry run (OR-ed with each target's).
    retry: the conflict retry schedule.
    sleep: waits between conflict retries (tests pass a recorder; the service `time.sleep`).
    component: Event source / reporting component.
    """

    def __init__(self, api_client: k8s.ApiClient, *, dry_run: bool = False,
                 retry: ConflictRetry = ConflictRetry(),
                 sleep: Callable[[float], None] = time.sleep,
                 component: str = "predictive-autoscaler") -> None:
        self._client = api_client
        self._autoscaling = k8s.AutoscalingV2Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self.dry_run = dry_run
        self.retry = retry
        self._sleep = sleep
        self.component = component

    # -------------------------------------------------------------- public
    def apply(self, target: ActuatorTarget, decision: Decision, now: datetime) -> Action:
        """Act on `decision` for `target` in its mode; returns what was (to be) written."""
        dry = self.dry_run or target.dry_run
        if target.mode == "metric":
            return Action(target, "metric", dry, decision.reason,
                          details={"note": "metric mode: nothing written to Kubernetes"})
        if target.mode == "direct":
            need = max(decision.replicas, decision.floor or 0)
            return self._retrying(lambda: self._direct_once(target, need, decision.reason, dry),
                                  target, decision.reason, now)
        need = decision.floor if decision.floor is not None else decision.replicas
        return self._retrying(lambda: self._floor_once(target, need, decision.reason, dry),
                              target, decision.reason, now)

    def restore(self, target: ActuatorTarget, now: datetime,
                reason: str = "target-removed") -> Action:
        """Give the scaler back the user's own minimum (the target leaves our control)."""
        dry = self.dry_run or target.dry_run
        if target.mode != "floor":
            return Action(target, target.mode, dry, reason,
                          details={"note": f"{target.mode} mode: nothing to restore"})
        # need 0: the rule falls back to the user's minimum and removes the annotation
        return self._retrying(lambda: self._floor_once(target, 0, reason, dry),
                              target, reason, now)

    def find_scaler(self, target: ActuatorTarget) -> _Scaler | None:
        """The ScaledObject or HPA scaling `target` (a ScaledObject wins: KEDA owns its HPA)."""
        where = f"{target.namespace}/{target.name}"
        listed: Any  # the custom-objects API answers plain JSON
        try:
            listed = self._custom.list_namespaced_custom_object(*KEDA[:2], target.namespace,
                                                                KEDA[2])
        except k8s.ApiException as error:
            if error.status != 404:  # 404: KEDA is not installed in this cluster
                raise translate_error(f"list ScaledObjects for {where}", error) from error
            listed = {"items": []}
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise translate_error(f"list ScaledObjects for {where}", error) from error
        for obj in listed.get("items", []):
            if _targets(obj["spec"].get("scaleTargetRef") or {}, target):
                return _Scaler("ScaledObject", obj["metadata"]["name"], obj)
        hpas = call_api(f"list HPAs for {where}", lambda: self._autoscaling
                     .list_namespaced_horizontal_pod_autoscaler(target.namespace))
        for hpa in hpas.items:
            obj = self._client.sanitize_for_serialization(hpa)
            if _targets(obj["spec"]["scaleTargetRef"], target):
                return _Scaler("HorizontalPodAutoscaler", obj["metadata"]["name"], obj)
        return None

    # -------------------------------------------------------------- one attempt each
    def _floor_once(self, target: ActuatorTarget, need: int, reason: str,
                    dry: bool) -> tuple[Action, dict[str, Any] | None]:
        scaler = self.find_scaler(target)
        if scaler is None:
            raise ConfigError(f"{target.namespace}/{target.name}: mode floor needs an HPA or "
                              "a KEDA ScaledObject scaling it, found none (use mode direct)")
        meta = scaler.obj["metadata"]
        annotation = (meta.get("annotations") or {}).get(USER_MIN_ANNOTATION)
        before = scaler.spec_min()
        change = floor_change(before, annotation, scaler.spec_max(), need)
        patch: dict[str, Any] = {"metadata": {"resourceVersion": meta["resourceVersion"]}}
        if change.annotation != annotation:
            patch["metadata"]["annotations"] = {USER_MIN_ANNOTATION: change.annotation}
        if change.new_min != before:
            patch["spec"] = {scaler.min_field: change.new_min}
        action = Action(target, "floor", dry, reason, scaler.kind, scaler.name,
                        f"spec.{scaler.min_field}", before, change.new_min, change.user_min,
                        details={"need": need, "max": scaler.spec_max(),
                                 "scaler_desired": (scaler.obj.get("status") or {}).get(
                                     "desiredReplicas")})
        if len(patch) == 1 and "annotations" not in patch["metadata"]:
            return action, None  # already as wanted
        action = _with(action, patch=patch)
        if not dry:
            self._patch_scaler(target, scaler, patch)
        api_version = "keda.sh/v1alpha1" if scaler.kind == "ScaledObject" else "autoscaling/v2"
        return action, {"apiVersion": api_version, "metadata": meta}

    def _direct_once(self, target: ActuatorTarget, need: int, reason: str,
                     dry: bool) -> tuple[Action, dict[str, Any] | None]:
        scaler = self.find_scaler(target)
        if scaler is not None:
            raise ConfigError(f"{target.namespace}/{target.name}: mode direct refused, "
                              f"{scaler.kind} {scaler.name} scales it (use mode floor)")
        where = f"{target.kind} {target.namespace}/{target.name}"
        read, patch_scale = (
            (self._apps.read_namespaced_deployment_scale,
             self._apps.patch_namespaced_deployment_scale) if target.kind == "Deployment" else
            (self._apps.read_namespaced_stateful_set_scale,
             self._apps.patch_namespaced_stateful_set_scale))
        scale = call_api(f"read scale of {where}", lambda: read(target.name, target.namespace))
        before = int(scale.spec.replicas or 0)
        action = Action(target, "direct", dry, reason, target.kind, target.name, "spec.replicas",
                        before, need, details={"need": need})
        if need == before:
            return action, None
        patch = {"metadata": {"resourceVersion": scale.metadata.resource_version},
                 "spec": {"replicas": need}}
        action = _with(action, patch=patch)
        if not dry:
            call_api(f"patch scale of {where}", lambda: patch_scale(
                target.name, target.namespace, patch, _content_type=MERGE_PATCH))
        involved = {"apiVersion": "apps/v1", "kind": target.kind,
                    "metadata": {"name": target.name, "namespace": target.namespace,
                                 "uid": scale.metadata.uid}}
        return action, involved

    # -------------------------------------------------------------- plumbing
    def _patch_scaler(self, target: ActuatorTarget, scaler: _Scaler,
                      patch: dict[str, Any]) -> None:
        what = f"patch {scaler.kind} {target.namespace}/{scaler.name}"
        if scaler.kind == "ScaledObject":
            call_api(what, lambda: self._custom.patch_namespaced_custom_object(
                *KEDA[:2], target.namespace, KEDA[2], scaler.name, patch,
                _content_type=MERGE_PATCH))
        else:
            call_api(what, lambda: self._autoscaling.patch_namespaced_horizontal_pod_autoscaler(
                scaler.name, target.namespace, patch, _content_type=MERGE_PATCH))

    def _retrying(self, attempt: Callable[[], tuple[Action, dict[str, Any] | None]],
                  target: ActuatorTarget, reason: str, now: datetime) -> Action:
        slept: list[float] = []
        for tried in range(1, self.retry.attempts + 1):
            try:
                action, involved = attempt()
                break
            except WriteConflict as conflict:
                if tried == self.retry.attempts:
                    raise WriteConflict(
                        f"{target.namespace}/{target.name}: still conflicting after {tried} "
                        f"attempts: {conflict}", retry_after_s=self.retry.delay_s(tried)
                    ) from conflict
                slept.append(self.retry.delay_s(tried - 1))
                log.info("conflict on %s/%s, retrying in %.2fs", target.namespace,
                         target.name, slept[-1])
                self._sleep(slept[-1])
        action = _with(action, retries_s=tuple(slept))
        if action.patch is None or action.dry_run or involved is None:
            return action
        return _with(action, written=True, event=self._emit(action, involved, reason, now))

    def _emit(self, action: Action, involved: dict[str, Any], reason: str,
              now: datetime) -> str | None:
        """A Normal Event on the written object; a failed Event is logged, never fatal (the
        write it reports already happened)."""
        meta = involved["metadata"]
        floor = f"{action.field_path}={action.after}"
        if action.user_min is not None:
            floor += f" (was {action.before}, user minimum {action.user_min})"
        body = event_body(
            {"apiVersion": involved["apiVersion"], "kind": action.object_kind,
             "name": meta["name"], "namespace": action.target.namespace,
             "uid": meta.get("uid")},
            reason, f"predictive {action.mode}: set {floor}; reason: {reason}",
            component=self.component, now=now)
        try:
            event = call_api(f"create Event for {meta['name']}", lambda: self._core
                          .create_namespaced_event(action.target.namespace, body))
        except ActuationError as error:
            log.warning("event not emitted: %s", error)
            return None
        return event.metadata.name


def event_body(involved: dict[str, Any], reason: str, message: str, *, component: str,
               now: datetime, event_type: str = "Normal") -> dict[str, Any]:
    """A core/v1 Event on `involved` (apiVersion, kind, name, namespace and, when known,
    uid), as every Event of the controller is written (plain JSON: the client sends dicts
    as they are). Pure."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.",
                     "namespace": involved["namespace"]},
        "involvedObject": involved, "reason": reason[:EVENT_REASON_MAX], "type": event_type,
        "message": message, "source": {"component": component},
        "reportingComponent": component, "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": 1,
    }


def _with(action: Action, **changes: Any) -> Action:
    return replace(action, **changes)
