"""The Kubernetes HorizontalPodAutoscaler (autoscaling/v2) decision rule as a pure function. Pure.

Mirrors kubernetes/kubernetes ``pkg/controller/podautoscaler``:

- ``replica_calculator.go``: ``calcPlainMetricReplicas`` (a Pods metric with an AverageValue
  target: the per-replica utilization, i.e. the busy share of the batch slots that GPU utilization
  tracks), ``groupPods`` (ready / unready / missing), the rebalance of unready and missing pods and
  the recomputed usage ratio, and ``GetExternalPerPodMetricReplicas`` (an External metric with an
  AverageValue target: ``ceil(total / target_average)``);
- ``horizontal.go``: ``reconcileAutoscaler`` (the min/max branches), ``computeReplicasForMetrics``
  (max over metrics; an invalid metric blocks scale-down), ``normalizeDesiredReplicas`` (legacy,
  no ``behavior``) and ``normalizeDesiredReplicasWithBehaviors`` with
  ``stabilizeRecommendationWithBehaviors`` and ``convertDesiredReplicasWithBehaviorRate``;
- ``pkg/apis/autoscaling/v2/defaults.go``: the default ``behavior``.

Deliberate differences, each harmless for a simulation:
- Go feeds the ratio with milli-quantized integers; we use floats and take ``ceil`` with a 1e-9
  guard so that an exact product such as 1.1 * 10 is not rounded up by representation error.
- Readiness comes pre-grouped in :class:`PodMetrics` (the simulator knows which pods are starting);
  the CPU-only initialization-period rules of ``groupPods`` do not apply to a Pods metric.
- The controller reads the wall clock; here ``now_s`` is an argument and the recommendation and
  scale-event histories are an explicit :class:`HPAState`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forecasting.types import Forecast
from policies.stabilization import (
    History,
    ScalingPolicy,
    SelectPolicy,
    record,
    scale_down_limit,
    scale_up_limit,
    stabilize,
    window_max,
)
from policies.types import Decision, Observation, PodMetrics

_CEIL_EPS = 1e-9
# legacy path (horizontal.go: scaleUpLimitFactor, scaleUpLimitMinimum)
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0


def _ceil(x: float) -> int:
    return math.ceil(x - _CEIL_EPS)


@dataclass(frozen=True)
class HPAScalingRules:
    """One direction of ``spec.behavior`` (``HPAScalingRules``)."""

    stabilization_window_s: float | None
    """Stabilization window in s; None = the controller flag downscale_stabilization_s (the
    scale-down default)."""
    policies: tuple[ScalingPolicy, ...]
    """Rate limits; several are combined by ``select_policy``."""
    select_policy: SelectPolicy = "Max"
    """"Max" = most permissive policy, "Min" = strictest, "Disabled" = no scaling this way."""
    tolerance: float | None = None
    """Per-direction tolerance (HPAConfigurableTolerance, 1.33+); None = HPAConfig.tolerance."""


DEFAULT_SCALE_UP = HPAScalingRules(
    stabilization_window_s=0.0,
    policies=(ScalingPolicy("Pods", 4, 15.0), ScalingPolicy("Percent", 100, 15.0)),
    select_policy="Max",
)
DEFAULT_SCALE_DOWN = HPAScalingRules(
    stabilization_window_s=None,
    policies=(ScalingPolicy("Percent", 100, 15.0),),
    select_policy="Max",
)


@dataclass(frozen=True)
class HPABehavior:
    """``spec.behavior``; the defaults are those of ``pkg/apis/autoscaling/v2/defaults.go``."""

    scale_up: HPAScalingRules = DEFAULT_SCALE_UP
    """Scale-up rules; default window 0 s, {4 pods / 15 s, 100 % / 15 s}, select Max."""
    scale_down: HPAScalingRules = DEFAULT_SCALE_DOWN
    """Scale-down rules; default window = downscale_stabilization_s, {100 % / 15 s}, select Max."""


@dataclass(frozen=True)
class HPAConfig:
    """An HPA object plus the controller flags that shape its decisions."""

    target_utilization: float | None = 0.7
    """AverageValue target of the per-replica utilization metric (busy share of batch slots,
    0..1); default 0.7; None = no such metric (external metric only)."""
    tolerance: float = 0.1
    """--horizontal-pod-autoscaler-tolerance: ratios within 1 +/- this keep the count; default 0.1."""
    min_replicas: int = 1
    """spec.minReplicas; default 1."""
    max_replicas: int = 100
    """spec.maxReplicas; default 100."""
    sync_period_s: float = 15.0
    """--horizontal-pod-autoscaler-sync-period in s: how often the caller runs the HPA; default 15."""
    behavior: HPABehavior | None = field(default_factory=HPABehavior)
    """spec.behavior; default = the API defaults; None = the legacy path (no behavior)."""
    target_rps_per_replica: float | None = None
    """AverageValue target of an External request-rate metric in req/s per replica; default None
    (no external metric)."""
    downscale_stabilization_s: float = 300.0
    """--horizontal-pod-autoscaler-downscale-stabilization in s; default 300."""

    def __post_init__(self) -> None:
        if self.target_utilization is None and self.target_rps_per_replica is None:
            raise ValueError("an HPA needs at least one metric target")
        for name in ("target_utilization", "target_rps_per_replica"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.target_utilization is not None and self.target_utilization > 1:
            # the busy share of the slots never exceeds 1: such an HPA could never scale up
            raise ValueError(f"target_utilization must be at most 1, got {self.target_utilization}")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if self.tolerance < 0 or self.sync_period_s <= 0 or self.downscale_stabilization_s < 0:
            raise ValueError("tolerance and downscale_stabilization_s >= 0, sync_period_s > 0")


@dataclass(frozen=True)
class HPAState:
    """What the controller keeps between syncs for one HPA, bounded to the longest window.

    recommendations: (t_s, unstabilized desired count) pairs, oldest first.
    up_events / down_events: (t_s, replicas added / removed) of past rescales (behavior only).
    initialized: whether recordInitialRecommendation has run.
    """

    recommendations: History = ()
    up_events: History = ()
    down_events: History = ()
    initialized: bool = False


# ---------------------------------------------------------------------------------------------
# replica_calculator.go


def _within(ratio: float, tol_up: float, tol_down: float) -> bool:
    # |1 - ratio| <= tolerance, split by direction as in the 1.33 `tolerances.isWithin`
    return 1.0 - ratio <= tol_down and ratio - 1.0 <= tol_up


def pods_metric_replicas(
    pods: PodMetrics, target: float, current: int, tol_up: float, tol_down: float
) -> tuple[int | None, dict[str, Any]]:
    """Proposal of a Pods metric with an AverageValue target (``calcPlainMetricReplicas``).

    Returns (None, info) when no ready pod has a metric ("did not receive metrics for targeted
    pods"). Unready pods count as 0 only on a scale-up; missing pods count as exactly the target on
    a scale-down and 0 on a scale-up; if the recomputed ratio falls inside the tolerance or flips
    direction, or the larger pod count flips the direction of the result, the count stays.
    """
    if pods.ready_count <= 0:
        return None, {}
    usage = pods.ready_util_sum / pods.ready_count
    ratio = usage / target
    info: dict[str, Any] = {"usage": usage, "ratio": ratio}
    scale_up_with_unready = pods.unready_count > 0 and ratio > 1.0
    if not scale_up_with_unready and pods.missing_count == 0:
        if _within(ratio, tol_up, tol_down):
            return current, info
        return _ceil(ratio * pods.ready_count), info
    total, n = pods.ready_util_sum, pods.ready_count
    if pods.missing_count > 0:
        if ratio < 1.0:
            total += pods.missing_count * target
            n += pods.missing_count
        elif ratio > 1.0:
            n += pods.missing_count
    if scale_up_with_unready:
        n += pods.unready_count
    new_ratio = (total / n) / target
    info["new_ratio"] = new_ratio
    if (
        _within(new_ratio, tol_up, tol_down)
        or (ratio < 1.0 < new_ratio)
        or (ratio > 1.0 > new_ratio)
    ):
        return current, info
    proposal = _ceil(new_ratio * n)
    if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
        return current, info
    return proposal, info


def external_average_replicas(
    total: float, target_average: float, status_replicas: int, tol_up: float, tol_down: float
) -> int:
    """Proposal of an External metric with an AverageValue target
    (``GetExternalPerPodMetricReplicas``): ``ceil(total / target_average)`` unless the per-pod
    average is within tolerance of the target, in which case the status count stays."""
    if status_replicas <= 0:
        # Go divides by zero: 0/0 is NaN (kept), x/0 is +Inf (outside tolerance)
        return 0 if total == 0 else _ceil(total / target_average)
    ratio = total / (target_average * status_replicas)
    if _within(ratio, tol_up, tol_down):
        return status_replicas
    return _ceil(total / target_average)


# ---------------------------------------------------------------------------------------------
# horizontal.go


def _tolerances(config: HPAConfig) -> tuple[float, float]:
    b = config.behavior
    if b is None:
        return config.tolerance, config.tolerance
    up = b.scale_up.tolerance
    down = b.scale_down.tolerance
    return (
        config.tolerance if up is None else up,
        config.tolerance if down is None else down,
    )


def _windows(config: HPAConfig) -> tuple[float, float]:
    b = config.behavior
    if b is None:
        return 0.0, config.downscale_stabilization_s
    down = b.scale_down.stabilization_window_s
    up = b.scale_up.stabilization_window_s
    return (
        config.downscale_stabilization_s if up is None else up,
        config.downscale_stabilization_s if down is None else down,
    )


def _normalize_legacy(
    config: HPAConfig, state: HPAState, current: int, desired: int, min_r: int, now_s: float
) -> tuple[int, str, str, HPAState, int]:
    """``normalizeDesiredReplicas``: max over the downscale window, then
    ``convertDesiredReplicasWithRules`` (scale-up at most max(2 x current, 4), then min/max)."""
    window = config.downscale_stabilization_s
    stabilized = window_max(state.recommendations, now_s, window, desired, inclusive=True)
    recs = record(state.recommendations, now_s, desired, window)
    able = "ScaleDownStabilized" if stabilized != desired else "ReadyForNewScale"
    up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if config.max_replicas > up_limit:
        max_allowed, limit_reason = up_limit, "ScaleUpLimit"
    else:
        max_allowed, limit_reason = config.max_replicas, "TooManyReplicas"
    if stabilized < min_r:
        out, limited = min_r, "TooFewReplicas"
    elif stabilized > max_allowed:
        out, limited = max_allowed, limit_reason
    else:
        out, limited = stabilized, "DesiredWithinRange"
    new_state = HPAState(recs, state.up_events, state.down_events, True)
    return out, able, limited, new_state, stabilized


def _normalize_with_behavior(
    config: HPAConfig,
    behavior: HPABehavior,
    state: HPAState,
    current: int,
    desired: int,
    min_r: int,
    now_s: float,
) -> tuple[int, str, str, HPAState, int]:
    """``normalizeDesiredReplicasWithBehaviors``: stabilize, then the period rate limits
    (``convertDesiredReplicasWithBehaviorRate``), which also apply min/max."""
    up_w, down_w = _windows(config)
    stabilized = stabilize(current, desired, state.recommendations, now_s, up_w, down_w)
    recs = record(state.recommendations, now_s, desired, max(up_w, down_w))
    if stabilized != desired:
        able = "ScaleUpStabilized" if desired >= current else "ScaleDownStabilized"
    else:
        able = "ReadyForNewScale"
    out, limited = stabilized, "DesiredWithinRange"
    if stabilized > current:
        rules = behavior.scale_up
        limit = scale_up_limit(
            current, state.up_events, state.down_events, rules.policies, rules.select_policy, now_s
        )
        limit = max(limit, current)  # no further scale-up until the period's events age out
        if config.max_replicas > limit:
            max_allowed, reason = limit, "ScaleUpLimit"
        else:
            max_allowed, reason = config.max_replicas, "TooManyReplicas"
        if stabilized > max_allowed:
            out, limited = max_allowed, reason
    elif stabilized < current:
        rules = behavior.scale_down
        limit = scale_down_limit(
            current, state.up_events, state.down_events, rules.policies, rules.select_policy, now_s
        )
        limit = min(limit, current)
        if min_r < limit:
            min_allowed, reason = limit, "ScaleDownLimit"
        else:
            min_allowed, reason = min_r, "TooFewReplicas"
        if stabilized < min_allowed:
            out, limited = min_allowed, reason
    new_state = HPAState(recs, state.up_events, state.down_events, True)
    return out, able, limited, new_state, stabilized


def _longest_period(rules: HPAScalingRules) -> float:
    return max((p.period_s for p in rules.policies), default=0.0)


def _store_scale_event(
    config: HPAConfig, state: HPAState, prev: int, new: int, now_s: float
) -> HPAState:
    """``storeScaleEvent``: only with a behavior; events older than the longest period of their
    direction can no longer count and are dropped."""
    b = config.behavior
    if b is None or new == prev:
        return state
    if new > prev:
        ups = record(state.up_events, now_s, new - prev, _longest_period(b.scale_up))
        return HPAState(state.recommendations, ups, state.down_events, state.initialized)
    downs = record(state.down_events, now_s, prev - new, _longest_period(b.scale_down))
    return HPAState(state.recommendations, state.up_events, downs, state.initialized)


def _metric_proposals(
    config: HPAConfig,
    pods: PodMetrics,
    current: int,
    external_total: float | None,
    tol_up: float,
    tol_down: float,
    details: dict[str, Any],
) -> tuple[int | None, str]:
    """``computeReplicasForMetrics``: max over valid proposals; (None, reason) when every metric
    is invalid or an invalid one would let the others scale down."""
    best: int | None = None
    n_metrics = n_invalid = 0
    first_invalid = ""
    if config.target_utilization is not None:
        n_metrics += 1
        proposal, info = pods_metric_replicas(
            pods, config.target_utilization, current, tol_up, tol_down
        )
        details.update(info)
        details["pods_metric_replicas"] = proposal
        if proposal is None:
            n_invalid += 1
            first_invalid = "FailedGetPodsMetric"
        else:
            best = proposal
    if config.target_rps_per_replica is not None:
        n_metrics += 1
        if external_total is None or not math.isfinite(external_total):
            n_invalid += 1
            first_invalid = first_invalid or "FailedGetExternalMetric"
            details["external_replicas"] = None
        else:
            status_replicas = pods.ready_count + pods.unready_count + pods.missing_count
            proposal = external_average_replicas(
                external_total, config.target_rps_per_replica, status_replicas, tol_up, tol_down
            )
            details["external_replicas"] = proposal
            if best is None or proposal > best:
                best = proposal
    if n_invalid >= n_metrics or (n_invalid > 0 and best is not None and best < current):
        return None, first_invalid
    return best, "ValidMetricFound"


def hpa_desired(
    config: HPAConfig,
    pods: PodMetrics,
    spec_replicas: int,
    state: HPAState,
    now_s: float,
    min_replicas: int | None = None,
    external_total: float | None = None,
) -> tuple[Decision, HPAState]:
    """One sync of the HPA (``reconcileAutoscaler``): the new desired count and the next state.

    ``spec_replicas`` is the target's spec.replicas (the controller's currentReplicas).
    ``min_replicas`` replaces spec.minReplicas for this sync (the predictive floor), clamped to
    [0, max_replicas] as API validation would. ``external_total`` is the External metric's value
    (req/s summed over the series) when ``config.target_rps_per_replica`` is set.
    A metric that cannot be computed holds the current count (reason "FailedGet...Metric").
    """
    min_r = config.min_replicas if min_replicas is None else min_replicas
    min_r = max(0, min(min_r, config.max_replicas))
    max_r = config.max_replicas
    current = spec_replicas
    if not state.initialized:
        # recordInitialRecommendation: the current count enters the history on the first sync
        state = HPAState(((now_s, current),), state.up_events, state.down_events, True)
    details: dict[str, Any] = {"current": current, "min_replicas": min_r, "max_replicas": max_r}

    if current == 0 and min_r != 0:
        return Decision(0, "ScalingDisabled", details=details), state
    if current > max_r:
        desired, reason = max_r, "TooManyReplicas"
        details["branch"] = "current-above-max"
    elif current < min_r:
        desired, reason = min_r, "TooFewReplicas"
        details["branch"] = "current-below-min"
    else:
        tol_up, tol_down = _tolerances(config)
        metric_desired, metric_reason = _metric_proposals(
            config, pods, current, external_total, tol_up, tol_down, details
        )
        if metric_desired is None:
            details["hold"] = "invalid metric: keep the current count"
            return Decision(current, metric_reason, details=details), state
        prenormalized = max(0, metric_desired)
        details["prenormalized"] = prenormalized
        if config.behavior is None:
            desired, able, limited, state, stabilized = _normalize_legacy(
                config, state, current, prenormalized, min_r, now_s
            )
        else:
            desired, able, limited, state, stabilized = _normalize_with_behavior(
                config, config.behavior, state, current, prenormalized, min_r, now_s
            )
        details.update(stabilized=stabilized, able_to_scale=able, scaling_limited=limited)
        # the most specific condition: a limit, else a stabilization, else within range
        if desired != stabilized:
            reason = limited
        elif able != "ReadyForNewScale":
            reason = able
        else:
            reason = "DesiredWithinRange"
    if desired != current:
        state = _store_scale_event(config, state, current, desired, now_s)
    return Decision(desired, reason, details=details), state


def behavior_params(behavior: HPABehavior | None, downscale_s: float) -> dict[str, Any]:
    """A flat, printable view of a behavior (for Policy.params)."""
    if behavior is None:
        return {"behavior": "legacy"}
    out: dict[str, Any] = {"behavior": "v2"}
    for name, rules in (("scale_up", behavior.scale_up), ("scale_down", behavior.scale_down)):
        w = rules.stabilization_window_s
        out[f"{name}_window_s"] = downscale_s if w is None else w
        out[f"{name}_policies"] = ",".join(
            f"{p.kind}:{p.value}/{p.period_s:g}s" for p in rules.policies
        )
        out[f"{name}_select"] = rules.select_policy
        out[f"{name}_tolerance"] = rules.tolerance
    return out


class HPAPolicy:
    """The HPA as a :class:`policies.types.Policy`: call ``decide`` every ``sync_period_s``."""

    name = "hpa"

    def __init__(self, config: HPAConfig | None = None) -> None:
        self.config = config if config is not None else HPAConfig()

    @property
    def params(self) -> Mapping[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "target_utilization": c.target_utilization,
            "tolerance": c.tolerance,
            "min_replicas": c.min_replicas,
            "max_replicas": c.max_replicas,
            "sync_period_s": c.sync_period_s,
            "target_rps_per_replica": c.target_rps_per_replica,
            "downscale_stabilization_s": c.downscale_stabilization_s,
        }
        out.update(behavior_params(c.behavior, c.downscale_stabilization_s))
        return out

    def initial_state(self) -> HPAState:
        return HPAState()

    def decide(
        self, obs: Observation, forecast: Forecast | None, state: HPAState, now_s: float
    ) -> tuple[Decision, HPAState]:
        external = obs.rate_rps if self.config.target_rps_per_replica is not None else None
        return hpa_desired(
            self.config, obs.pods, obs.spec_replicas, state, now_s, external_total=external
        )
