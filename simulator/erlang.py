"""Erlang C: the probability that a request waits in M/M/servers, as fast mode reads it.

Rule: with offered load A = rho * servers, C = B / (1 - rho + rho * B), B the Erlang B blocking
probability. Up to 64 servers (and for rho >= 1) B comes from the recursion 1/B_k = 1 + k/A *
1/B_(k-1), exact to rounding; above, 1/B = 1/P(N = servers) - sum_{m >= 1} prod_{i <= m}
A / (servers + i) with N ~ Poisson(A), the Poisson mass in O(1) by Loader's saddle point form and
the tail sum cut once its terms fall below rounding: O(sqrt(servers)) per value. Accuracy: within
a few 1e-12 relative of the recursion; tests/test_sim_fluid.py holds it to 1e-10 against the
recursion and 50-digit arithmetic. A value below ~1e-300 is 0, as in the recursion.
Tables on a utilization grid over [0, rho_max] are filled lazily (NaN until first read) and
shared per process by (servers, rho_max): an entry is a pure function of its row and index, so
whoever fills it first spares the others its cost. Deterministic; the compiled functions read
nothing but their arguments, the table cache is the module's only state.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_RECURSION_MAX_SERVERS = 64  # up to here the O(servers) recursion is as cheap as the tail sum
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_OVERFLOW = 700.0  # exp() of more than this is near the float range: 1/B > 1e300 for sure


@njit(cache=True)
def _erlang_c_point(servers, rho):
    """P(wait > 0) in M/M/servers at utilization rho: the one Erlang C every path reads.

    With A = rho * servers and N ~ Poisson(A), 1/B = P(N <= servers) / P(N = servers)
    = 1 / P(N = servers) - sum_{m >= 1} prod_{i <= m} A / (servers + i). The Poisson mass is
    evaluated in O(1) (Loader's saddle point form: no cancellation of large logarithms), and
    the tail sum stops once its terms are negligible: O(sqrt(servers)) terms when rho is near
    1, a few when it is small, where the O(servers) recursion 1/B_k = 1 + k/A * 1/B_(k-1)
    costs ~20 us per entry at 10,000 servers (a first LLM replay filled ~10^5 entries).
    Relative difference to the recursion: a few 1e-12 (tests/test_sim_fluid.py). Small
    counts and rho >= 1 keep the recursion. 1/B > 1e300 (C below ~1e-300) gives 0, as the
    recursion does."""
    if rho <= 0.0:
        return 0.0
    if servers <= _RECURSION_MAX_SERVERS or rho >= 1.0:
        return _erlang_c_recursion(servers, rho)
    c = float(servers)
    a = rho * c
    log_inv_pmf = _stirling_error(c) + _bd0(c, a) + _LOG_SQRT_2PI + 0.5 * math.log(c)
    if log_inv_pmf > _LOG_OVERFLOW:
        return 0.0
    inv_pmf = math.exp(log_inv_pmf)
    # the terms fall (ratio A / (c + m) < rho): stop when the rest is below rounding of 1/B
    stop = 1e-18 * inv_pmf
    tail, q, m = 0.0, 1.0, 1
    while True:
        q *= a / (c + m)
        tail += q
        if q < stop:
            break
        m += 1
    x = inv_pmf - tail  # >= about inv_pmf / 2: P(N <= c) >= 1/2 when A < c
    if x > 1e300:
        return 0.0
    b = 1.0 / x
    return b / (1.0 - rho + rho * b)


@njit(cache=True)
def _erlang_c_recursion(servers, rho):
    """Erlang C by the Erlang B recursion in its 1/B form: O(servers), exact to rounding."""
    inv_a = 1.0 / (rho * servers)
    x = 1.0  # 1 / B_k
    for k in range(1, servers + 1):
        x = 1.0 + k * inv_a * x
        if x > 1e300:
            return 0.0
    b = 1.0 / x
    return b / (1.0 - rho + rho * b)


@njit(cache=True)
def _stirling_error(n):
    """log(n!) - (n + 1/2) log(n) + n - log(sqrt(2 pi)) for n > 15 (Stirling's series, as in
    Loader 2000 / R's stirlerr; truncation error below 1e-16)."""
    nn = n * n
    if n > 500.0:
        return (1.0 / 12 - (1.0 / 360) / nn) / n
    if n > 80.0:
        return (1.0 / 12 - (1.0 / 360 - (1.0 / 1260) / nn) / nn) / n
    if n > 35.0:
        return (1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - (1.0 / 1680) / nn) / nn) / nn) / n
    return (1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - (1.0 / 1680 - (1.0 / 1188) / nn) / nn) / nn)
            / nn) / n


@njit(cache=True)
def _bd0(x, mean):
    """x log(x / mean) + mean - x without cancellation when x is near mean (Loader 2000)."""
    d = x - mean
    if abs(d) >= 0.1 * (x + mean):
        return x * math.log(x / mean) + mean - x
    v = d / (x + mean)
    s, ej, v2 = d * v, 2.0 * x * v, v * v
    j = 1
    while True:
        ej *= v2
        s1 = s + ej / (2 * j + 1)
        if s1 == s:
            return s1
        s = s1
        j += 1


@njit(cache=True, inline="always")
def _ctab_at(ctab, servers, rho_max, i):
    """Entry i of a lazily filled Erlang C table (NaN = not computed yet)."""
    v = ctab[i]
    if v != v:
        v = _erlang_c_point(servers, rho_max * i / (ctab.shape[0] - 1))
        ctab[i] = v
    return v


def erlang_c_table(servers: int, rho_max: float, points: int = 2049) -> np.ndarray:
    """P(wait > 0) in M/M/servers on a utilization grid over [0, rho_max], filled lazily.

    Entries are NaN until the kernel first needs them: a table for thousands of servers costs
    up to O(sqrt(servers)) per entry, and a replay only ever visits a small part of the grid.
    """
    return np.full(points, np.nan)


_CTAB_ROWS: dict[tuple[int, float], np.ndarray] = {}
_CTAB_CACHE_ROWS = 1024  # 16 KB each


def _shared_ctab(servers: int, rho_max: float) -> np.ndarray:
    """The lazily filled Erlang C table of this server count, shared by every fluid model of the
    process: an entry is a pure function of (servers, rho_max, index), so whoever filled it
    first (the oracle's search, an earlier replay) spares the others its cost."""
    key = (int(servers), float(rho_max))
    tab = _CTAB_ROWS.get(key)
    if tab is None:
        if len(_CTAB_ROWS) >= _CTAB_CACHE_ROWS:
            del _CTAB_ROWS[next(iter(_CTAB_ROWS))]
        tab = _CTAB_ROWS[key] = erlang_c_table(int(servers), rho_max)
    return tab


def erlang_c_table_full(servers: int, rho_max: float, points: int = 2049) -> np.ndarray:
    """The whole table at once (tests and plots)."""
    tab = erlang_c_table(servers, rho_max, points)
    for i in range(points):
        _ctab_at(tab, servers, rho_max, i)
    return tab
