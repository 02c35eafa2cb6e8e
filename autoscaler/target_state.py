"""What the control loop keeps per target between ticks (`TargetState`), the record of each
decision (`DecisionRecord`), a target's key and its PromQL.

Not pure: TargetState is mutable and the loop changes it in place every tick; nothing here
reads a clock, the network or the disk. Rules:
- A target is keyed by (namespace, kind, name) (`key_of`).
- Its PromQL is the preset's with the target's own queries overriding it (`queries_for`);
  the what-if replay uses the same function, so the two cannot drift.
- A DecisionRecord is a frozen value with everything that explains the decision; the API
  exposes it as-is. Each target keeps the last `log_size` of them (a bounded deque).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoscaler.kube_actuator import ActuatorTarget
from autoscaler.lead_time import LeadTimeTracker
from autoscaler.metric_presets import (
    MetricQueries,
    TargetLabels,
    custom_queries,
    preset_queries,
)
from autoscaler.prometheus_source import HistoryReport, MetricTarget, TargetRef
from autoscaler.settings import TargetConfig
from forecasting.online import OnlineForecaster
from forecasting.types import Forecast, Series
from policies.predictive import PredictivePolicy
from policies.types import Decision

TargetKey = tuple[str, str, str]  # (namespace, kind, name)


@dataclass(frozen=True)
class DecisionRecord:
    """One decision with everything that explains it (exposed as-is by the API).

    inputs: the observation's values (rate, metrics age, replicas, HPA's count, history state).
    forecast_quantiles_rps: the forecast's maximum over the planning window per level.
    bounds: (min_replicas, max_replicas) applied. action: what was (or would be) written.
    """

    namespace: str
    name: str
    now_s: float
    reason: str
    floor: int | None
    replicas: int | None
    lead_time_s: float
    lead_time_source: str
    bounds: tuple[int, int]
    dry_run: bool
    acted: bool
    written: bool
    inputs: Mapping[str, Any] = field(default_factory=dict)
    forecast_quantiles_rps: Mapping[float, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    action: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    paused: bool = False


class TargetState:
    """Mutable per-target state the loop carries between ticks."""

    def __init__(self, config: TargetConfig, *, step_s: float, history_s: float,
                 lead_time: LeadTimeTracker, log_size: int, next_refit_s: float) -> None:
        self.config = config
        self.ref = TargetRef(config.namespace, config.name)
        self.metric_target = MetricTarget(self.ref, queries_for(config))
        self.actuator_target = ActuatorTarget(config.namespace, config.name, config.kind,
                                              config.mode, config.dry_run)
        # The loop decides when to refit (refit()); forecast() must never refit inside a tick.
        self.forecaster = OnlineForecaster(config.policy.forecaster, step_s=step_s,
                                           refit_every_s=math.inf, window_s=history_s)
        self.policy = PredictivePolicy(config.policy)
        self.policy_state = self.policy.initial_state()
        self.lead_time = lead_time
        self.fed_until_s: float | None = None  # end of the history given to the forecaster
        self.history_report: HistoryReport | None = None
        self.history = Series(np.empty(0), step_s)  # the observed rate, gaps as NaN
        self.last_decision: Decision | None = None
        self.last_forecast: Forecast | None = None  # the forecast the last decision used
        self.paused = False  # paused: decide and log, never write (the floor stays as it is)
        self.pending_restore: ActuatorTarget | None = None  # an object owed its user minimum
        self.placeholders_held = False  # placeholders may exist: remove them when turned off
        self.next_refit_s = next_refit_s
        self.log: deque[DecisionRecord] = deque(maxlen=log_size)


def queries_for(config: TargetConfig) -> MetricQueries:
    """The target's PromQL: its own queries override the preset's."""
    if config.preset is not None:
        q = preset_queries(config.preset, labels=_labels(config))
        overrides = {k: v for k, v in (("request_rate", config.request_rate_query),
                                       ("gpu_util", config.gpu_util_query)) if v is not None}
        if overrides:  # a user's rate has no matching reset / sample-age checks
            q = MetricQueries(**{**q.__dict__, **overrides, "counter_resets": None,
                                 "last_sample": None})
        return q
    assert config.request_rate_query is not None  # settings require a preset or a query
    return custom_queries(config.request_rate_query, config.gpu_util_query,
                          labels=_labels(config))


def _labels(config: TargetConfig) -> TargetLabels:
    workload = "statefulset" if config.kind == "StatefulSet" else "deployment"
    return TargetLabels(workload=workload, workload_kind=config.kind)  # type: ignore[arg-type]


def key_of(config: TargetConfig) -> TargetKey:
    return (config.namespace, config.kind, config.name)
