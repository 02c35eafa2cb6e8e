"""Capacity rules against textbook queueing values and hand counts; the learned capacity model
against synthetic data with a known slope."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.capacity_model import learn_capacity
from policies.capacity import (
    erlang_b,
    erlang_c_wait_probability,
    min_replicas_for_attainment,
    min_servers_for_slo,
    mmc_mean_wait_s,
    mmc_wait_exceeds_prob,
    replicas_for_demand,
)


@pytest.mark.parametrize(
    ("rate", "cap", "u", "expected"),
    [
        pytest.param(0.0, 100.0, 0.7, 0, id="no-demand"),
        pytest.param(70.0, 100.0, 0.7, 1, id="exact-fit-not-rounded-up"),
        pytest.param(71.0, 100.0, 0.7, 2, id="just-over"),
        pytest.param(1000.0, 100.0, 0.5, 20, id="twenty"),
        pytest.param(210.0, 100.0, 0.7, 3, id="float-product-3"),
        # llm-7b-like: 2.1 req/s on 3 req/s replicas at 0.7 is one replica (2.1/2.1 = 1.0000000000000002)
        pytest.param(2.1, 3.0, 0.7, 1, id="representation-error-not-rounded-up"),
        pytest.param(float("nan"), 100.0, 0.7, 0, id="nan-demand"),
    ],
)
def test_replicas_for_demand(rate, cap, u, expected) -> None:
    assert replicas_for_demand(rate, cap, u) == expected


def test_replicas_for_demand_guards_zero_capacity() -> None:
    with pytest.raises(ValueError):
        replicas_for_demand(10.0, 0.0, 0.7)


@pytest.mark.parametrize(
    ("c", "a", "expected"),
    [
        # C(1, a) = a (M/M/1: an arrival waits iff the server is busy)
        pytest.param(1, 0.5, 0.5, id="mm1"),
        # c=2, a=1: (1/2 * 2/1) / (1 + 1 + 1) = 1/3
        pytest.param(2, 1.0, 1 / 3, id="c2-a1"),
        # c=3, a=2: (8/6 * 3/1) / (1 + 2 + 2 + 4) = 4/9
        pytest.param(3, 2.0, 4 / 9, id="c3-a2"),
        pytest.param(3, 3.0, 1.0, id="unstable"),
        pytest.param(4, 0.0, 0.0, id="no-load"),
    ],
)
def test_erlang_c_hand_values(c, a, expected) -> None:
    assert erlang_c_wait_probability(c, a) == pytest.approx(expected, rel=1e-12)


def test_erlang_b_hand_value() -> None:
    assert erlang_b(2, 1.0) == pytest.approx(0.5 / 2.5)  # (a^2/2) / (1 + a + a^2/2)


def _erlang_c_logspace(c: int, a: float) -> float:
    """Independent check: the textbook sum evaluated in log space (log-sum-exp)."""
    logs = [k * math.log(a) - math.lgamma(k + 1) for k in range(c)]
    last = c * math.log(a) - math.lgamma(c + 1) + math.log(c / (c - a))
    m = max(*logs, last)
    denom = sum(math.exp(x - m) for x in logs) + math.exp(last - m)
    return math.exp(last - m) / denom


@pytest.mark.parametrize(("c", "a"), [(50, 40.0), (400, 380.0), (1000, 990.0), (2000, 1500.0)])
def test_erlang_c_many_servers_stable(c, a) -> None:
    got = erlang_c_wait_probability(c, a)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(_erlang_c_logspace(c, a), rel=1e-9)


def test_mm1_mean_wait_textbook() -> None:
    # M/M/1, mu = 1/s, rho = 0.5: Wq = (1/mu) rho/(1-rho) = 1 s
    assert mmc_mean_wait_s(0.5, 1.0, 1) == pytest.approx(1.0)
    # M/M/2, lambda = mu = 1: Wq = C/(c mu - lambda) = (1/3)/1
    assert mmc_mean_wait_s(1.0, 1.0, 2) == pytest.approx(1 / 3)
    assert mmc_mean_wait_s(2.0, 1.0, 2) == math.inf


def test_wait_tail_textbook() -> None:
    # M/M/1: P(Wq > t) = rho exp(-(mu - lambda) t)
    assert mmc_wait_exceeds_prob(0.5, 1.0, 1, 2.0) == pytest.approx(0.5 * math.exp(-1.0))
    assert mmc_wait_exceeds_prob(0.5, 1.0, 1, 0.0) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("rate", "service", "spr", "budget", "miss", "expected"),
    [
        # one slot per replica, a = 0.5: 1 replica waits with prob 0.5
        pytest.param(0.5, 1.0, 1, 0.0, 0.5, 1, id="mm1-meets"),
        # needs 2: c=2, a=0.5: C = (0.125 x 2/1.5)/(1.5 + 0.1667) = 0.1 <= 0.4
        pytest.param(0.5, 1.0, 1, 0.0, 0.4, 2, id="mm2-needed"),
        pytest.param(0.0, 1.0, 4, 0.1, 0.01, 0, id="no-demand"),
        # a = 3.5 on 4 slots is stable but C > 0.5; two replicas (8 slots) are needed
        pytest.param(3.5, 1.0, 4, 0.0, 0.5, 2, id="stable-but-too-slow"),
    ],
)
def test_min_servers_for_slo_hand(rate, service, spr, budget, miss, expected) -> None:
    assert min_servers_for_slo(rate, service, spr, budget, miss) == expected


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.1, 3000.0),
    service=st.floats(0.005, 0.5),
    spr=st.integers(1, 32),
    budget=st.floats(0.0, 0.5),
    miss=st.floats(0.001, 0.5),
)
def test_min_servers_for_slo_is_the_fewest(rate, service, spr, budget, miss) -> None:
    r = min_servers_for_slo(rate, service, spr, budget, miss)
    assert mmc_wait_exceeds_prob(rate, service, r * spr, budget) <= miss
    assert r == 1 or mmc_wait_exceeds_prob(rate, service, (r - 1) * spr, budget) > miss
    assert min_servers_for_slo(rate * 1.2, service, spr, budget, miss) >= r


# --- learned capacity ---------------------------------------------------------------------------


def _synthetic(n: int, slope: float, rng: np.random.Generator, noise: float = 2.0):
    util = rng.uniform(0.1, 0.95, n)
    ready = rng.integers(1, 9, n).astype(float)
    per_replica = slope * util + rng.normal(0.0, noise, n)
    return per_replica * ready, ready, util


def test_learns_known_slope() -> None:
    rng = np.random.default_rng(7)
    rate, ready, util = _synthetic(400, 80.0, rng)
    fit = learn_capacity(rate, ready, util, target_utilization=0.7)
    assert fit.ok and fit.reason == "ok"
    assert fit.capacity_rps_per_replica == pytest.approx(80.0, rel=0.02)
    assert fit.rate_at_target_rps == pytest.approx(56.0, rel=0.02)


def test_robust_to_outliers() -> None:
    rng = np.random.default_rng(11)
    rate, ready, util = _synthetic(400, 80.0, rng)
    bad = rng.choice(400, 40, replace=False)
    rate[bad] *= 3.0  # 10 % of scrapes counted a burst three times over
    fit = learn_capacity(rate, ready, util)
    assert fit.capacity_rps_per_replica == pytest.approx(80.0, rel=0.05)


def test_intercept_option() -> None:
    rng = np.random.default_rng(3)
    util = rng.uniform(0.2, 0.9, 300)
    per_replica = (util - 0.1) * 100.0  # an idle floor of 10 % utilization
    fit = learn_capacity(per_replica, np.ones(300), util, fit_intercept=True)
    assert fit.capacity_rps_per_replica == pytest.approx(90.0, rel=1e-3)
    assert fit.intercept_rps == pytest.approx(-10.0, abs=0.05)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("few", "too-few-points", id="too-few-points"),
        pytest.param("flat", "no-utilization-spread", id="no-spread"),
        pytest.param("negative", "non-positive-slope", id="negative-slope"),
        pytest.param("no-ready", "too-few-points", id="no-ready-replicas"),
        pytest.param("nan", "too-few-points", id="all-nan"),
    ],
)
def test_refuses_unsupported_fits(case: str, reason: str) -> None:
    rng = np.random.default_rng(5)
    n = 200
    util = rng.uniform(0.1, 0.9, n)
    ready = np.full(n, 2.0)
    rate = 2 * 50.0 * util
    if case == "few":
        rate, ready, util = rate[:10], ready[:10], util[:10]
    elif case == "flat":
        util = np.full(n, 0.5) + rng.normal(0, 0.005, n)
    elif case == "negative":
        rate = 2 * (60.0 - 50.0 * util)
    elif case == "no-ready":
        ready = np.zeros(n)
    elif case == "nan":
        rate = np.full(n, np.nan)
    fit = learn_capacity(rate, ready, util)
    assert not fit.ok
    assert fit.capacity_rps_per_replica is None and fit.reason == reason


def test_nan_rows_are_skipped() -> None:
    rng = np.random.default_rng(9)
    rate, ready, util = _synthetic(300, 40.0, rng, noise=1.0)
    rate[::7] = np.nan
    fit = learn_capacity(rate, ready, util)
    assert fit.n_points == 300 - len(range(0, 300, 7))
    assert fit.capacity_rps_per_replica == pytest.approx(40.0, rel=0.03)


@pytest.mark.parametrize(
    ("rate", "mean_s", "slots", "slo_s", "max_miss"),
    [
        pytest.param(50.0, 0.04, 4, 0.2, 1e-3, id="small-model-light"),
        pytest.param(1000.0, 0.04, 4, 0.2, 1e-3, id="small-model-heavy"),
        pytest.param(5.0, 7.0, 32, 1.5, 1e-3, id="llm-like"),
        pytest.param(300.0, 0.1, 1, 0.5, 1e-2, id="one-slot"),
    ],
)
def test_attainment_sizing_with_instant_service_is_the_wait_rule(
        rate: float, mean_s: float, slots: int, slo_s: float, max_miss: float) -> None:
    """With an SLO-counted service of 0 and exponential service (scv 1), the added miss share
    is exactly P(wait > slo): the two sizing rules must agree."""
    assert min_replicas_for_attainment(rate, mean_s, slots, slo_s, (0.0,), max_miss, 1.0) == \
        min_servers_for_slo(rate, mean_s, slots, slo_s, max_miss)


def test_attainment_sizing_ignores_requests_no_capacity_can_save() -> None:
    """If every request's own service exceeds the SLO, queueing adds no miss: the smallest
    stable count (load below the slots) is enough."""
    # 100 req/s x 0.04 s = 4 Erlangs on 4-slot replicas: 2 replicas is the first with a < c
    assert min_replicas_for_attainment(100.0, 0.04, 4, 0.01, (0.05, 0.06), 1e-6) == 2


def test_attainment_sizing_needs_more_for_slower_service_parts() -> None:
    fast = min_replicas_for_attainment(800.0, 0.04, 4, 0.25, (0.01,) * 4, 1e-3)
    slow = min_replicas_for_attainment(800.0, 0.04, 4, 0.25, (0.2,) * 4, 1e-3)
    assert slow > fast


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0.1, 2000.0), service_ms=st.floats(1.0, 2000.0),
       slots=st.integers(1, 64), limit=st.integers(1, 60),
       slo_part=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=5))
def test_limited_walk_is_the_answer_capped_one_past_the_limit(rate, service_ms, slots, limit,
                                                              slo_part):
    """With a limit, the walk returns the same answer while it is within the limit and
    limit + 1 past it (a caller capped at the limit needs nothing more)."""
    s = service_ms / 1000.0
    full = min_servers_for_slo(rate, s, slots, 0.1, 0.001)
    assert min_servers_for_slo(rate, s, slots, 0.1, 0.001, limit=limit) == min(full, limit + 1)
    full = min_replicas_for_attainment(rate, s, slots, 2.0, tuple(slo_part), 0.001)
    assert min_replicas_for_attainment(rate, s, slots, 2.0, tuple(slo_part), 0.001,
                                       limit=limit) == min(full, limit + 1)


@pytest.mark.parametrize(("rate_rps", "service_mean_s", "slots"), [
    pytest.param(100.0, 1e300, 4, id="absurd service time (capacity 1e-300 rps)"),
    pytest.param(1e12, 0.04, 4, id="absurd load"),
    pytest.param(100.0, 0.04, 10**9, id="a billion slots"),
])
def test_absurd_inputs_end_at_once_with_a_limit(rate_rps, service_mean_s, slots):
    """An API user's absurd policy must not stall the tick: the walk is bounded by the limit
    (without one these would take hours)."""
    got = min_servers_for_slo(rate_rps, service_mean_s, slots, 0.1, 0.001, limit=50)
    assert 1 <= got <= 51
    got = min_replicas_for_attainment(rate_rps, service_mean_s, slots, 2.0, (0.5,), 0.001,
                                      limit=50)
    assert 1 <= got <= 51
