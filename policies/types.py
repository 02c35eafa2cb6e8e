"""Values that flow into and out of every policy. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from forecasting.types import Forecast, Series


@dataclass(frozen=True)
class PodMetrics:
    """What the HPA's replica calculator knows about the target's pods, in aggregate.

    The HPA algorithm (replica_calculator.go) only ever uses these counts and the sum of the
    ready pods' metric, so a tuple of aggregates is a faithful, cheap representation.

    ready_count: pods that count as ready and have a metric sample.
    ready_util_sum: sum over those pods of the per-pod utilization (fraction of batch slots busy,
        0..1, what GPU utilization tracks).
    unready_count: pods that are not yet ready (pending, starting, loading weights).
    missing_count: ready pods without a metric sample.
    """

    ready_count: int = 0
    ready_util_sum: float = 0.0
    unready_count: int = 0
    missing_count: int = 0

    @property
    def mean_util(self) -> float | None:
        return self.ready_util_sum / self.ready_count if self.ready_count else None


@dataclass(frozen=True)
class Observation:
    """Everything a policy may know at ``now_s``: what Prometheus and the API server show.

    rate_rps: request rate as Prometheus' rate() over its window, with the query lag already
        applied; None when the series is stale or missing.
    rate_history: the observed rate at a fixed step, ending at the newest observed sample
        (never the true arrival rate).
    pods: per-pod utilization aggregates (see PodMetrics).
    spec_replicas: the workload's current spec.replicas (what the HPA calls currentReplicas).
    ready_replicas: pods Ready now.
    hpa_replicas: the HPA's own desired count at its last sync, None where no HPA runs beside.
    lead_time_s: start-to-ready time to plan with (a high quantile of the measured ones).
    metrics_age_s: age of the newest sample behind rate_rps.
    rate_window_s: the window rate_rps averages over (its centre is metrics_age_s +
        rate_window_s / 2 old).
    """

    now_s: float
    rate_rps: float | None
    rate_history: Series
    pods: PodMetrics
    spec_replicas: int
    ready_replicas: int
    hpa_replicas: int | None = None
    lead_time_s: float = 0.0
    metrics_age_s: float = 0.0
    rate_window_s: float = 0.0


@dataclass(frozen=True)
class Decision:
    """A policy's answer with its reason, logged and exposed as-is.

    replicas: the count this policy wants the workload to run (within its bounds).
    floor: for policies that act beside an HPA, the minReplicas to give that HPA; None otherwise.
    reason: a short machine-readable reason ("lead-time-scale-up", "hold: metrics stale", ...).
    details: inputs and intermediate values that explain the decision (forecast quantile used,
        lead time, bounds applied, ...).
    """

    replicas: int
    reason: str
    floor: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class Policy(Protocol):
    """A decision rule: ``decide`` is pure; state is an explicit value passed in and returned."""

    name: str

    @property
    def params(self) -> Mapping[str, Any]:
        """Every effective parameter value (for reports and --json)."""
        ...

    def initial_state(self) -> Any: ...

    def decide(
        self, obs: Observation, forecast: Forecast | None, state: Any, now_s: float
    ) -> tuple[Decision, Any]: ...
