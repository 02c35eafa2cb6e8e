"""The HPA model against cases worked by hand from the Go controller (replica_calculator.go,
horizontal.go), plus invariants. Targets of 0.5 keep the arithmetic exact in binary."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from forecasting.types import Series
from policies.hpa import (
    HPABehavior,
    HPAConfig,
    HPAPolicy,
    HPAScalingRules,
    HPAState,
    external_average_replicas,
    hpa_desired,
    pods_metric_replicas,
)
from policies.stabilization import ScalingPolicy
from policies.types import Observation, PodMetrics

T = 0.5  # target utilization used by the hand-worked cases


def pm(ready: int, usage: float, unready: int = 0, missing: int = 0) -> PodMetrics:
    return PodMetrics(ready, ready * usage, unready, missing)


# --- calcPlainMetricReplicas -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pods", "current", "expected"),
    [
        pytest.param(pm(4, 0.52), 4, 4, id="within-tolerance-keeps-current"),
        pytest.param(pm(4, 0.75), 4, 6, id="plain-scale-up-ceil-ratio-x-ready"),
        pytest.param(pm(4, 0.25), 4, 2, id="plain-scale-down"),
        # ratio 1.8 > 1 with an unready pod: it counts as 0 -> 3.6/5/0.5 = 1.44 -> ceil(7.2) = 8
        pytest.param(pm(4, 0.9, unready=1), 5, 8, id="scale-up-unready-counts-zero"),
        # ratio 1.3; 2 unready at 0: 1.3/4/0.5 = 0.65 < 1 -> direction flips -> keep 4
        # (ignoring them would give ceil(1.3 * 2) = 3)
        pytest.param(pm(2, 0.65, unready=2), 4, 4, id="unready-flips-direction-keeps-current"),
        # ratio 1.2; 2 unready at 0: 0.6/3/0.5 = 0.4 -> flip -> keep 3 (naive: ceil(1.2) = 2)
        pytest.param(pm(1, 0.6, unready=2), 3, 3, id="direction-flip-keeps-current"),
        # ratio 0.2 < 1: missing pods count as the target: (0.2 + 2 x 0.5)/4/0.5 = 0.6 -> ceil(2.4)
        pytest.param(pm(2, 0.1, missing=2), 4, 3, id="scale-down-missing-count-as-target"),
        # ratio 0.8; missing at target: (0.4 + 1.5)/4/0.5 = 0.95 -> within tolerance -> keep
        pytest.param(pm(1, 0.4, missing=3), 4, 4, id="missing-pulls-into-tolerance"),
        # ratio 2 > 1: a missing pod counts as 0: 3/4/0.5 = 1.5 -> ceil(6) = 6
        pytest.param(pm(3, 1.0, missing=1), 4, 6, id="scale-up-missing-count-zero"),
        # ratio 2; 2 missing at 0 -> 2/4/0.5 = 1.0 -> within tolerance -> keep 4
        pytest.param(pm(2, 1.0, missing=2), 4, 4, id="scale-up-missing-into-tolerance"),
        # ratio 1.8; missing at 0: 1.8/3/0.5 = 1.2 -> ceil(3.6) = 4 < current 5 -> keep 5
        pytest.param(pm(2, 0.9, missing=1), 5, 5, id="metrics-length-flip-keeps-current"),
        pytest.param(pm(0, 0.0, unready=3), 3, None, id="no-ready-metric-invalid"),
    ],
)
def test_pods_metric_replicas(pods: PodMetrics, current: int, expected: int | None) -> None:
    got, _ = pods_metric_replicas(pods, T, current, 0.1, 0.1)
    assert got == expected


@pytest.mark.parametrize(
    ("total", "status", "expected"),
    [
        pytest.param(950.0, 5, 10, id="ceil-total-over-average"),
        pytest.param(520.0, 5, 5, id="within-tolerance-keeps-status-count"),
        pytest.param(100.0, 5, 1, id="scale-down"),
        pytest.param(150.0, 0, 2, id="from-zero-pods"),
        pytest.param(0.0, 0, 0, id="zero-stays-zero"),
    ],
)
def test_external_average_value(total: float, status: int, expected: int) -> None:
    assert external_average_replicas(total, 100.0, status, 0.1, 0.1) == expected


# --- reconcileAutoscaler / normalization: one sync -------------------------------------------

NO_DOWN_WINDOW = HPABehavior(
    scale_down=HPAScalingRules(0.0, (ScalingPolicy("Percent", 100, 15.0),), "Max")
)


def cfg(**kw) -> HPAConfig:
    kw.setdefault("target_utilization", T)
    return HPAConfig(**kw)


def load_for(desired: int, ready: int) -> PodMetrics:
    """Pods whose total usage asks for exactly `desired` replicas at target T."""
    return PodMetrics(ready, desired * T)


@pytest.mark.parametrize(
    ("config", "pods", "spec", "kwargs", "replicas", "reason"),
    [
        pytest.param(cfg(), load_for(20, 3), 3, {}, 7, "ScaleUpLimit", id="up-limit-3-max(3+4,6)"),
        pytest.param(
            cfg(), load_for(40, 10), 10, {}, 20, "ScaleUpLimit", id="up-limit-10-max(14,20)"
        ),
        pytest.param(
            cfg(behavior=None), load_for(20, 3), 3, {}, 6, "ScaleUpLimit", id="legacy-3-to-6"
        ),
        pytest.param(
            cfg(behavior=None), load_for(20, 1), 1, {}, 4, "ScaleUpLimit", id="legacy-1-to-4"
        ),
        pytest.param(
            cfg(behavior=None), load_for(40, 10), 10, {}, 20, "ScaleUpLimit", id="legacy-10-to-20"
        ),
        pytest.param(
            cfg(), load_for(6, 4), 4, {}, 6, "DesiredWithinRange", id="unlimited-scale-up"
        ),
        pytest.param(
            cfg(max_replicas=60), load_for(200, 50), 50, {}, 60, "TooManyReplicas", id="clamp-max"
        ),
        pytest.param(
            cfg(max_replicas=100),
            load_for(5, 120),
            120,
            {},
            100,
            "TooManyReplicas",
            id="current-above-max",
        ),
        pytest.param(
            cfg(min_replicas=3, behavior=NO_DOWN_WINDOW),
            load_for(1, 5),
            5,
            {},
            3,
            "TooFewReplicas",
            id="clamp-min",
        ),
        pytest.param(
            cfg(),
            load_for(20, 3),
            3,
            {"min_replicas": 8},
            8,
            "TooFewReplicas",
            id="floor-jumps-past-rate-limit",
        ),
        pytest.param(
            cfg(behavior=NO_DOWN_WINDOW),
            load_for(2, 10),
            10,
            {"min_replicas": 8},
            8,
            "TooFewReplicas",
            id="floor-stops-scale-down",
        ),
        pytest.param(
            cfg(max_replicas=10),
            load_for(1, 3),
            3,
            {"min_replicas": 50},
            10,
            "TooFewReplicas",
            id="floor-clamped-to-max",
        ),
        pytest.param(
            cfg(),
            load_for(1, 4),
            4,
            {},
            4,
            "ScaleDownStabilized",
            id="first-sync-initial-rec-blocks-down",
        ),
        pytest.param(
            cfg(),
            PodMetrics(0, 0.0, 3, 0),
            3,
            {},
            3,
            "FailedGetPodsMetric",
            id="missing-metric-holds",
        ),
        pytest.param(cfg(), PodMetrics(), 0, {}, 0, "ScalingDisabled", id="zero-replicas-disabled"),
        pytest.param(
            cfg(target_utilization=None, target_rps_per_replica=100.0, min_replicas=0),
            PodMetrics(),
            0,
            {"external_total": 150.0},
            2,
            "DesiredWithinRange",
            id="external-from-zero",
        ),
        pytest.param(
            cfg(target_rps_per_replica=100.0),
            load_for(4, 5),
            5,
            {"external_total": 900.0},
            9,
            "DesiredWithinRange",
            id="max-over-metrics",
        ),
        pytest.param(
            cfg(target_rps_per_replica=100.0, behavior=NO_DOWN_WINDOW),
            load_for(2, 5),
            5,
            {"external_total": None},
            5,
            "FailedGetExternalMetric",
            id="invalid-metric-blocks-scale-down",
        ),
        pytest.param(
            cfg(target_rps_per_replica=100.0),
            load_for(8, 5),
            5,
            {"external_total": None},
            8,
            "DesiredWithinRange",
            id="invalid-metric-allows-scale-up",
        ),
    ],
)
def test_one_sync(config, pods, spec, kwargs, replicas, reason) -> None:
    d, _ = hpa_desired(config, pods, spec, HPAState(), 0.0, **kwargs)
    assert (d.replicas, d.reason) == (replicas, reason)


def run(config: HPAConfig, desire_at, spec: int, times, **kw) -> list[tuple[float, int, str]]:
    """Sync at each time with spec following the HPA; desire_at(t) -> wanted replicas."""
    state, out = HPAState(), []
    for t in times:
        d, state = hpa_desired(config, load_for(desire_at(t), spec), spec, state, t, **kw)
        spec = d.replicas
        out.append((t, spec, d.reason))
    return out


def at(trace, t: float) -> int:
    return next(r for tt, r, _ in trace if tt == t)


def test_scale_down_stabilization_keeps_max_over_300s() -> None:
    # t=0: 10 wanted; 15..90: 6; from 105: 2. The max over (t-300, t] rules the count.
    def desire(t):
        return 10 if t == 0 else 6 if t <= 90 else 2

    trace = run(cfg(), desire, 10, [15.0 * k for k in range(40)])
    assert at(trace, 285.0) == 10  # the t=0 recommendation of 10 is still inside the window
    assert at(trace, 300.0) == 6  # it left (Go: After(cutoff) is strict), the 6s remain
    assert at(trace, 375.0) == 6
    assert at(trace, 390.0) == 2  # the last 6 (t=90) left at 390
    assert {r for t, _, r in trace if 15 <= t < 390} == {"ScaleDownStabilized"}


def test_legacy_stabilization_window_is_inclusive() -> None:
    trace = run(
        cfg(behavior=None), lambda t: 10 if t == 0 else 2, 10, [15.0 * k for k in range(25)]
    )
    assert at(trace, 300.0) == 10  # legacy drops only samples Before(cutoff)
    assert at(trace, 315.0) == 2


def test_scale_up_window_takes_min() -> None:
    b = HPABehavior(scale_up=HPAScalingRules(60.0, (ScalingPolicy("Percent", 900, 15.0),), "Max"))
    desires = {0.0: 4, 15.0: 12, 30.0: 8, 45.0: 12, 60.0: 12, 75.0: 12, 90.0: 12}
    trace = run(cfg(behavior=b), desires.__getitem__, 4, sorted(desires))
    # the up bound is the min of the recommendations in (t-60, t]; the initial 4s leave at t=60
    assert [r for _, r, _ in trace] == [4, 4, 4, 4, 8, 8, 12]
    assert trace[1][2] == "ScaleUpStabilized"


def test_scale_down_rate_limit_pods_per_period() -> None:
    b = HPABehavior(scale_down=HPAScalingRules(0.0, (ScalingPolicy("Pods", 1, 60.0),), "Max"))
    trace = run(cfg(behavior=b), lambda t: 2, 10, [15.0 * k for k in range(9)])
    # one pod per 60 s: the event at t=0 counts until t=60 (exclusive cutoff)
    assert [r for _, r, _ in trace] == [9, 9, 9, 9, 8, 8, 8, 8, 7]
    assert trace[1][2] == "ScaleDownLimit"


def test_percent_scale_down_truncates() -> None:
    b = HPABehavior(scale_down=HPAScalingRules(0.0, (ScalingPolicy("Percent", 50, 15.0),), "Max"))
    d, _ = hpa_desired(cfg(behavior=b), load_for(1, 5), 5, HPAState(), 0.0)
    assert d.replicas == 2  # int(5 x 0.5) = 2


def test_scale_events_limit_after_floor_jump() -> None:
    # the floor lifts 3 -> 8 (event +5); 10 s later the period started at 3: max(3+4, 6) < 8
    config = cfg()
    d, s = hpa_desired(config, load_for(20, 3), 3, HPAState(), 0.0, min_replicas=8)
    assert d.replicas == 8
    d, s2 = hpa_desired(config, load_for(20, 8), 8, s, 10.0, min_replicas=8)
    assert (d.replicas, d.reason) == (8, "ScaleUpLimit")
    d, _ = hpa_desired(config, load_for(20, 8), 8, s2, 15.0, min_replicas=8)
    assert d.replicas == 16  # the event at t=0 has left the 15 s period: max(8+4, 16)


def test_invalid_metric_does_not_record() -> None:
    _, s = hpa_desired(cfg(), PodMetrics(0, 0.0, 2, 0), 2, HPAState(), 0.0)
    assert s.recommendations == ((0.0, 2),)  # only recordInitialRecommendation


def test_policy_protocol() -> None:
    p = HPAPolicy(cfg())
    assert p.name == "hpa"
    assert p.params["scale_up_policies"] == "Pods:4/15s,Percent:100/15s"
    assert p.params["scale_down_window_s"] == 300.0
    obs = Observation(0.0, None, Series([], 15.0), load_for(6, 4), 4, 4)
    d, state = p.decide(obs, None, p.initial_state(), 0.0)
    assert d.replicas == 6 and isinstance(state, HPAState)


# --- properties --------------------------------------------------------------------------------

policies_st = st.builds(
    ScalingPolicy,
    kind=st.sampled_from(["Pods", "Percent"]),
    value=st.integers(1, 200),
    period_s=st.sampled_from([15.0, 30.0, 60.0, 120.0]),
)
rules_st = st.builds(
    HPAScalingRules,
    stabilization_window_s=st.sampled_from([None, 0.0, 30.0, 300.0]),
    policies=st.lists(policies_st, min_size=1, max_size=3).map(tuple),
    select_policy=st.sampled_from(["Max", "Min", "Disabled"]),
)
behavior_st = st.one_of(
    st.none(),
    st.just(HPABehavior()),
    st.builds(HPABehavior, scale_up=rules_st, scale_down=rules_st),
)
pods_st = st.builds(
    PodMetrics,
    ready_count=st.integers(0, 60),
    ready_util_sum=st.floats(0, 60),
    unready_count=st.integers(0, 10),
    missing_count=st.integers(0, 5),
)


@settings(max_examples=150, deadline=None)
@given(
    behavior=behavior_st,
    min_r=st.integers(0, 10),
    span=st.integers(1, 60),
    spec=st.integers(1, 100),
    floors=st.lists(st.one_of(st.none(), st.integers(0, 80)), min_size=1, max_size=25),
    loads=st.lists(pods_st, min_size=1, max_size=25),
)
def test_always_within_bounds(behavior, min_r, span, spec, floors, loads) -> None:
    config = HPAConfig(
        target_utilization=0.6, min_replicas=min_r, max_replicas=min_r + span, behavior=behavior
    )
    state = HPAState()
    for k, pods in enumerate(loads):
        floor = floors[k % len(floors)]
        d, state = hpa_desired(config, pods, spec, state, 15.0 * k, min_replicas=floor)
        lo = min(config.min_replicas if floor is None else floor, config.max_replicas)
        if spec == 0 and lo != 0:
            assert (d.replicas, d.reason) == (0, "ScalingDisabled")
        else:
            assert lo <= d.replicas <= config.max_replicas
        spec = d.replicas


@settings(max_examples=100, deadline=None)
@given(
    k=st.integers(1, 5),
    period_s=st.sampled_from([15.0, 45.0, 60.0]),
    window_s=st.sampled_from([0.0, 30.0]),
    spec=st.integers(5, 80),
    loads=st.lists(st.floats(0, 1), min_size=2, max_size=30),
)
def test_scale_down_never_faster_than_policy(k, period_s, window_s, spec, loads) -> None:
    b = HPABehavior(scale_down=HPAScalingRules(window_s, (ScalingPolicy("Pods", k, period_s),)))
    config = HPAConfig(target_utilization=0.5, max_replicas=100, behavior=b)
    state, changes = HPAState(), []
    for i, u in enumerate(loads):
        t = 15.0 * i
        d, state = hpa_desired(config, pm(spec, u), spec, state, t)
        changes.append((t, d.replicas - spec))
        if d.replicas < spec:
            net_removed = -sum(c for tt, c in changes if tt > t - period_s)
            assert net_removed <= k
        spec = d.replicas


@settings(max_examples=100, deadline=None)
@given(behavior=behavior_st, pods=pods_st, spec=st.integers(0, 100), t=st.floats(0, 1e6))
def test_same_inputs_same_decision(behavior, pods, spec, t) -> None:
    config = HPAConfig(behavior=behavior)
    _, state = hpa_desired(config, pm(3, 0.2), 5, HPAState(), t - 30.0)
    a = hpa_desired(config, pods, spec, state, t)
    b = hpa_desired(config, pods, spec, state, t)
    assert a == b


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 40),
    u=st.floats(0.01, 1.0),
    target=st.sampled_from([0.5, 0.6, 0.7, 0.8]),
    legacy=st.booleans(),
)
def test_constant_load_converges_to_hpa_formula(n, u, target, legacy) -> None:
    work = Fraction(n) * Fraction(u)  # total busy slots' share, fixed; spread over the pods
    ratio0 = Fraction(u) / Fraction(target)
    assume(
        abs(ratio0 - 1) - Fraction(1, 10) > Fraction(1, 10**6)
        or abs(ratio0 - 1) < Fraction(1, 10) - Fraction(1, 10**6)
    )
    exact = work / Fraction(target)
    assume(exact - math.floor(exact) > Fraction(1, 10**6) or exact == math.floor(exact))
    expected = n if abs(ratio0 - 1) < Fraction(1, 10) else math.ceil(exact)
    # a rate-limited climb may stop early inside the tolerance band (the real HPA does too)
    assume(expected <= max(2 * n, 4))
    config = HPAConfig(target_utilization=target, behavior=None if legacy else HPABehavior())
    state, spec = HPAState(), n
    for i in range(60):  # 15 min: past the 5 min scale-down window and any rate limit
        d, state = hpa_desired(config, PodMetrics(spec, float(work)), spec, state, 15.0 * i)
        spec = d.replicas
    assert spec == expected
