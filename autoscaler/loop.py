"""The control loop: one `tick(now_s)` gathers inputs for every target, decides, acts. Not pure.

Rules:
- Time enters only as `now_s` (epoch seconds): tests drive `tick` on a virtual clock; the
  service calls it every `tick_s`. Fit durations are measured with a monotonic timer (a
  measurement, never an input to a decision).
- One tick: one `read_tick` for all targets, one incremental history extension for all, then
  per target the cluster view (the workload's replicas, the HPA's own count, its pods for the
  lead time), the forecast from the fitted model, `PredictivePolicy.decide`, and the actuator
  (skipped when this replica is not the leader; in dry run the actuator computes the patch and
  writes nothing). Targets with `prewarm_nodes` then get their placeholder pods reconciled
  (`Prewarmer`): as many as the decision's floor (the need over the lead time) exceeds the
  workload's live pods, capped; only when leading, not paused and not in dry run (the count
  is still computed and recorded). Refits are NOT part of the tick: `refit_due(now_s)` /
  `refit(key, now_s)` let the service run them as separate jobs, spread over the refit
  interval.
- Failure is safe and loud (STYLE rule 10): stale or missing metrics, no model or a failed fit
  reach the policy as None inputs and it holds the floor; an exception in one target is logged,
  counted and recorded as the decision's reason, keeps the last safe state, and never stops the
  other targets or the loop. Every decision is a `DecisionRecord` in a bounded per-target log
  and a count by reason in the controller's metrics.
- A policy change (`update_target`) keeps what the target learned; a paused target is still
  decided and logged but never written. A mode change owes the old object its user's
  minimum: handed back at once when this replica may write, else on its first tick that may
  (after a resume, or once a standby leads).
- The per-target state, the decision record, key_of and queries_for are in
  autoscaler/target_state.py: this module is the loop that drives them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from autoscaler.errors import ActuationError, MetricsError
from autoscaler.kube_actuator import USER_MIN_ANNOTATION, ActuatorTarget, KubeActuator, call_api
from autoscaler.lead_time import LeadTimeTracker, label_selector
from autoscaler.metrics import ControllerMetrics
from autoscaler.prewarm import PrewarmAction, Prewarmer, balloons_needed, live_pods
from autoscaler.prometheus_source import (
    PrometheusSource,
    TargetRef,
    TickReading,
)
from autoscaler.settings import PREWARM_PRIORITY_CLASS, TargetConfig
from autoscaler.target_state import DecisionRecord, TargetKey, TargetState, key_of
from forecasting.online import OnlineForecaster
from forecasting.types import Forecast, Series
from policies.predictive import PredictivePolicy
from policies.types import Decision, Observation, PodMetrics

log = logging.getLogger(__name__)

DEFAULT_LOG_SIZE = 500
RATE_WINDOW_S = 120.0  # the presets' rate() window; the policy dates the rate by its centre


@dataclass(frozen=True)
class ClusterState:
    """What the API server shows for one target at this tick.

    spec_replicas / ready_replicas: the workload's spec.replicas and status.readyReplicas.
    hpa_replicas: the HPA's status.desiredReplicas (None: no HPA, or it has no status yet).
    user_min: the HPA's minReplicas as the user set it (the annotation the actuator keeps
        while it raises the floor, else spec.minReplicas); None without an HPA.
    pods: the workload's pods (official-client objects), for the lead time.
    """

    spec_replicas: int
    ready_replicas: int
    hpa_replicas: int | None
    user_min: int | None
    pods: Sequence[Any] = ()


class ClusterReader:
    """Reads workloads, their HPA and pods through the official client (get/list only)."""

    def __init__(self, api_client: Any) -> None:
        import kubernetes.client as k8s

        self._apps = k8s.AppsV1Api(api_client)
        self._autoscaling = k8s.AutoscalingV2Api(api_client)
        self._core = k8s.CoreV1Api(api_client)

    def read(self, target: TargetConfig) -> ClusterState:
        where = f"{target.namespace}/{target.name}"
        read = (self._apps.read_namespaced_stateful_set if target.kind == "StatefulSet"
                else self._apps.read_namespaced_deployment)
        workload = call_api(f"get {where}", lambda: read(target.name, target.namespace))
        hpas = call_api(f"list HPAs for {where}", lambda: self._autoscaling
                        .list_namespaced_horizontal_pod_autoscaler(target.namespace))
        hpa = next((h for h in hpas.items if (target.hpa and h.metadata.name == target.hpa) or (
            not target.hpa and h.spec.scale_target_ref.kind == target.kind
            and h.spec.scale_target_ref.name == target.name)), None)
        selector = label_selector(workload.spec.selector)
        pods = call_api(f"list pods of {where}", lambda: self._core.list_namespaced_pod(
            target.namespace, label_selector=selector)).items
        hpa_replicas = user_min = None
        if hpa is not None:
            hpa_replicas = hpa.status.desired_replicas if hpa.status else None
            kept = (hpa.metadata.annotations or {}).get(USER_MIN_ANNOTATION)
            user_min = int(kept) if kept is not None else hpa.spec.min_replicas
        status = workload.status
        return ClusterState(
            spec_replicas=int(workload.spec.replicas or 0),
            ready_replicas=int((status.ready_replicas if status else 0) or 0),
            hpa_replicas=hpa_replicas, user_min=user_min, pods=pods)


class Controller:
    """Per-target state plus `tick`, `refit_due` and `refit` (see the module docstring).

    targets: the targets' frozen configs. source: the Prometheus source (its step_s is the
    history step). actuator: acts on Kubernetes (None: never act, e.g. standalone).
    cluster: reads workloads/HPAs/pods (None: no Kubernetes; replicas unknown, lead time default).
    metrics: the controller's metrics. is_leader: `is_leader(now_s)` (None: always leader).
    tick_s / refit_interval_s: loop cadences, s. history_s: forecaster window, s.
    lead_time_factory: builds each target's LeadTimeTracker from its default lead time.
    prewarmer: keeps placeholder pods for targets with prewarm_nodes (None: one on the
        actuator's API client; no actuator, no pre-warming).
    """

    def __init__(self, targets: Sequence[TargetConfig], source: PrometheusSource, *,
                 actuator: KubeActuator | None = None, cluster: ClusterReader | None = None,
                 metrics: ControllerMetrics | None = None,
                 is_leader: Callable[[float], bool] | None = None, tick_s: float = 15.0,
                 refit_interval_s: float = 3600.0, history_s: float = 7 * 86400.0,
                 lead_time_factory: Callable[[float], LeadTimeTracker] = LeadTimeTracker,
                 log_size: int = DEFAULT_LOG_SIZE, start_s: float = 0.0,
                 prewarmer: Prewarmer | None = None) -> None:
        self.source = source
        self.actuator = actuator
        api_client = getattr(actuator, "_client", None)
        if prewarmer is None and api_client is not None:
            # the actuator's client and global dry run; each target brings its PriorityClass
            prewarmer = Prewarmer(api_client, priority_class=PREWARM_PRIORITY_CLASS,
                                  dry_run=bool(getattr(actuator, "dry_run", False)))
        self.prewarmer = prewarmer
        self.cluster = cluster
        self.metrics = metrics or ControllerMetrics()
        self.is_leader = is_leader or (lambda now_s: True)
        self.tick_s = tick_s
        self.refit_interval_s = refit_interval_s
        self.history_s = history_s
        self._lead_time_factory = lead_time_factory
        self.log_size = log_size
        self.targets: dict[TargetKey, TargetState] = {}
        for config in targets:
            self.add_target(config, start_s)

    # -- targets ----------------------------------------------------------------------------

    def add_target(self, config: TargetConfig, now_s: float) -> TargetState:
        """Start controlling a target; its first fit is due at once, later ones are spread
        over the refit interval so that they never all land on one tick."""
        offset_s = (len(self.targets) * 7919.0) % self.refit_interval_s  # stable spread
        state = TargetState(config, step_s=self.source.step_s, history_s=self.history_s,
                            lead_time=self._lead_time_factory(config.lead_time_default_s),
                            log_size=self.log_size, next_refit_s=now_s - offset_s)
        self.targets[key_of(config)] = state
        return state

    def remove_target(self, key: TargetKey, now_s: float) -> None:
        """Stop controlling a target: give its HPA back the user's minimum, drop its state."""
        state = self.targets.pop(key)
        self.source.forget(state.ref)
        self.metrics.forget(state.config.namespace, state.config.name)
        if self.actuator is not None and self.is_leader(now_s):
            self.actuator.restore(state.actuator_target, _dt(now_s))
        if (state.config.prewarm_nodes or state.placeholders_held) and (
                self.prewarmer is not None and self.is_leader(now_s)):
            self.prewarmer.reconcile(state.actuator_target, 0)  # no node held for it any more

    def update_target(self, config: TargetConfig, now_s: float) -> TargetState:
        """Apply a changed config (a policy update) to a running target, keeping what it
        learned: history, lead-time measurements, the policy's state. A new forecaster name
        starts a new model (fed from the cached history, fitted at once); a new mode first
        hands the old object back (the HPA gets the user's minimum) so that nothing is left
        raised by a mode no longer in use."""
        key = key_of(config)
        state = self.targets[key]
        old = state.config
        if config == old:
            return state
        if (old.mode, old.keda_scaled_object, old.hpa) != (
                config.mode, config.keda_scaled_object, config.hpa):
            # handed back now when this replica may write, else on its first tick that may
            # (paused: on resume; a standby: once it leads); the first object owed wins
            state.pending_restore = state.pending_restore or state.actuator_target
            self._hand_back(state, now_s, self.is_leader(now_s))
        state.config = config
        state.actuator_target = ActuatorTarget(config.namespace, config.name, config.kind,
                                               config.mode, config.dry_run)
        state.policy = PredictivePolicy(config.policy)
        if config.policy.forecaster != old.policy.forecaster:
            state.forecaster = OnlineForecaster(config.policy.forecaster,
                                                step_s=self.source.step_s,
                                                refit_every_s=math.inf, window_s=self.history_s)
            state.fed_until_s = None
            if state.history.values.size:
                self._feed(state, state.history)
            state.next_refit_s = now_s
        return state

    def _hand_back(self, state: TargetState, now_s: float, leader: bool) -> None:
        """Give the object a mode change left behind its user's minimum, when this replica
        may write; kept for a later tick when the write fails."""
        owed = state.pending_restore
        if owed is None or self.actuator is None or not leader or state.paused:
            return
        try:
            self.actuator.restore(owed, _dt(now_s), reason="mode-changed")
        except ActuationError as exc:
            log.warning("%s/%s: hand-back failed: %s", owed.namespace, owed.name, exc)
            self.metrics.errors.labels("api").inc()
            return
        state.pending_restore = None

    def set_paused(self, key: TargetKey, paused: bool) -> None:
        """Paused: the target is still decided and logged, nothing is written for it."""
        self.targets[key].paused = paused

    # -- refits (separate jobs) -------------------------------------------------------------

    def refit_due(self, now_s: float) -> list[TargetKey]:
        """Targets whose refit is due and that have history to fit on."""
        return [k for k, s in self.targets.items()
                if s.next_refit_s <= now_s and s.fed_until_s is not None]

    def refit(self, key: TargetKey, now_s: float) -> bool:
        """Refit one target's forecaster on its history; True when the fit succeeded.
        A failed fit keeps the previous model out of use (the policy holds) until one succeeds."""
        state = self.targets[key]
        state.next_refit_s = now_s + self.refit_interval_s
        f = state.forecaster
        started = time.perf_counter()
        try:
            f.refit(now_s)
        except Exception as exc:  # noqa: BLE001 - a failed fit must never escape the job
            f.last_failure = f"fit failed: {type(exc).__name__}: {exc}"
        self.metrics.fit_duration_seconds.observe(time.perf_counter() - started)
        if f.last_failure is not None:
            self.metrics.errors.labels("fit").inc()
            log.warning("%s/%s: %s", state.config.namespace, state.config.name, f.last_failure)
            return False
        return True

    # -- the tick ---------------------------------------------------------------------------

    def tick(self, now_s: float) -> dict[TargetKey, DecisionRecord]:
        """Decide (and act, when leading) for every target at now_s; never raises."""
        started = time.perf_counter()
        leader = self._leading(now_s)
        states = list(self.targets.values())
        readings = self._read(states, now_s)
        self._extend_history(states, now_s)
        out = {}
        for key, state in list(self.targets.items()):
            try:
                record = self._tick_target(state, readings.get(state.ref), now_s, leader)
            except Exception as exc:  # one target's failure never stops the others
                log.exception("%s/%s: tick failed", state.config.namespace, state.config.name)
                self.metrics.errors.labels("decide").inc()
                record = self._failed(state, now_s, f"error: {type(exc).__name__}: {exc}")
            state.log.append(record)
            self.metrics.decisions.labels(state.config.namespace, state.config.name,
                                          record.reason).inc()
            out[key] = record
        self.metrics.tick_duration_seconds.observe(time.perf_counter() - started)
        if leader:
            self.metrics.last_tick_timestamp_seconds.set(now_s)
        return out

    def _leading(self, now_s: float) -> bool:
        try:
            leader = bool(self.is_leader(now_s))
        except Exception:  # cannot tell: not leading is the safe side
            log.exception("leader check failed")
            self.metrics.errors.labels("api").inc()
            leader = False
        self.metrics.is_leader.set(1 if leader else 0)
        return leader

    def _read(self, states: Sequence[TargetState], now_s: float
              ) -> Mapping[TargetRef, TickReading]:
        try:
            return self.source.read_tick([s.metric_target for s in states], now_s)
        except MetricsError as exc:  # Prometheus down: every target holds
            log.warning("metrics read failed: %s", exc)
            self.metrics.errors.labels("query").inc()
            return {}

    def _extend_history(self, states: Sequence[TargetState], now_s: float) -> None:
        try:
            history = self.source.history([s.metric_target for s in states], now_s)
        except MetricsError as exc:  # keep what was fed; forecasts roll on from it
            log.warning("history read failed: %s", exc)
            self.metrics.errors.labels("query").inc()
            return
        for state in states:
            series, report = history[state.ref]
            state.history, state.history_report = series, report
            self._feed(state, series)

    @staticmethod
    def _feed(state: TargetState, series: Series) -> None:
        """Give the forecaster the samples it has not seen; gaps inside are interpolated
        (the report keeps them), the ragged end after the last sample is not fed yet."""
        values = series.values
        present = np.flatnonzero(~np.isnan(values))
        if present.size == 0:
            return
        end_s = series.start_s + (int(present[-1]) + 1) * series.step_s
        start_s = series.start_s if state.fed_until_s is None else state.fed_until_s
        if end_s <= start_s:
            return
        i0 = int(round((start_s - series.start_s) / series.step_s))
        i1 = int(present[-1]) + 1
        x = np.arange(values.size)
        filled = np.interp(x[i0:i1], x[present], values[present])
        state.forecaster.observe(filled, end_s)
        state.fed_until_s = end_s

    def _tick_target(self, state: TargetState, reading: TickReading | None, now_s: float,
                     leader: bool) -> DecisionRecord:
        cfg, m = state.config, self.metrics
        ns, name = cfg.namespace, cfg.name
        cluster = self._cluster(state)
        lead = state.lead_time.estimate()
        stale = reading is None or reading.stale or reading.rate_rps is None
        rate = None if stale else reading.rate_rps  # type: ignore[union-attr]
        age_s = (reading.last_sample_age_s if reading is not None else None) or 0.0
        gpu = reading.gpu_util_pct if reading is not None else None
        ready = cluster.ready_replicas if cluster else 0
        obs = Observation(
            now_s=now_s, rate_rps=rate, rate_history=state.history,
            pods=PodMetrics(ready_count=ready if gpu is not None else 0,
                            ready_util_sum=(gpu or 0.0) / 100.0 * ready,
                            missing_count=0 if gpu is not None else ready),
            spec_replicas=cluster.spec_replicas if cluster else 0, ready_replicas=ready,
            hpa_replicas=cluster.hpa_replicas if cluster else None,
            lead_time_s=lead.lead_time_s, metrics_age_s=age_s,
            rate_window_s=RATE_WINDOW_S)
        forecast = self._forecast(state, now_s, lead.lead_time_s)
        state.last_forecast = forecast
        decision, state.policy_state = state.policy.decide(obs, forecast, state.policy_state,
                                                           now_s)
        state.last_decision = decision
        quantiles = _window_max(forecast, now_s, lead.lead_time_s + self.tick_s)
        self._hand_back(state, now_s, leader)
        action, error = self._act(state, decision, now_s, leader and not state.paused)
        prewarm, prewarm_error = self._prewarm(state, decision, cluster,
                                               leader and not state.paused)
        error = error or prewarm_error
        # -- metrics
        m.metrics_stale.labels(ns, name).set(1 if stale else 0)
        if rate is not None:
            m.observed_rps.labels(ns, name).set(rate)
        if decision.floor is not None:
            m.desired_floor_replicas.labels(ns, name).set(decision.floor)
        if cluster is not None and cluster.hpa_replicas is not None:
            m.hpa_desired_replicas.labels(ns, name).set(cluster.hpa_replicas)
        if cluster is not None and cluster.user_min is not None:
            m.user_min_replicas.labels(ns, name).set(cluster.user_min)
        m.lead_time_seconds.labels(ns, name).set(lead.lead_time_s)
        m.lead_time_samples.labels(ns, name).set(lead.pods)
        m.set_forecast(ns, name, quantiles)
        report = state.history_report
        inputs = {"rate_rps": rate, "metrics_age_s": age_s, "stale": stale,
                  "gpu_util_pct": gpu, "spec_replicas": obs.spec_replicas,
                  "ready_replicas": ready, "hpa_replicas": obs.hpa_replicas,
                  "user_min": cluster.user_min if cluster else None,
                  "history_points": report.points if report else 0,
                  "history_gaps_s": report.gaps_s if report else (),
                  "fit_failure": state.forecaster.last_failure}
        return DecisionRecord(
            namespace=ns, name=name, now_s=now_s, reason=decision.reason, floor=decision.floor,
            replicas=decision.replicas, lead_time_s=lead.lead_time_s,
            lead_time_source=lead.source,
            bounds=(cfg.policy.min_replicas, cfg.policy.max_replicas),
            dry_run=cfg.dry_run or bool(self.actuator and self.actuator.dry_run),
            acted=action is not None, written=bool(action and action.written),
            inputs=inputs, forecast_quantiles_rps=quantiles,
            details={**decision.details, **({"prewarm": prewarm} if prewarm else {})},
            action=_action_summary(action), error=error, paused=state.paused)

    def _cluster(self, state: TargetState) -> ClusterState | None:
        if self.cluster is None:
            return None
        try:
            cluster = self.cluster.read(state.config)
        except Exception as exc:  # no cluster view: decide on metrics alone, say so
            log.warning("%s/%s: cluster read failed: %s", state.config.namespace,
                        state.config.name, exc)
            self.metrics.errors.labels("api").inc()
            return None
        try:
            state.lead_time.observe(cluster.pods)
        except Exception:
            log.exception("%s/%s: lead time", state.config.namespace, state.config.name)
            self.metrics.errors.labels("lead_time").inc()
        return cluster

    def _forecast(self, state: TargetState, now_s: float, lead_time_s: float
                  ) -> Forecast | None:
        f = state.forecaster
        if f.last_failure is not None or state.fed_until_s is None:
            return None  # a failed fit holds (the policy's rule), never an old model silently
        if f.metadata["fitted_at_s"] is None:
            return None  # never fitted: forecast() would fit here, inside the tick
        horizon_s = now_s - state.fed_until_s + lead_time_s + 2 * self.tick_s
        steps = max(1, math.ceil(horizon_s / f.step_s) + 1)
        try:
            return f.forecast(now_s, steps)
        except Exception as exc:
            log.warning("%s/%s: forecast failed: %s", state.config.namespace,
                        state.config.name, exc)
            self.metrics.errors.labels("fit").inc()
            return None

    def _act(self, state: TargetState, decision: Decision, now_s: float, leader: bool):
        if self.actuator is None or not leader:
            return None, None
        try:
            return self.actuator.apply(state.actuator_target, decision, _dt(now_s)), None
        except ActuationError as exc:
            resource = ("scale" if state.config.mode == "direct" else "scaledobjects"
                        if state.config.keda_scaled_object else "horizontalpodautoscalers")
            self.metrics.write_errors.labels(state.config.namespace, state.config.name,
                                             resource).inc()
            log.warning("%s/%s: write failed: %s", state.config.namespace, state.config.name,
                        exc)
            return None, f"write failed: {exc}"

    def _prewarm(self, state: TargetState, decision: Decision, cluster: ClusterState | None,
                 acting: bool) -> tuple[dict[str, Any] | None, str | None]:
        """Placeholder pods for the need the real pods do not cover yet (module docstring).
        Returns (what was done or would be done, for the record; the write error)."""
        cfg = state.config
        if self.prewarmer is None or not acting:
            return None, None  # standby or paused: leave whatever exists alone
        if not cfg.prewarm_nodes:
            if not state.placeholders_held:
                return None, None
            wanted = 0  # pre-warming was turned off: give the nodes back
        elif decision.floor is None or cluster is None:
            return None, None  # no need or no pod count known: hold what exists
        else:
            wanted = balloons_needed(decision.floor, live_pods(cluster.pods),
                                     cfg.prewarm_max_placeholders)
        if cfg.dry_run or self.prewarmer.dry_run:  # computed and recorded, nothing written
            return {"wanted": wanted, "dry_run": True}, None
        try:
            done = self.prewarmer.reconcile(state.actuator_target, wanted,
                                            priority_class=cfg.prewarm_priority_class)
        except ActuationError as exc:
            self.metrics.write_errors.labels(cfg.namespace, cfg.name, "pods").inc()
            log.warning("%s/%s: placeholders: %s", cfg.namespace, cfg.name, exc)
            return {"wanted": wanted, "dry_run": False}, f"placeholders failed: {exc}"
        state.placeholders_held = wanted > 0
        return _prewarm_summary(done), None

    def _failed(self, state: TargetState, now_s: float, reason: str) -> DecisionRecord:
        last = state.last_decision
        lead = state.lead_time.estimate()
        cfg = state.config
        return DecisionRecord(
            namespace=cfg.namespace, name=cfg.name, now_s=now_s, reason=reason,
            floor=last.floor if last else None, replicas=last.replicas if last else None,
            lead_time_s=lead.lead_time_s, lead_time_source=lead.source,
            bounds=(cfg.policy.min_replicas, cfg.policy.max_replicas), dry_run=cfg.dry_run,
            acted=False, written=False, error=reason, paused=state.paused)


def _window_max(forecast: Forecast | None, now_s: float, window_s: float) -> dict[float, float]:
    if forecast is None:
        return {}
    return {level: float(forecast.max_over(level, now_s, now_s + window_s))
            for level in forecast.levels()}


def _action_summary(action: Any) -> dict[str, Any]:
    if action is None:
        return {}
    return {"object": f"{action.object_kind}/{action.object_name}", "field": action.field_path,
            "before": action.before, "after": action.after, "user_min": action.user_min,
            "written": action.written, "dry_run": action.dry_run}


def _prewarm_summary(done: PrewarmAction) -> dict[str, Any]:
    return {"wanted": done.wanted, "existing": done.existing, "created": done.created,
            "deleted": list(done.deleted), "dry_run": done.dry_run}


def _dt(now_s: float) -> datetime:
    return datetime.fromtimestamp(now_s, UTC)
