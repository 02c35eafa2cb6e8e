"""Request-level serving against queueing theory (Erlang C, M/M/1), theory computed inline."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.serving import RequestServer


def erlang_c(servers: int, offered_erlangs: float) -> float:
    """P(wait > 0) in M/M/c, from the Erlang B recursion B(k) = a B(k-1) / (k + a B(k-1))."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_erlangs * b / (k + offered_erlangs * b)
    rho = offered_erlangs / servers
    return b / (1.0 - rho + rho * b)


def poisson_load(rng, n, rate_rps, mean_service_s):
    arrivals = np.cumsum(rng.exponential(1.0 / rate_rps, n))
    return arrivals, rng.exponential(mean_service_s, n)


def serve_once(routing, replicas, slots, arrivals, service, batch=50_000):
    """Serve in batches (as the engine does) with a fixed replica set; return waits, replicas."""
    server = RequestServer(slots, routing, seed=11)
    for _ in range(replicas):
        server.add_replica(0.0)
    starts, rids = [], []
    for i in range(0, arrivals.size, batch):
        s, r = server.serve(arrivals[i : i + batch], service[i : i + batch])
        starts.append(s)
        rids.append(r)
    return np.concatenate(starts) - arrivals, np.concatenate(rids)


@pytest.mark.parametrize(
    "rho, n",
    [pytest.param(0.5, 2_000_000, id="rho-0.5"), pytest.param(0.9, 4_000_000, id="rho-0.9")],
)
def test_central_queue_matches_erlang_c(rho, n):
    c, mean_service_s = 4, 1.0
    lam = rho * c / mean_service_s
    arrivals, service = poisson_load(np.random.default_rng(7), n, lam, mean_service_s)
    wait, _ = serve_once("central", 1, c, arrivals, service)
    p_wait = erlang_c(c, lam * mean_service_s)
    want_mean_wait = p_wait * mean_service_s / (c * (1 - rho))
    warm = n // 100  # drop the empty-system start
    assert wait[warm:].mean() == pytest.approx(want_mean_wait, rel=0.05)
    assert np.mean(wait[warm:] > 0) == pytest.approx(p_wait, rel=0.05)


def test_central_queue_over_replicas_is_one_pool():
    """Two replicas x 2 slots behind the central queue are one M/M/4 pool."""
    c, rho, n = 4, 0.7, 1_000_000
    lam = rho * c
    arrivals, service = poisson_load(np.random.default_rng(8), n, lam, 1.0)
    wait, _ = serve_once("central", 2, 2, arrivals, service)
    want = erlang_c(c, lam) / (c * (1 - rho))
    assert wait[n // 100 :].mean() == pytest.approx(want, rel=0.05)


@pytest.mark.parametrize("rho", [pytest.param(0.5, id="rho-0.5"), pytest.param(0.8, id="rho-0.8")])
def test_random_routing_makes_each_replica_mm1(rho):
    replicas, n = 4, 3_000_000
    lam = rho * replicas  # mean service 1 s, one slot per replica
    arrivals, service = poisson_load(np.random.default_rng(9), n, lam, 1.0)
    wait, rid = serve_once("random", replicas, 1, arrivals, service)
    keep = np.arange(n) >= n // 100
    want = rho / (1.0 - rho)  # M/M/1 mean wait with mu = 1: rho / (mu - lambda)
    for r in range(replicas):
        mine = keep & (rid == r)
        assert mine.sum() == pytest.approx((n - n // 100) / replicas, rel=0.01)
        assert wait[mine].mean() == pytest.approx(want, rel=0.05), f"replica {r}"


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_lor_no_worse_than_random_and_no_better_than_central(rho):
    replicas, slots, n = 8, 4, 400_000
    lam = rho * replicas * slots
    arrivals, service = poisson_load(np.random.default_rng(10), n, lam, 1.0)
    w_random = serve_once("random", replicas, slots, arrivals, service)[0].mean()
    w_lor = serve_once("lor", replicas, slots, arrivals, service)[0].mean()
    w_central = serve_once("central", replicas, slots, arrivals, service)[0].mean()
    assert w_lor < w_random
    assert w_central <= w_lor
