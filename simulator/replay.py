"""One replay of one policy through the simulated cluster, metric pipeline and HPA.

The loop: every tick (the HPA's 15 s sync period) Prometheus scrapes the counters, the policy
sees an Observation built from those scrapes only (never the true rate), decides, and the
decision goes to the simulated cluster: directly for `hpa` (it IS the HPA), as the HPA's
floor for `predictive` (the HPA keeps reacting beside it: the count that runs is the HPA's
result clamped to [floor, max]). The oracle follows a plan made from the true demand.
Requests are served in batches between events (pod ready, pod deleted, tick) while the replica
set is fixed. The oracle's pods do not depend on what is served: in fast mode its pod events
are computed from the plan at once and the whole replay is served in one compiled call (the
same figures as event by event, which tests/test_sim_fast_oracle.py holds it to).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecasting.types import Series
from policies.hpa import HPAConfig, HPAPolicy, hpa_desired
from policies.lead_time import LeadTimeRule
from policies.oracle import PlannedPod, plan_arrays
from policies.predictive import (
    BESIDE_HPA_TARGET_UTILIZATION,
    PredictiveConfig,
    PredictivePolicy,
    size_for,
)
from policies.registry import BESIDE_HPA_PREFIX, PolicySpec
from policies.types import Decision, Observation, PodMetrics
from simulator import fast_hpa
from simulator.cluster import Cluster, Pod, cold_start_stream
from simulator.engine import Engine
from simulator.pipeline import PipelineConfig, ScrapeStore
from simulator.results import PolicyResult
from simulator.serve_modes import FastServing, RequestServing, Serving
from simulator.workload_view import WorkloadView


@dataclass(frozen=True)
class ReplayConfig:
    """How a replay runs (units in names)."""

    start_s: float
    duration_s: float
    seed: int = 0
    fidelity: str = "request"
    routing: str = "lor"
    tick_s: float = 15.0
    refit_every_s: float = 3600.0
    history_window_s: float = 7 * 86400.0
    pipeline: PipelineConfig = PipelineConfig()
    max_replicas: int = 100
    lead_time_quantile: float = 0.95
    lead_time_min_samples: int = 5
    max_miss: float = 0.001
    pod_mtbf_s: float | None = None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


class Replay:
    """Runs one policy spec over the workload view."""

    def __init__(self, view: WorkloadView, spec: PolicySpec, config: ReplayConfig,
                 oracle_need: np.ndarray | None = None,
                 progress: Callable[[float], None] | None = None,
                 record_decisions: bool = False, compiled: bool = True) -> None:
        self.view, self.spec, self.cfg = view, spec, config
        # In fast mode two replays run as one compiled call, with the same figures as event by
        # event: hpa (simulator/fast_hpa.py), and the oracle, whose pods follow its plan
        # whatever is served (its pod events are computed from the plan at once, then the
        # whole replay is served). compiled=False runs them event by event: the reference the
        # tests hold the compiled paths to.
        self.compiled = compiled
        self.profile = view.profile
        self._serve_at_end = compiled and oracle_need is not None and config.fidelity == "fast"
        self.engine = Engine(config.start_s,
                             before_event=None if self._serve_at_end else self._advance)
        self.cluster = Cluster(self.engine,
                               cold_start_stream(self.profile.sample_cold_start_s,
                                                 np.random.default_rng(cold_start_seed(
                                                     config.seed))),
                               self._on_ready, self._on_delete,
                               self._failure_clock(config))
        self.serving: Serving = (FastServing(view, config) if config.fidelity == "fast"
                                 else RequestServing(view, config, config.seed))
        self.store = ScrapeStore(config.pipeline, config.start_s, config.duration_s)
        self.history = view.new_history()
        self._rid: dict[int, int] = {}
        self._last_t = config.start_s
        self._ready_pod_s = 0.0
        self._oracle_need = oracle_need
        self._progress = progress
        self.reasons: Counter[str] = Counter()
        self._trace_t: list[float] | np.ndarray = []
        self._trace: list[tuple[int, int, float, int]] | np.ndarray = []
        self._arrivals_at_tick = 0.0
        self._under_s = 0.0
        self._lead_cache: tuple[int, float] = (-1, 0.0)
        self._lead_rule = LeadTimeRule(self.view.default_lead_time_s,
                                       min_samples=config.lead_time_min_samples,
                                       quantile=config.lead_time_quantile)
        self.decisions: list[tuple[float, Decision]] | None = [] if record_decisions else None
        self._setup_policy()

    # -- policy wiring -------------------------------------------------------------------
    def _setup_policy(self) -> None:
        name, params = self.spec.name, dict(self.spec.params)
        prof, cfg = self.profile, self.cfg
        max_r = prof.max_replicas if prof.max_replicas is not None else cfg.max_replicas
        min_r = prof.min_replicas
        self.hpa_cfg: HPAConfig | None = None
        self.predictive: PredictivePolicy | None = None
        if name == "hpa":
            params.setdefault("max_replicas", max_r)
            params.setdefault("min_replicas", min_r)
            self.hpa_cfg = HPAConfig(**params)
            self.params = dict(HPAPolicy(self.hpa_cfg).params)
        elif name == "predictive":
            hpa_params = {k[len(BESIDE_HPA_PREFIX):]: params.pop(k) for k in list(params)
                          if k.startswith(BESIDE_HPA_PREFIX)}
            hpa_params.setdefault("target_utilization", BESIDE_HPA_TARGET_UTILIZATION)
            hpa_params.setdefault("max_replicas", max_r)
            hpa_params.setdefault("min_replicas", min_r)
            self.hpa_cfg = HPAConfig(**hpa_params)
            params.setdefault("max_replicas", max_r)
            params.setdefault("min_replicas", min_r)
            params.setdefault("capacity_rps_per_replica", self.view.capacity_rps_per_replica)
            params.setdefault("slots_per_replica", prof.slots)
            params.setdefault("wait_budget_s", self.view.wait_budget_s)
            params.setdefault("slo_s", self.view.slo_s)
            params.setdefault("slo_part_quantiles_s", self.view.slo_part_quantiles_s)
            params.setdefault("service_scv", self.view.service_scv)
            params.setdefault("tick_s", cfg.tick_s)
            pcfg = PredictiveConfig(**params)
            self.predictive = PredictivePolicy(pcfg)
            self.pstate = self.predictive.initial_state()
            from forecasting.online import OnlineForecaster

            self.forecaster = OnlineForecaster(
                pcfg.forecaster, step_s=cfg.pipeline.history_step_s,
                refit_every_s=cfg.refit_every_s, window_s=cfg.history_window_s)
            self._fed_until_s = -math.inf
            self._last_forecast: Any = None
            self.params = dict(self.predictive.params)
            self.params.update({BESIDE_HPA_PREFIX + k: v
                                for k, v in HPAPolicy(self.hpa_cfg).params.items()})
        elif name == "oracle":
            self.params = {"max_miss": params.get("max_miss", cfg.max_miss)}
        if self.hpa_cfg is not None:
            self.hstate = HPAPolicy(self.hpa_cfg).initial_state()
        self.hpa_replicas: int | None = None

    @staticmethod
    def _failure_clock(config: ReplayConfig) -> Callable[[], float] | None:
        """Exponential time to failure of each ready pod (seeded), or None without failures."""
        if config.pod_mtbf_s is None:
            return None
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3]))
        mtbf = config.pod_mtbf_s
        return lambda: float(rng.exponential(mtbf))

    @property
    def is_oracle(self) -> bool:
        """Whether the replica set follows the oracle's plan (no policy decides at run time)."""
        return self._oracle_need is not None

    def initial_replicas(self) -> int:
        rate = self.view.initial_rate_rps()
        cap = self.view.capacity_rps_per_replica
        if self.predictive is not None:
            n = size_for(self.predictive.config, rate)
        elif self.hpa_cfg is not None:
            n = math.ceil(rate / (cap * self.hpa_cfg.target_utilization))
        else:
            n = int(self._oracle_need[0]) if self._oracle_need is not None else 1
        return int(min(max(n, self.profile.min_replicas, 1), self.cfg.max_replicas))

    # -- engine callbacks ------------------------------------------------------------------
    def _on_ready(self, pod: Pod, now_s: float) -> None:
        self._rid[pod.pid] = self.serving.add_replica(now_s)

    def _on_delete(self, pod: Pod, now_s: float) -> None:
        self.serving.remove_replica(self._rid.pop(pod.pid), now_s)

    def _advance(self, t_s: float) -> None:
        """Serve arrivals and accrue ready pod-seconds up to t_s."""
        if t_s <= self._last_t:
            return
        ready = len(self._rid)
        self._ready_pod_s += ready * (t_s - self._last_t)
        self.serving.advance(self._last_t, t_s)
        self._last_t = t_s

    def _tick(self, t_s: float) -> None:
        serving, store = self.serving, self.store
        store.scrape(t_s, serving.arrived, serving.busy_slot_s, self._ready_pod_s)
        arrived_now = serving.arrived - self._arrivals_at_tick
        self._arrivals_at_tick = serving.arrived
        demand = arrived_now / self.cfg.tick_s
        ready = len(self._rid)
        if demand > ready * self.view.capacity_rps_per_replica:
            self._under_s += self.cfg.tick_s
        floor = 0
        if self._oracle_need is None:
            obs = self._observe(t_s)
            floor = self._decide(obs, t_s)
        self._trace_t.append(t_s)
        self._trace.append((ready, self.cluster.total_count, demand, floor))
        if self._progress is not None:
            self._progress(t_s)

    def _observe(self, t_s: float) -> Observation:
        cfg, store, prof = self.cfg, self.store, self.profile
        rate = store.rate_rps(t_s)
        util = store.utilization(t_s, prof.slots)
        newest = store.newest_sample_s(t_s)
        full_window_since = t_s - cfg.pipeline.query_lag_s - cfg.pipeline.rate_window_s / 2
        with_metrics = self.cluster.ready_since(full_window_since)
        ready = len(self._rid)
        if util is None:
            pods = PodMetrics(0, 0.0, self.cluster.total_count - ready, ready)
        else:
            pods = PodMetrics(with_metrics, util * with_metrics,
                              self.cluster.total_count - ready, ready - with_metrics)
        lead = self._lead_time_s()
        history = self.history.series(self.store, t_s) if self.predictive else None
        return Observation(
            now_s=t_s, rate_rps=rate, rate_history=history or Series(np.zeros(0), 60.0),
            pods=pods, spec_replicas=self.cluster.spec_replicas, ready_replicas=ready,
            hpa_replicas=self.hpa_replicas, lead_time_s=lead + cfg.tick_s,
            metrics_age_s=(t_s - newest) if newest is not None else math.inf,
            rate_window_s=cfg.pipeline.rate_window_s)

    def _lead_time_s(self) -> float:
        """High quantile of the measured start-to-ready times (last 50), else the default."""
        measured = self.cluster.cold_starts_s
        if self._lead_cache[0] != len(measured):  # the rule re-sorts: only on a new start
            self._lead_cache = (len(measured), self._lead_rule.lead_time_s(measured))
        return self._lead_cache[1]

    def _decide(self, obs: Observation, t_s: float) -> int:
        floor = None
        if self.predictive is not None:
            forecast = self._forecast(obs, t_s)
            decision, self.pstate = self.predictive.decide(obs, forecast, self.pstate, t_s)
            self.reasons[decision.reason] += 1
            if self.decisions is not None:
                self.decisions.append((t_s, decision))
            floor = decision.floor
        assert self.hpa_cfg is not None
        hdec, self.hstate = hpa_desired(self.hpa_cfg, obs.pods, obs.spec_replicas,
                                       self.hstate, t_s, min_replicas=floor)
        if self.predictive is None:
            self.reasons[hdec.reason] += 1
            if self.decisions is not None:
                self.decisions.append((t_s, hdec))
        self.hpa_replicas = hdec.replicas
        self.cluster.scale_to(hdec.replicas, t_s)
        return floor or 0

    def _forecast(self, obs: Observation, t_s: float) -> Any:
        """Feed the forecaster the history samples it has not seen, then forecast.

        The history moves one step per history_step_s (4 ticks): between new samples the last
        forecast still holds (its steps are absolute times), so it is reused.
        """
        history = obs.rate_history
        step = history.step_s
        horizon = max(1, int(math.ceil((t_s - history.end_s + obs.lead_time_s
                                        + 2 * self.cfg.tick_s) / step)) + 1)
        cached = self._last_forecast
        if (history.end_s <= self._fed_until_s and cached is not None
                and cached.start_s + cached.horizon_steps * step
                >= t_s + obs.lead_time_s + self.cfg.tick_s):
            return cached
        if history.end_s > self._fed_until_s:
            unseen_s = min(history.end_s - self._fed_until_s, len(history) * step)
            new = int(round(unseen_s / step))
            self.forecaster.observe(history.values[len(history) - new:], history.end_s)
            self._fed_until_s = history.end_s
        try:
            self._last_forecast = self.forecaster.forecast(t_s, horizon)
        except Exception as exc:  # noqa: BLE001 - a broken forecast must hold, not end the run
            self.reasons[f"forecast error: {type(exc).__name__}"] += 1
            self._last_forecast = None
        return self._last_forecast

    # -- run -------------------------------------------------------------------------------
    def run(self) -> PolicyResult:
        if fast_hpa.applies(self):
            return fast_hpa.run(self)
        cfg = self.cfg
        timeline: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if self._serve_at_end and cfg.pod_mtbf_s is None:
            timeline = self._planned_oracle_pods()
        elif self._oracle_need is not None:
            # The oracle decides nothing at run time: its pods follow the plan, so the replay
            # only has pod events, and the per-tick figures are read off afterwards.
            self._schedule_oracle()
        else:
            initial = self.initial_replicas()
            self.cluster.start_ready(initial, cfg.start_s)
            self.view.seed_store(self.store, initial)
            self.engine.every(cfg.start_s + cfg.tick_s, cfg.tick_s, self._tick, cfg.end_s)
        if timeline is None:
            self.engine.run(cfg.end_s)
        if self._serve_at_end:
            assert isinstance(self.serving, FastServing)
            if timeline is None:
                self.cluster.finish(cfg.end_s)
                timeline = self._cluster_timeline()
            self.serving.serve_timeline(timeline[0], timeline[1], cfg.end_s)
            self.serving.finish()
        else:
            self.serving.finish()
            self.cluster.finish(cfg.end_s)
        if self._oracle_need is not None:
            self._trace_from_timeline(self._cluster_timeline() if timeline is None else timeline)
            if self._progress is not None:
                self._progress(cfg.end_s)
        return self._result()

    def finish_with(self, last_t_s: float, ready_pod_s: float, under_s: float,
                    arrivals_at_tick: float, replica_ids: dict[int, int], trace_t: np.ndarray,
                    trace: np.ndarray) -> PolicyResult:
        """End a replay whose loop ran outside this object (simulator/fast_hpa.py), its
        cluster, serving and store already updated: take the loop's accumulators (served up
        to last_t_s, ready pod-seconds, under-provisioned seconds, arrivals at the last tick),
        the serving replica id of each ready pod and the per-tick trace (rows of ready, total,
        demand, floor), report progress at the end, and return the result."""
        self._last_t = last_t_s
        self._ready_pod_s = ready_pod_s
        self._under_s = under_s
        self._arrivals_at_tick = arrivals_at_tick
        self._rid = replica_ids
        self._trace_t = trace_t
        self._trace = trace
        if self._progress is not None:
            self._progress(self.cfg.end_s)
        return self._result()

    def _cluster_timeline(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(time, ready, total) after every change of the cluster, as arrays."""
        times, ready, total = np.array(self.cluster.timeline, dtype=float).reshape(-1, 3).T
        return times, ready, total

    def _trace_from_timeline(self, timeline: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Per-tick ready/total pods (from the timeline of changes) and true demand."""
        cfg = self.cfg
        ticks = cfg.start_s + cfg.tick_s * np.arange(1, int(np.ceil(cfg.duration_s
                                                                    / cfg.tick_s - 1e-9)))
        times, ready_at, total_at = timeline
        at = np.searchsorted(times, ticks, side="right") - 1
        ready, total = ready_at[at], total_at[at]
        per_s = self.view.per_second
        k = int(round(cfg.tick_s))
        cum = np.concatenate(([0.0], np.cumsum(per_s)))
        idx = np.minimum((ticks - cfg.start_s).astype(int), per_s.size)
        demand = (cum[idx] - cum[np.maximum(idx - k, 0)]) / cfg.tick_s
        self._under_s = float(np.sum(demand > ready * self.view.capacity_rps_per_replica)
                              * cfg.tick_s)
        self._trace_t = ticks
        self._trace = np.column_stack([ready, total, demand, np.zeros(ticks.size)])

    def _oracle_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The oracle's pods as (created_s, ready_s, deleted_s) arrays, in creation order."""
        cfg = self.cfg
        need = self._oracle_need
        assert need is not None
        runs = int(need[0]) + int(np.maximum(np.diff(need), 0).sum())  # pods the plan starts
        draws = self.profile.sample_cold_start_s(
            np.random.default_rng(cold_start_seed(cfg.seed)), runs + 16)
        return plan_arrays(need, cfg.tick_s, cfg.start_s, draws)

    def _planned_oracle_pods(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What _schedule_oracle's events do to the cluster (without pod failures), computed
        from the plan at once: billed pod-seconds, cold starts and the (time, ready, total)
        timeline. Events run in (time, scheduling order) before the end, as the engine runs
        them: a pod starts at its creation (ready at once when its plan says it was ready by the
        start), becomes ready at its ready time (always before its deletion), and is deleted."""
        cfg, cluster = self.cfg, self.cluster
        start, end = cfg.start_s, cfg.end_s
        planned = np.column_stack(self._oracle_plan())
        created = np.maximum(planned[:, 0], start)
        warm = planned[:, 1] <= start
        exists = created < end
        created, warm, planned = created[exists], warm[exists], planned[exists]
        ready_s = np.where(warm, created, planned[:, 1])
        cold = ~warm & (ready_s < end)
        gone = planned[:, 2] < end
        order = np.arange(created.size)
        # cold starts in the order the engine records them: by ready time, then creation
        by_ready = np.lexsort((order[cold], ready_s[cold]))
        cluster.cold_starts_s = (ready_s[cold] - created[cold])[by_ready].tolist()
        # billed: deletions in event order, then the pods alive at the end in creation order
        by_delete = np.lexsort((order[gone], planned[gone, 2]))
        billed = 0.0
        for d, c in zip(planned[gone, 2][by_delete].tolist(), created[gone][by_delete].tolist(),
                        strict=True):
            billed += d - c
        for c in created[~gone].tolist():
            billed += end - c
        cluster.billed_pod_s = billed
        cluster.pods_created = int(created.size)
        times = np.concatenate([created, ready_s[cold], planned[gone, 2]])
        d_ready = np.concatenate([warm.astype(float), np.ones(int(cold.sum())),
                                  -np.ones(int(gone.sum()))])
        d_total = np.concatenate([np.ones(created.size), np.zeros(int(cold.sum())),
                                  -np.ones(int(gone.sum()))])
        by_time = np.argsort(times, kind="stable")  # same-time changes: only the sum matters
        return times[by_time], np.cumsum(d_ready[by_time]), np.cumsum(d_total[by_time])

    def _schedule_oracle(self) -> None:
        cfg = self.cfg
        for planned in map(PlannedPod, *(a.tolist() for a in self._oracle_plan())):
            created = max(planned.created_s, cfg.start_s)
            self.engine.schedule(created, self._oracle_start, created, planned)

    def _oracle_start(self, created_s: float, planned: PlannedPod) -> None:
        if planned.ready_s <= self.cfg.start_s:
            self.cluster.start_ready(1, created_s)
            pod = self.cluster.pods[-1]
        else:
            pod = self.cluster.start_at(created_s, planned.ready_s)
        if planned.deleted_s < self.cfg.end_s:
            self.engine.schedule(planned.deleted_s, self.cluster.delete, pod, planned.deleted_s)

    def _result(self) -> PolicyResult:
        serving = self.serving
        trace = np.asarray(self._trace, dtype=float).reshape(-1, 4)
        res = PolicyResult(policy=self.spec.name, params=self.params, fidelity=self.cfg.fidelity,
                           label=str(self.spec))
        res.requests = int(round(serving.arrived))
        res.within_slo = serving.within_slo
        res.replica_hours = self.cluster.billed_pod_s / 3600.0
        res.price_per_replica_hour = self.profile.price_per_replica_hour
        res.cold_starts = len(self.cluster.cold_starts_s)
        res.pod_failures = self.cluster.failures
        res.scale_events = self.cluster.scale_events
        res.under_provisioned_s = self._under_s
        res.p50_ms, res.p95_ms, res.p99_ms = (serving.latency_percentile_s(q) * 1e3
                                              for q in (50, 95, 99))
        res.latency_cdf_ms = serving.latency_cdf_ms()
        res.reasons = self.reasons
        res.t_s = np.asarray(self._trace_t)
        res.ready, res.total, res.demand_rps, res.floor = (trace[:, i] for i in range(4))
        return res


def cold_start_seed(seed: int) -> np.random.SeedSequence:
    """Seed of the cold-start draws: every policy and the oracle get the same sequence."""
    return np.random.SeedSequence([seed, 2])
