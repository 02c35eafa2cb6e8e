"""Targets discovered by an annotation on Deployments and StatefulSets. Not pure (lists
workloads, emits Events, drives the Controller).

Rules:
- One scan is one cluster-wide LIST of deployments and one of statefulsets (the RBAC grants
  apps deployments/statefulsets get/list/watch cluster-wide; nothing more is needed). A
  workload whose `discovery.annotation` (default autoscaling.predictive.dev/enabled) is
  "true" opts in.
- A discovered target starts from `discovery.defaults` (TargetSettings' fields); the
  workload's own annotations override them (`ANNOTATION_FIELDS`: preset, mode, hpa,
  keda-scaled-object, profile, dry-run, request-rate-query, and policy, a JSON object of
  policy fields laid over the defaults' policy). The result is validated exactly as a
  configured target (TargetSettings) and converted exactly as one (Settings.target_config).
  An unknown autoscaling.predictive.dev/* annotation is an error too (a typo must not be
  silently ignored).
- An invalid workload is skipped: logged once per change of its problem with the workload
  and the field, counted in errors{stage="discovery"}, and reported by a Warning Event
  (reason InvalidAutoscalingAnnotation) on the workload, by the leader only. A target that
  already runs and then gets an invalid annotation keeps its last valid config (failure
  keeps what runs; removing it would drop its floor): fix the annotation, or set the opt-in
  annotation to anything but "true" to remove it.
- `reconcile` adds new targets, removes vanished or opted-out ones (Controller.remove_target
  gives the HPA back its user's minimum when leading; a failed hand-back is retried on later
  reconciles), and updates changed ones. With a PolicySync, a discovered config is the
  target's baseline and the stored policy (API) still applies on top of it; a removed target
  leaves no state there, its stored policy stays in the store.
- Targets named in the config always win: discovery never adds, changes or removes them.
- A failed LIST raises (nothing is added or removed on a partial view); the caller logs and
  counts it and tries again at the next interval.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from autoscaler.errors import AutoscalerError
from autoscaler.kube_actuator import (
    USER_MIN_ANNOTATION,
    ActuatorTarget,
    call_api,
    event_body,
)
from autoscaler.loop import Controller
from autoscaler.settings import Settings, TargetConfig, TargetSettings
from autoscaler.target_state import TargetKey, key_of

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = "autoscaling.predictive.dev/"
# annotation suffix -> the TargetSettings field it sets (dotted: nested)
ANNOTATION_FIELDS = {
    "preset": "preset",
    "mode": "mode",
    "hpa": "hpa",
    "keda-scaled-object": "keda_scaled_object",
    "profile": "profile",
    "dry-run": "dry_run",
    "request-rate-query": "queries.request_rate",
    "policy": "policy",
}
INVALID_REASON = "InvalidAutoscalingAnnotation"
ERROR_STAGE = "discovery"
KINDS = ("Deployment", "StatefulSet")
_FIELD_ANNOTATION = {f.split(".")[0]: ANNOTATION_PREFIX + a for a, f in ANNOTATION_FIELDS.items()}
_FIELD_ANNOTATION["queries"] = ANNOTATION_PREFIX + "request-rate-query"
_MESSAGE_MAX = 1024


class InvalidAnnotation(AutoscalerError):
    """A discovered workload's annotations do not make a valid target. `field`: the
    TargetSettings field (dotted when nested, e.g. policy.min_replicas); `annotation`: the
    annotation that set it (None when the value came from discovery.defaults)."""

    def __init__(self, field: str, reason: str, annotation: str | None = None) -> None:
        self.field, self.reason, self.annotation = field, reason, annotation
        where = f" (annotation {annotation})" if annotation else ""
        super().__init__(f"{field}{where}: {reason}")


@dataclass(frozen=True)
class InvalidWorkload:
    """An opted-in workload that was skipped, and why."""

    key: TargetKey
    uid: str | None
    error: InvalidAnnotation


@dataclass(frozen=True)
class DiscoveryResult:
    """What one reconcile changed (keys), and the opted-in workloads it skipped."""

    added: tuple[TargetKey, ...] = ()
    updated: tuple[TargetKey, ...] = ()
    removed: tuple[TargetKey, ...] = ()
    invalid: tuple[TargetKey, ...] = ()
    failed: tuple[TargetKey, ...] = field(default=())  # a change that raised; retried next time


def opted_in(annotations: dict[str, str], annotation: str) -> bool:
    return str(annotations.get(annotation, "")).strip().lower() == "true"


def target_from_annotations(namespace: str, name: str, kind: str,
                            annotations: dict[str, str], settings: Settings) -> TargetConfig:
    """The target a workload's annotations describe (over discovery.defaults), validated
    as TargetSettings and converted as a configured target. Raises InvalidAnnotation."""
    data: dict[str, Any] = settings.discovery.defaults.model_dump(exclude_unset=True)
    ignored = {settings.discovery.annotation, USER_MIN_ANNOTATION}
    for key, value in sorted(annotations.items()):
        if not key.startswith(ANNOTATION_PREFIX) or key in ignored:
            continue
        suffix = key[len(ANNOTATION_PREFIX):]
        if suffix not in ANNOTATION_FIELDS:
            raise InvalidAnnotation(suffix, f"unknown annotation; known: "
                                            f"{sorted(ANNOTATION_FIELDS)}", key)
        target_field = ANNOTATION_FIELDS[suffix]
        if target_field == "dry_run":
            if value.strip().lower() not in ("true", "false"):
                raise InvalidAnnotation("dry_run", f'must be "true" or "false", got {value!r}',
                                        key)
            data["dry_run"] = value.strip().lower() == "true"
        elif target_field == "policy":
            try:
                policy = json.loads(value)
            except ValueError as e:
                raise InvalidAnnotation("policy", f"not JSON: {e}", key) from None
            if not isinstance(policy, dict):
                raise InvalidAnnotation("policy", "must be a JSON object of policy fields, "
                                                  f"got {type(policy).__name__}", key)
            data["policy"] = {**data.get("policy", {}), **policy}
        elif target_field == "queries.request_rate":
            data["queries"] = {**data.get("queries", {}), "request_rate": value}
        else:
            data[target_field] = value
    try:
        target = TargetSettings(**data, namespace=namespace, name=name, kind=kind)
    except ValidationError as e:
        raise _invalid(e, annotations) from None
    try:
        return settings.target_config(target)
    except ValueError as e:  # PredictiveConfig's own checks (already run by TargetSettings)
        raise InvalidAnnotation("policy", str(e), _FIELD_ANNOTATION["policy"]) from None


def _invalid(e: ValidationError, annotations: dict[str, str]) -> InvalidAnnotation:
    first = e.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith(("function-", "model-"))]
    message = re.sub(r"^(Value error|Assertion failed), ", "", first["msg"])
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    if loc:
        name = ".".join(loc)
    else:  # a cross-field check: its message names the field ("policy: ...", "needs a preset")
        words = re.findall(r"[a-z_]+", message)
        name = next((w for w in words if w in TargetSettings.model_fields), "target")
        message = re.sub(rf"^{re.escape(name)}: ", "", message)
    annotation = _FIELD_ANNOTATION.get(name.split(".")[0])
    if annotation not in annotations:
        annotation = None  # the value came from discovery.defaults
    return InvalidAnnotation(name, message, annotation)


class KubeWarningEvents:
    """A Warning Event on the workload for an invalid annotation (same shape as the
    actuator's and the policy sync's Normal Events)."""

    def __init__(self, api_client: Any, *, component: str = "predictive-autoscaler") -> None:
        import kubernetes.client as k8s

        self._core = k8s.CoreV1Api(api_client)
        self.component = component

    def __call__(self, bad: InvalidWorkload) -> None:
        namespace, kind, name = bad.key
        involved = {"apiVersion": "apps/v1", "kind": kind, "name": name,
                    "namespace": namespace}
        if bad.uid:
            involved["uid"] = bad.uid
        body = event_body(involved, INVALID_REASON,
                          f"not autoscaled: {bad.error}"[:_MESSAGE_MAX],
                          component=self.component, now=datetime.now(UTC),
                          event_type="Warning")
        call_api(f"create Event for {namespace}/{name}",
                 lambda: self._core.create_namespaced_event(namespace, body))


class Discovery:
    """Finds annotated workloads (`scan`) and makes the Controller follow them
    (`reconcile`); see the module docstring. `events`: reports an invalid workload (None:
    a Warning Event through `api_client`)."""

    def __init__(self, api_client: Any, settings: Settings, *, events: Any = None) -> None:
        import kubernetes.client as k8s

        self._apps = k8s.AppsV1Api(api_client)
        self.settings = settings
        self.annotation = settings.discovery.annotation
        self.events = events if events is not None else KubeWarningEvents(api_client)
        self.configured: frozenset[TargetKey] = frozenset(
            key_of(c) for c in settings.targets_config())
        self.invalid: dict[TargetKey, InvalidWorkload] = {}  # from the last scan
        self.managed: dict[TargetKey, TargetConfig] = {}  # discovered targets running
        self._logged: dict[TargetKey, str] = {}  # problem last logged per workload
        self._evented: dict[TargetKey, str] = {}  # problem last reported by an Event
        self._owed: dict[TargetKey, ActuatorTarget] = {}  # removed, user minimum not back yet
        self._shadowed: set[TargetKey] = set()  # discovered but configured: the config wins

    # -- scan -------------------------------------------------------------------------------

    def scan(self) -> dict[TargetKey, TargetConfig]:
        """The valid opted-in workloads by key (invalid ones land in `self.invalid`). One
        cluster-wide LIST per kind; a failed LIST raises and changes nothing."""
        listers = {"Deployment": self._apps.list_deployment_for_all_namespaces,
                   "StatefulSet": self._apps.list_stateful_set_for_all_namespaces}
        listed = {}
        for kind in KINDS:
            # raw JSON: only metadata is read, and typed models cost a lot per object
            response = call_api(f"list {kind}s (all namespaces)",
                                lambda lister=listers[kind]: lister(_preload_content=False))
            listed[kind] = json.loads(response.data).get("items") or []
        found: dict[TargetKey, TargetConfig] = {}
        invalid: dict[TargetKey, InvalidWorkload] = {}
        for kind, items in listed.items():
            for item in items:
                meta = item.get("metadata") or {}
                annotations = meta.get("annotations") or {}
                if not opted_in(annotations, self.annotation):
                    continue
                key = (meta.get("namespace", ""), kind, meta.get("name", ""))
                try:
                    found[key] = target_from_annotations(key[0], key[2], kind, annotations,
                                                         self.settings)
                except InvalidAnnotation as e:
                    invalid[key] = InvalidWorkload(key, meta.get("uid"), e)
        self.invalid = invalid
        return found

    # -- reconcile --------------------------------------------------------------------------

    def reconcile(self, controller: Controller, sync: Any, now_s: float) -> DiscoveryResult:
        """Scan, then add / update / remove discovered targets (see the module docstring).
        `sync`: the service's PolicySync (None: no policy store). Raises when the scan fails."""
        found = self.scan()
        errors = controller.metrics.errors.labels(ERROR_STAGE)
        leader = self._leading(controller, now_s)
        self._report(errors, leader)
        added, updated, removed, failed = [], [], [], []
        for key in [k for k in self.managed if k not in found and k not in self.invalid]:
            try:
                self._remove(controller, sync, key, now_s, leader)
                removed.append(key)
            except Exception as exc:  # noqa: BLE001 - one target's failure never stops others
                log.warning("discovery: removing %s failed: %s", _name(key), exc)
                errors.inc()
                failed.append(key)
        resync = False
        for key, config in found.items():
            if key in self.configured:
                if key not in self._shadowed:
                    log.info("discovery: %s is named in the config; the config wins", _name(key))
                    self._shadowed.add(key)
                continue
            try:
                if key in self.managed:
                    if config == self.managed[key]:
                        continue
                    self.managed[key] = config
                    if sync is not None:  # the sync lays the stored policy over the new baseline
                        sync.set_baseline(key, config)
                        resync = True
                    else:
                        controller.update_target(config, now_s)
                    updated.append(key)
                    log.info("discovery: %s changed", _name(key))
                elif key not in controller.targets:
                    self._owed.pop(key, None)  # controlled again: nothing to hand back
                    controller.add_target(config, now_s)
                    self.managed[key] = config
                    if sync is not None:
                        sync.set_baseline(key, config)
                        resync = True
                    added.append(key)
                    log.info("discovery: %s added", _name(key))
            except Exception as exc:  # noqa: BLE001
                log.warning("discovery: %s not applied: %s", _name(key), exc)
                errors.inc()
                failed.append(key)
        self._shadowed &= set(found)
        if resync:
            sync.sync(now_s)
        self._hand_back(controller, errors, now_s, leader)
        return DiscoveryResult(tuple(added), tuple(updated), tuple(removed),
                               tuple(self.invalid), tuple(failed))

    def _remove(self, controller: Controller, sync: Any, key: TargetKey, now_s: float,
                leader: bool) -> None:
        config = self.managed.pop(key)
        if sync is not None:
            sync.forget(key)
        if key not in controller.targets:
            return
        state = controller.targets[key]
        owed = state.actuator_target
        try:
            controller.remove_target(key, now_s)
        except Exception:
            # the state is gone but the HPA may still hold a raised floor: hand it back later
            if controller.actuator is not None and config.mode == "floor":
                self._owed[key] = owed
            raise
        log.info("discovery: %s removed%s", _name(key),
                 "" if leader else " (the leader restores its HPA)")

    def _hand_back(self, controller: Controller, errors: Any, now_s: float,
                   leader: bool) -> None:
        if not leader or controller.actuator is None:
            return
        for key, target in list(self._owed.items()):
            try:
                controller.actuator.restore(target, datetime.fromtimestamp(now_s, UTC))
            except Exception as exc:  # noqa: BLE001 - retried at the next reconcile
                log.warning("discovery: handing %s back failed: %s", _name(key), exc)
                errors.inc()
                continue
            del self._owed[key]

    def _report(self, errors: Any, leader: bool) -> None:
        for key, bad in self.invalid.items():
            problem = str(bad.error)
            if self._logged.get(key) != problem:
                self._logged[key] = problem
                log.warning("discovery: %s skipped: %s", _name(key), problem)
                errors.inc()
            if leader and self._evented.get(key) != problem:
                try:
                    self.events(bad)
                except Exception as exc:  # noqa: BLE001 - an Event is a report, never fatal
                    log.warning("discovery: event for %s not emitted: %s", _name(key), exc)
                    continue
                self._evented[key] = problem
        for seen in (self._logged, self._evented):
            for key in [k for k in seen if k not in self.invalid]:
                del seen[key]

    @staticmethod
    def _leading(controller: Controller, now_s: float) -> bool:
        try:
            return bool(controller.is_leader(now_s))
        except Exception:  # noqa: BLE001 - cannot tell: not leading is the safe side
            return False


def _name(key: TargetKey) -> str:
    namespace, kind, name = key
    return f"{kind} {namespace}/{name}"
