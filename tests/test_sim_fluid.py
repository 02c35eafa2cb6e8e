"""Fast (fluid) mode against Erlang C and hand-computed backlog drains; theory computed inline."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.erlang import _erlang_c_point, _erlang_c_recursion
from simulator.fluid import FluidServer
from simulator.serving import RequestServer


def erlang_c(servers: int, offered_erlangs: float) -> float:
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_erlangs * b / (k + offered_erlangs * b)
    rho = offered_erlangs / servers
    return b / (1.0 - rho + rho * b)


def exp_quantiles(mean_s: float, n: int = 20_000) -> np.ndarray:
    return -mean_s * np.log(1.0 - (np.arange(n) + 0.5) / n)


REPLICAS, SLOTS, MEAN_S = 10, 4, 0.04  # 40 slots, 1000 requests/s at full load


def run_stationary(rho, slo_s, samples, routing="lor", steps=600):
    server = FluidServer(SLOTS, MEAN_S, 1.0, slo_s, samples, routing=routing)
    rate = rho * REPLICAS * SLOTS / MEAN_S
    for _ in range(steps // 15):
        server.step(np.full(15, rate), REPLICAS)
    return server, rate


@pytest.mark.parametrize("rho", [pytest.param(0.5, id="rho-0.5"), pytest.param(0.9, id="rho-0.9")])
@pytest.mark.parametrize("x_over_mean_wait", [0.5, 2.0, 5.0])
def test_stationary_wait_matches_erlang_c(rho, x_over_mean_wait):
    n = REPLICAS * SLOTS
    c = erlang_c(n, rho * n)
    theta = MEAN_S / (n * (1 - rho))  # M/M/n conditional wait mean
    x = x_over_mean_wait * theta
    # slo component identically 0: "within the SLO" is exactly "wait <= x"
    server, _ = run_stationary(rho, x, np.zeros(1))
    assert server.mean_wait_s == pytest.approx(c * theta, rel=0.02)
    p_over = 1.0 - server.within_slo / server.arrivals
    assert p_over == pytest.approx(c * math.exp(-x / theta), rel=0.05)
    assert server.backlog == 0.0


def test_random_routing_is_per_replica_mmc():
    rho = 0.8
    c = erlang_c(SLOTS, rho * SLOTS)
    server, _ = run_stationary(rho, 1.0, np.zeros(1), routing="random")
    assert server.mean_wait_s == pytest.approx(c * MEAN_S / (SLOTS * (1 - rho)), rel=0.02)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_attainment_with_service_in_the_slo(rho):
    """P(W + S <= slo) with S exponential: closed form (hypoexponential) mixed with P(W = 0)."""
    n, slo_s, s_mean = REPLICAS * SLOTS, 0.12, MEAN_S
    c = erlang_c(n, rho * n)
    theta = MEAN_S / (n * (1 - rho))
    p_s = 1 - math.exp(-slo_s / s_mean)
    p_ws = 1 - (theta * math.exp(-slo_s / theta) - s_mean * math.exp(-slo_s / s_mean)) / (
        theta - s_mean
    )
    want = (1 - c) * p_s + c * p_ws
    server, _ = run_stationary(rho, slo_s, exp_quantiles(s_mean))
    got = server.within_slo / server.arrivals
    assert 1 - got == pytest.approx(1 - want, rel=0.02)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_histogram_percentiles_match_erlang_c_quantiles(rho):
    n = REPLICAS * SLOTS
    c = erlang_c(n, rho * n)
    theta = MEAN_S / (n * (1 - rho))
    server, _ = run_stationary(rho, 1.0, np.zeros(1), steps=30_000)
    hist = server.histogram
    assert hist.estimated
    assert hist.total == pytest.approx(server.arrivals)
    for q in (99.0, 99.9):
        tail = 1 - q / 100
        want = theta * math.log(c / tail) if c > tail else 0.0
        assert hist.percentile(q) == pytest.approx(want, rel=0.03, abs=1e-6)


def test_step_overload_backlog_drains_at_hand_computed_rate():
    # capacity 10 replicas x 4 slots / 0.04 s = 1000 requests/s
    server = FluidServer(SLOTS, MEAN_S, 1.0, 0.25, np.full(1, 0.01))
    backlog = [server.step(np.array([a]), REPLICAS) for a in [1200.0] * 5 + [900.0] * 12]
    # +200 per overload second up to 1000, then -100 per second down to 0 after 10 more
    want = [200.0, 400.0, 600.0, 800.0, 1000.0] + [900.0 - 100 * k for k in range(10)] + [0, 0]
    np.testing.assert_allclose(backlog, want, atol=1e-9)
    assert server.served == pytest.approx(5 * 1200 + 12 * 900)
    assert server.busy_slot_s == pytest.approx(server.served * MEAN_S)
    assert server.backlogged_s == 15.0
    # backlog delay of a request = backlog ahead / 1000 per s: at t = 4.5 s it is 0.9 s > slo
    assert server.within_slo / server.arrivals < 1 - 5 * 1200 / server.arrivals + 0.05


def test_scale_up_drains_faster():
    server = FluidServer(SLOTS, MEAN_S, 1.0, 0.25, np.full(1, 0.01))
    server.step(np.full(3, 1500.0), REPLICAS)  # +500 per second
    assert server.backlog == pytest.approx(1500.0)
    server.step(np.full(2, 1500.0), 2 * REPLICAS)  # capacity 2000: -500 per second
    assert server.backlog == pytest.approx(500.0)


def test_held_arrivals_are_charged_their_wait():
    server = FluidServer(1, 1.0, 1.0, 100.0, np.zeros(1))
    server.step(np.array([1.0, 1.0]), 0)  # two requests arrive at ~0.5 s and ~1.5 s, no replica
    assert server.backlog == 2.0 and server.within_slo == 0.0
    server.step(np.zeros(1), 4)  # 4 slots x 1 s service: both start at 2.0
    # mean wait: 2.0 - mean arrival 1.0 + (backlog 2 - half of the held 2) / rate 4 = 1.25
    assert server.mean_wait_s == pytest.approx(1.25)
    assert server.within_slo == pytest.approx(2.0)  # slo 100 s
    assert server.backlog == 0.0


def test_fourteen_days_of_steps_run():
    server = FluidServer(SLOTS, MEAN_S, 1.0, 0.25, exp_quantiles(MEAN_S, 1000))
    rates = 600 + 300 * np.sin(np.arange(86_400) / 86_400 * 2 * np.pi)
    for i in range(0, rates.size, 15):
        server.step(rates[i : i + 15], 10 if rates[i] < 880 else 9)
    assert server.steps == 86_400
    assert 0.0 < server.within_slo / server.arrivals <= 1.0
    assert server.histogram.total == pytest.approx(server.arrivals, rel=1e-9)


@pytest.mark.parametrize(
    "scv",
    [pytest.param(0.0, id="deterministic"), pytest.param(0.25, id="gamma-0.25"),
     pytest.param(4.0, id="gamma-4")],
)  # fmt: skip
def test_service_scv_correction_agrees_with_request_level_mgc(scv):
    """Allen-Cunneen (mean wait x (1 + scv) / 2) is an approximation: within 10 % of M/G/4."""
    c, rho, n = 4, 0.9, 1_000_000
    rng = np.random.default_rng(1)
    arrivals = np.cumsum(rng.exponential(1 / (rho * c), n))
    service = np.ones(n) if scv == 0 else rng.gamma(1 / scv, scv, n)
    server = RequestServer(c, "central")
    server.add_replica(0.0)
    start, _ = server.serve(arrivals, service)
    measured = (start - arrivals)[n // 100 :].mean()
    fluid = FluidServer(c, 1.0, scv, 10.0, np.zeros(1))
    fluid.step(np.full(600, rho * c), 1)
    assert fluid.mean_wait_s == pytest.approx(measured, rel=0.10)


def test_arrivals_wait_behind_the_backlog_growing_within_the_step():
    # 1500 arrivals in one second against 1000/s: backlog 500 t, delay 0.5 t, mean 0.25 s;
    # the stationary part runs at the utilization cap 0.98
    server = FluidServer(SLOTS, MEAN_S, 1.0, 0.25, np.zeros(1))
    server.step(np.array([1500.0]), REPLICAS)
    n = REPLICAS * SLOTS
    stationary = erlang_c(n, 0.98 * n) * MEAN_S / (n * (1 - 0.98))
    assert server.mean_wait_s == pytest.approx(0.25 + stationary, rel=0.01)


# -- the one Erlang C evaluation (erlang._erlang_c_point): O(sqrt(servers)) above 64 servers ----
def erlang_c_decimal(servers: int, rho: float, digits: int = 50) -> float:
    """Erlang C to `digits` digits: 1/B = sum_j prod_{i<j} (servers - i) / A, in decimals."""
    getcontext().prec = digits
    a = Decimal(rho) * servers
    inv_b, term = Decimal(0), Decimal(1)
    for j in range(servers + 1):
        inv_b += term
        term = term * (servers - j) / a
    r = Decimal(rho)
    return float(1 / (inv_b * (1 - r) + r))


@pytest.mark.parametrize(
    ("servers", "offered_erlangs", "expected", "tol"),
    [
        pytest.param(1, 0.5, 0.5, 1e-15, id="mm1-wait-probability-is-rho"),
        pytest.param(2, 1.0, 1.0 / 3.0, 1e-15, id="c2-a1-one-third"),
        pytest.param(10, 8.0, 0.4092, 1e-4, id="c10-a8-textbook"),
        pytest.param(20, 15.0, 0.1604, 1e-4, id="c20-a15-textbook"),
    ],
)
def test_erlang_c_textbook_values(servers, offered_erlangs, expected, tol):
    assert _erlang_c_point(servers, offered_erlangs / servers) == pytest.approx(expected, abs=tol)


@pytest.mark.parametrize(
    ("servers", "rho"),
    [
        pytest.param(65, 0.98, id="first-count-past-the-recursion"),
        pytest.param(100, 0.9, id="c100-rho0.9"),
        pytest.param(1000, 0.98, id="c1000-near-saturation"),
        pytest.param(3200, 0.75, id="c3200-mid"),
        pytest.param(10_272, 0.95, id="llm-7b-321-replicas"),
        pytest.param(10_000, 0.6, id="c10000-tiny-wait-probability"),
    ],
)
def test_erlang_c_matches_fifty_digit_arithmetic(servers, rho):
    want = erlang_c_decimal(servers, rho)
    assert _erlang_c_point(servers, rho) == pytest.approx(want, rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("servers", [1, 7, 32, 64, 65, 97, 320, 1000, 3200, 6400, 10_272, 40_000])
def test_erlang_c_matches_the_exact_recursion_on_the_table_grid(servers):
    """The whole table grid of the fluid model (2049 points up to 0.98): relative error <= 1e-10
    where the recursion's value is a normal float; both 0 where it overflows to 0."""
    rho_max, last = 0.98, 2048
    for i in range(last + 1):
        rho = rho_max * i / last
        want = _erlang_c_recursion(servers, rho) if rho > 0 else 0.0
        got = _erlang_c_point(servers, rho)
        if want < 1e-290:
            assert got < 1e-280, (servers, i)
        else:
            assert abs(got - want) <= 1e-10 * want, (servers, i, got, want)


@pytest.mark.parametrize("servers", [70, 320, 2000])
def test_erlang_c_matches_the_erlang_b_recursion_of_the_theory_tests(servers):
    """An independent form (B_k = A B_(k-1) / (k + A B_(k-1)), pure Python) on a coarser grid."""
    for rho in np.linspace(0.3, 0.999, 60):
        want = erlang_c(servers, rho * servers)
        if want > 1e-290:
            assert _erlang_c_point(servers, float(rho)) == pytest.approx(want, rel=1e-10)


@settings(max_examples=300, deadline=None)
@given(servers=st.integers(1, 30_000), rho=st.floats(1e-6, 0.9999))
def test_erlang_c_agrees_with_the_recursion_everywhere(servers, rho):
    want, got = _erlang_c_recursion(servers, rho), _erlang_c_point(servers, rho)
    assert 0.0 <= got <= 1.0
    if want < 1e-290:
        assert got < 1e-280
    else:
        assert abs(got - want) <= 1e-10 * want
