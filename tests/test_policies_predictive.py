"""The predictive floor: rules as named cases, invariants as hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.types import Forecast, Series
from policies.predictive import PredictiveConfig, PredictivePolicy, PredictiveState, size_for
from policies.types import Observation, PodMetrics

CAP = 100.0  # req/s per replica at full utilization


def forecast(values: list[float], start_s: float = 0.0, step_s: float = 60.0,
             spread: float = 0.1) -> Forecast:
    mean = np.asarray(values, dtype=float)
    return Forecast(start_s, step_s, mean, {0.5: mean, 0.9: mean * (1 + spread),
                                            0.95: mean * (1 + 1.5 * spread),
                                            0.99: mean * (1 + 2 * spread)}, model="test")


def obs(now_s: float, rate: float | None, hpa: int | None = None, lead_s: float = 120.0,
        spec: int = 5, age_s: float = 15.0) -> Observation:
    return Observation(now_s=now_s, rate_rps=rate, rate_history=Series(np.zeros(0), 60.0),
                       pods=PodMetrics(spec, 0.5 * spec, 0, 0), spec_replicas=spec,
                       ready_replicas=spec, hpa_replicas=hpa, lead_time_s=lead_s,
                       metrics_age_s=age_s)


def policy(**kw: object) -> PredictivePolicy:
    base = dict(capacity_rps_per_replica=CAP, target_utilization=0.8, quantile=0.9,
                min_replicas=1, max_replicas=50)
    base.update(kw)
    return PredictivePolicy(PredictiveConfig(**base))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "lead_s", "expected_floor"),
    [
        # peak of 720 req/s in the step at 180 s, inside now + lead + tick = 0..215 s:
        # q0.9 = 792 -> ceil(792 / 80) = 10
        pytest.param([400, 400, 400, 720, 400], 200.0, 10, id="peak-inside-lead-window"),
        # the same peak beyond now + lead + tick (0..135 s) is not bought yet: 440/80 -> 6
        pytest.param([400, 400, 400, 720, 400], 120.0, 6, id="peak-beyond-lead-window"),
        pytest.param([0, 0, 0], 120.0, 1, id="no-demand-keeps-min"),
        pytest.param([10_000, 10_000], 120.0, 50, id="capped-at-max"),
    ],
)
def test_sizes_for_quantile_over_lead_window(values: list[float], lead_s: float,
                                             expected_floor: int) -> None:
    p = policy()
    decision, _ = p.decide(obs(0.0, rate=values[0], lead_s=lead_s), forecast(values),
                           p.initial_state(), 0.0)
    assert decision.floor == expected_floor


def test_observed_rate_is_a_lower_bound_on_the_plan() -> None:
    p = policy()
    decision, _ = p.decide(obs(0.0, rate=800.0), forecast([100, 100, 100]),
                           p.initial_state(), 0.0)
    assert decision.floor == math.ceil(800 / 80)


@pytest.mark.parametrize(
    ("rate", "age_s", "reason"),
    [
        pytest.param(None, 15.0, "hold: metrics stale", id="missing-metric-holds"),
        pytest.param(500.0, 600.0, "hold: metrics stale", id="old-metric-holds"),
    ],
)
def test_stale_metrics_hold_the_floor(rate: float | None, age_s: float, reason: str) -> None:
    p = policy()
    state = PredictiveState(floor=12)
    decision, new = p.decide(obs(100.0, rate=rate, age_s=age_s), forecast([10, 10]), state, 100.0)
    assert decision.floor == 12
    assert decision.reason == reason
    assert new.hold_since_s == 100.0


def test_missing_forecast_holds_then_hands_back_gradually() -> None:
    p = policy(handback_after_s=900.0, scale_down_max_fraction=0.1)
    state = PredictiveState(floor=20)
    floors = []
    for k in range(0, 100):
        t = 15.0 * k
        decision, state = p.decide(obs(t, rate=100.0), None, state, t)
        floors.append(decision.floor)
    assert floors[0] == 20 and floors[59] == 20  # held for 900 s
    assert floors[60] == 18 and floors[61] == 17  # then one bounded step per tick
    assert all(a - b <= max(1, math.floor(a * 0.1)) for a, b in zip(floors, floors[1:], strict=False))
    assert floors[-1] == 2  # back down to what the observed 100 req/s needs (100 / 80)


def test_surge_above_the_band_takes_the_reactive_path() -> None:
    p = policy()
    state = p.initial_state()
    for k, rate in enumerate([100, 100, 100, 300, 600, 900]):
        t = 15.0 * k
        decision, state = p.decide(obs(t, rate=float(rate)), forecast([100.0] * 10, start_s=t),
                                   state, t)
    assert decision.details["surge"] is True
    # the trend (~+200 req/s per 15 s) extrapolated over lead + tick is far above 900 req/s
    assert decision.details["planned_rps"] > 900 * 2


def test_erlang_sizing_needs_fewer_replicas_per_request_at_scale() -> None:
    cfg = PredictiveConfig(capacity_rps_per_replica=100.0, slots_per_replica=4,
                           wait_budget_s=0.1, max_wait_miss=0.001)
    small, large = size_for(cfg, 50.0), size_for(cfg, 5000.0)
    assert small >= 1 and large >= 50  # never above 100 % utilization
    assert 5000.0 / large > 50.0 / small  # pooling: higher utilization at scale


@settings(max_examples=200, deadline=None)
@given(
    rates=st.lists(st.floats(0, 5000), min_size=1, max_size=40),
    hpa=st.lists(st.integers(1, 80), min_size=40, max_size=40),
    min_r=st.integers(1, 5), span=st.integers(0, 60), frac=st.floats(0.01, 0.5),
)
def test_invariants(rates: list[float], hpa: list[int], min_r: int, span: int,
                    frac: float) -> None:
    max_r = min_r + span
    p = policy(min_replicas=min_r, max_replicas=max_r, scale_down_max_fraction=frac)
    state = p.initial_state()
    prev_floor = None
    for k, rate in enumerate(rates):
        t = 15.0 * k
        fc = forecast([rate] * 6, start_s=t)
        o = obs(t, rate=rate, hpa=hpa[k])
        decision, state = p.decide(o, fc, state, t)
        again, _ = p.decide(o, fc, decision_state_before(p, rates, hpa, k), t)
        assert again == decision  # same inputs, same decision
        assert decision.floor is not None and min_r <= decision.floor <= max_r
        assert min_r <= decision.replicas <= max_r
        assert decision.replicas >= min(hpa[k], max_r)  # never below the HPA's own count
        if prev_floor is not None and decision.floor < prev_floor:
            assert prev_floor - decision.floor <= max(1, math.floor(prev_floor * frac))
        prev_floor = decision.floor


def decision_state_before(p: PredictivePolicy, rates: list[float], hpa: list[int],
                          k: int) -> PredictiveState:
    """Replay the first k ticks to rebuild the state the k-th decision started from."""
    state = p.initial_state()
    for j in range(k):
        t = 15.0 * j
        _, state = p.decide(obs(t, rate=rates[j], hpa=hpa[j]), forecast([rates[j]] * 6, start_s=t),
                            state, t)
    return state


def test_after_a_burst_the_floor_comes_down_while_the_surge_flag_settles() -> None:
    """No scale-down while the rate is above the band (panic); once it is back inside, the
    bounded scale-down resumes even though the surge flag stays up for surge_hold_s."""
    p = policy(scale_down_window_s=30.0, surge_hold_s=3600.0)
    state = p.initial_state()
    floors, surging = [], []
    rates = [100.0] * 4 + [2000.0] * 6 + [100.0] * 20
    for k, rate in enumerate(rates):
        t = 15.0 * k
        decision, state = p.decide(obs(t, rate=rate), forecast([100.0] * 10, start_s=t),
                                   state, t)
        floors.append(decision.floor)
        surging.append(decision.details["surge"])
    peak = max(floors)
    assert peak >= 2000 / 80  # the burst was bought
    assert all(surging[12:])  # the flag is still settling at the end...
    assert floors[-1] < peak  # ...but the floor has come down
    assert floors[9] == peak or floors[9] >= floors[8]  # no scale-down while above the band


def test_without_a_forecast_the_floor_holds_but_still_rises_for_observed_demand() -> None:
    p = policy()
    state = PredictiveState(floor=5)
    low, state = p.decide(obs(0.0, rate=100.0), None, state, 0.0)
    assert low.floor == 5 and low.reason == "hold: no forecast"  # never dropped on no forecast
    high, state = p.decide(obs(15.0, rate=1600.0), None, state, 15.0)
    assert high.floor == math.ceil(1600 / 80) and high.reason == "reactive: no forecast"


# -- the trend floor: which observed rates it follows ------------------------------------------
# Forecast flat at 1000 (median 1000, q0.9 1100), lead 120 s: the plan covers now .. now + 135 s,
# and a trend is carried from the rate's age (15 s) to that end: 150 s in all.
TREND_CASES = [
    # inside the band (1080 <= 1100) but above the median: the slope of the last 2 minutes,
    # 20 req/s per 15 s -> 1080 + 150 * 20 / 15 = 1280
    pytest.param((1000.0, 1020.0, 1040.0, 1060.0), 1080.0, 1280.0, id="inside-band-2-minutes"),
    # above the band (1150 > 1100): the last 15 s only, 100 req/s per 15 s -> 1150 + 1000
    pytest.param((1000.0,) * 6 + (1050.0,), 1150.0, 2150.0, id="above-band-last-15-s"),
    # below the median: no trend, the forecast's q0.9 over the window
    pytest.param((1000.0, 990.0, 980.0), 970.0, 1100.0, id="below-median-forecast"),
]


@pytest.mark.parametrize(("before", "rate", "planned"), TREND_CASES)
def test_trend_floor_window(before: tuple[float, ...], rate: float, planned: float) -> None:
    p = policy(surge_margin=10.0)
    state = PredictiveState(prev_rates=before)
    decision, _ = p.decide(obs(0.0, rate=rate), forecast([1000.0] * 6), state, 0.0)
    assert decision.details["planned_rps"] == pytest.approx(planned)
    assert decision.floor == math.ceil(planned / 80 - 1e-9)


@pytest.mark.parametrize(("lagging_before", "rate", "planned"), [
    # the forecast refreshed this tick reads level with the rate (median 1080, q0.9 1188);
    # a ramp lagged at the last tick and still rising keeps its trend: 1080 + 150 * 20 / 15
    pytest.param(True, 1080.0, 1280.0, id="rising-ramp-stays-lagged"),
    pytest.param(False, 1080.0, 1188.0, id="not-lagged-before-forecast-only"),
    # lagged before but no longer rising: the forecast alone
    pytest.param(True, 1060.0, 1188.0, id="ramp-over-forecast-only"),
])
def test_a_ramp_stays_lagged_on_the_forecast_refresh_tick(lagging_before: bool, rate: float,
                                                          planned: float) -> None:
    p = policy(surge_margin=10.0)
    state = PredictiveState(prev_rates=(1000.0, 1020.0, 1040.0, 1060.0), lagging=lagging_before)
    decision, _ = p.decide(obs(0.0, rate=rate), forecast([1080.0] * 6), state, 0.0)
    assert decision.details["planned_rps"] == pytest.approx(planned)
