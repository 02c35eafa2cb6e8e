"""Fast (fluid) mode against Erlang C and hand-computed backlog drains; theory computed inline."""

from __future__ import annotations

import math

import numpy as np
import pytest

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
