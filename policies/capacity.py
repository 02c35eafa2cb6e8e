"""Replicas needed for a demand: the utilization rule and M/M/c (Erlang C) queueing. Pure.

- :func:`replicas_for_demand` is the control law of DESIGN.md: ``ceil(d / (cap * u))``.
- The Erlang C helpers treat a deployment as one M/M/c queue whose servers are the batch slots of
  all its replicas (a load balancer that sends each request to any free slot). The Erlang C
  probability is computed through the Erlang B recursion ``B(k) = a B(k-1) / (k + a B(k-1))``,
  which stays in [0, 1] at every step, so it is stable for thousands of servers where the textbook
  sum of ``a^k / k!`` overflows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

_CEIL_EPS = 1e-9


def replicas_for_demand(
    rate_rps: float, capacity_rps_per_replica: float, target_utilization: float
) -> int:
    """Fewest replicas that serve ``rate_rps`` at ``target_utilization`` of their capacity.

    ``ceil(rate / (capacity * utilization))``; 0 for no demand. A product within 1e-9 of an integer
    counts as that integer (70 req/s at 0.7 x 100 req/s is 1 replica, not 2 by rounding error).
    Raises ValueError when capacity or utilization is not positive (no finite answer).
    """
    if capacity_rps_per_replica <= 0 or target_utilization <= 0:
        raise ValueError("capacity_rps_per_replica and target_utilization must be positive")
    if not rate_rps > 0:  # also catches NaN: no measurable demand needs no capacity
        return 0
    return max(0, math.ceil(rate_rps / (capacity_rps_per_replica * target_utilization) - _CEIL_EPS))


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B blocking probability of ``servers`` servers at ``offered_load`` Erlangs."""
    if servers < 0 or offered_load < 0:
        raise ValueError("servers and offered_load must be non-negative")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    return b


def _erlang_c_from_b(servers: int, a: float, b: float) -> float:
    if a >= servers:
        return 1.0
    return servers * b / (servers - a * (1.0 - b))


def erlang_c_wait_probability(servers: int, offered_load: float) -> float:
    """P(an arrival waits) in M/M/c with ``servers`` servers and load ``a = lambda / mu`` Erlangs.

    ``C = c B / (c - a (1 - B))`` with B the Erlang B value; 1.0 when ``a >= c`` (unstable: every
    arrival eventually waits), 0.0 for no load.
    """
    if servers <= 0:
        return 1.0
    if offered_load <= 0:
        return 0.0
    return _erlang_c_from_b(servers, offered_load, erlang_b(servers, offered_load))


def mmc_mean_wait_s(arrival_rps: float, service_mean_s: float, servers: int) -> float:
    """Mean time in queue (before service) of M/M/c: ``C / (c mu - lambda)``; inf if unstable."""
    if arrival_rps <= 0:
        return 0.0
    a = arrival_rps * service_mean_s
    if servers <= 0 or a >= servers:
        return math.inf
    mu = 1.0 / service_mean_s
    return erlang_c_wait_probability(servers, a) / (servers * mu - arrival_rps)


def mmc_wait_exceeds_prob(
    arrival_rps: float, service_mean_s: float, servers: int, t_s: float
) -> float:
    """P(queueing delay > t_s) in M/M/c: ``C exp(-(c mu - lambda) t)``; 1.0 if unstable."""
    if arrival_rps <= 0:
        return 0.0
    a = arrival_rps * service_mean_s
    if servers <= 0 or a >= servers:
        return 1.0
    decay = servers / service_mean_s - arrival_rps
    return erlang_c_wait_probability(servers, a) * math.exp(-decay * max(0.0, t_s))


def min_servers_for_slo(
    arrival_rps: float,
    service_mean_s: float,
    servers_per_replica: int,
    wait_budget_s: float,
    max_miss: float,
    limit: int | None = None,
) -> int:
    """Fewest replicas (``servers_per_replica`` pooled slots each) with
    P(queueing delay > wait_budget_s) <= max_miss; ``limit + 1`` when more than ``limit``
    would be needed (the walk stops there: a caller capped at ``limit`` needs no more).

    Only stable configurations count (load below the slot count). Walks the server count upward
    from the stability bound, extending the Erlang B recursion one server at a time, so the cost is
    linear in the answer. Returns 0 for no demand.
    """
    if servers_per_replica <= 0 or service_mean_s <= 0:
        raise ValueError("servers_per_replica and service_mean_s must be positive")
    if not max_miss > 0:
        raise ValueError("max_miss must be positive (a zero miss rate needs infinite capacity)")
    if not arrival_rps > 0:
        return 0
    a = arrival_rps * service_mean_s
    mu = 1.0 / service_mean_s
    for replicas, c, wait_p in _stable_counts(a, servers_per_replica, limit):
        if wait_p * math.exp(-(c * mu - arrival_rps) * max(0.0, wait_budget_s)) <= max_miss:
            return replicas
    assert limit is not None  # without a limit the walk always ends with an answer
    return limit + 1


def min_replicas_for_attainment(
    arrival_rps: float,
    service_mean_s: float,
    servers_per_replica: int,
    slo_s: float,
    slo_part_s: tuple[float, ...],
    max_miss: float,
    service_scv: float = 1.0,
    limit: int | None = None,
) -> int:
    """Fewest replicas whose queueing adds at most ``max_miss`` to the share of requests that
    miss the latency SLO.

    A request misses when wait + its SLO-counted service (the whole service, or the time to first
    token) exceeds ``slo_s``; ``slo_part_s`` are equally weighted samples (e.g. quantiles) of that
    service part. The wait is M/M/c's: 0 with probability 1 - C, else exponential with rate
    (c mu - lambda) / k, where k = (1 + scv) / 2 is Allen-Cunneen's correction for the service
    time's variability. The added miss share is then C E[exp(-(slo - S)(c mu - lambda) / k);
    S <= slo] (requests with S > slo miss whatever the capacity). Same walk as
    :func:`min_servers_for_slo` (and the same ``limit``); 0 for no demand.
    """
    if servers_per_replica <= 0 or service_mean_s <= 0 or slo_s <= 0:
        raise ValueError("servers_per_replica, service_mean_s and slo_s must be positive")
    if not max_miss > 0:
        raise ValueError("max_miss must be positive (a zero miss rate needs infinite capacity)")
    if not arrival_rps > 0:
        return 0
    slack = [slo_s - s for s in slo_part_s if s <= slo_s]
    weight = 1.0 / max(1, len(slo_part_s))
    k = (1.0 + service_scv) / 2.0
    a = arrival_rps * service_mean_s
    mu = 1.0 / service_mean_s
    for replicas, c, wait_p in _stable_counts(a, servers_per_replica, limit):
        decay = (c * mu - arrival_rps) / k
        if wait_p * weight * sum(math.exp(-decay * x) for x in slack) <= max_miss:
            return replicas
    assert limit is not None  # without a limit the walk always ends with an answer
    return limit + 1


def _stable_counts(a: float, servers_per_replica: int, limit: int | None = None
                   ) -> Iterator[tuple[int, int, float]]:
    """(replicas, servers, Erlang C) for every replica count with load below the servers, from
    the smallest up to ``limit`` (None: no end), extending the Erlang B recursion one server at
    a time (linear cost; with a limit, bounded by it whatever the load)."""
    replicas = int(a // servers_per_replica) + 1  # first count with a < c
    if limit is not None and replicas > limit:
        return
    b, c = 1.0, 0
    while limit is None or replicas <= limit:
        while c < replicas * servers_per_replica:
            if b == 0.0:  # underflowed (c far above the load): it stays 0, skip ahead
                c = replicas * servers_per_replica
                break
            c += 1
            b = a * b / (c + a * b)
        if a < c:
            yield replicas, c, _erlang_c_from_b(c, a, b)
        replicas += 1
