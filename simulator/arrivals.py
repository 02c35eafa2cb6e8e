"""Turn a trace into request arrival times. Pure: randomness comes from the Generator passed in.

Counts traces (one count per interval) are never replayed as steps. The rate is a continuous
piecewise-linear function with knots at every interval boundary and midpoint:

- boundary value b between intervals with mean rates r1 and r2 (count / interval):
  b = min((r1 + r2) / 2, 2 * min(r1, r2)); at the trace's first and last edge the edge
  interval's line is extrapolated (b = max(0, 2 r - b_inner), so its midpoint value is r);
- midpoint value m_i = 2 r_i - (b_i + b_{i+1}) / 2, which makes the integral over the interval
  (a trapezoid on each half: dt/4 * (b_i + 2 m_i + b_{i+1})) equal the interval's count exactly.

So where neighbouring rates differ by at most 3x, the rate is exactly the straight line through
the interval means at the midpoints (a linear trend is reproduced as a line); across steeper
jumps the shared boundary value is pulled toward the smaller side, which keeps m_i >= 0 (the
clamp 2*min guarantees b_i + b_{i+1} <= 4 r_i), and a zero interval has a zero rate throughout.
The rescaling is therefore additive at the midpoint, not multiplicative, and the function stays
continuous (multiplying each interval by its own factor would leave a jump at every boundary).

Arrivals: each interval gets exactly its recorded count (this is a non-homogeneous Poisson
process conditioned on the interval counts): the number falling in each half is binomial in the
halves' areas, and each point is placed by the inverse CDF of the linear density on its half.
Random draws come from one seed taken from the caller's Generator and fixed 600-second blocks of
the trace (each block its own child stream), so the arrivals do not depend on the chunk size or
on the replayed window: the same seed gives the same requests at the same times.

Per-request traces (Azure raw) replay the recorded times exactly and use no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from simulator.traces import Trace

BLOCK_S = 600.0  # span of one independent random stream; also the chunk granularity
DEFAULT_CHUNK_S = 3600.0


@dataclass(frozen=True)
class RateFunction:
    """The continuous interpolated rate of a trace (req/s), zero outside the trace.

    knots_s / values_rps: the piecewise-linear rate (2n+1 knots: boundaries and midpoints).
    starts_s: interval starts (n); interval_s: their length; cum_counts: requests before each
    interval boundary (n+1), so cumulative() is exact at boundaries.
    """

    knots_s: np.ndarray
    values_rps: np.ndarray
    starts_s: np.ndarray
    interval_s: float
    cum_counts: np.ndarray

    def __call__(self, t_s: np.ndarray | float) -> np.ndarray:
        return np.interp(t_s, self.knots_s, self.values_rps, left=0.0, right=0.0)

    @property
    def start_s(self) -> float:
        return float(self.knots_s[0])

    @property
    def end_s(self) -> float:
        return float(self.knots_s[-1])

    def cumulative(self, t_s: np.ndarray | float) -> np.ndarray:
        """Expected requests in [start, t): the integral of the rate (exact counts at boundaries)."""
        t = np.clip(np.asarray(t_s, dtype=np.float64), self.start_s, self.end_s)
        n = self.starts_s.size
        i = np.clip(((t - self.start_s) // self.interval_s).astype(np.int64), 0, n - 1)
        h = self.interval_s / 2
        b0, m, b1 = self.values_rps[2 * i], self.values_rps[2 * i + 1], self.values_rps[2 * i + 2]
        x = t - self.starts_s[i]
        x1 = np.minimum(x, h)  # part in the first half
        x2 = np.maximum(x - h, 0.0)  # part in the second half
        first = x1 * (b0 + (b0 + (m - b0) * x1 / h)) / 2
        second = x2 * (m + (m + (b1 - m) * x2 / h)) / 2
        return self.cum_counts[i] + first + second


def rate_function(trace: Trace) -> RateFunction:
    """The interpolated rate of a trace (per-request traces: of its 1-second bins)."""
    dt = trace.bin_s
    r = trace.counts.astype(np.float64) / dt
    n = r.size
    b = np.empty(n + 1)
    lo, hi = np.minimum(r[:-1], r[1:]), (r[:-1] + r[1:]) / 2
    b[1:-1] = np.minimum(hi, 2 * lo)
    if n == 1:
        b[0] = b[1] = r[0]
    else:  # extrapolate the edge intervals' lines; >= 0, and their midpoints stay >= 0
        b[0], b[-1] = max(0.0, 2 * r[0] - b[1]), max(0.0, 2 * r[-1] - b[-2])
    m = np.maximum(2 * r - (b[:-1] + b[1:]) / 2, 0.0)  # >= 0 up to rounding
    values = np.empty(2 * n + 1)
    values[0::2], values[1::2] = b, m
    starts = trace.timestamps_s
    knots = np.empty(2 * n + 1)
    knots[0:-1:2], knots[1::2], knots[-1] = starts, starts + dt / 2, starts[-1] + dt
    cum = np.concatenate(([0.0], np.cumsum(trace.counts, dtype=np.float64)))
    return RateFunction(knots, values, starts, dt, cum)


def _place(
    rf: RateFunction, counts: np.ndarray, first: int, rng: np.random.Generator
) -> np.ndarray:
    """Sorted arrival times for intervals first .. first+len(counts)-1, exactly counts each."""
    total = int(counts.sum())
    if total == 0:
        return np.empty(0)
    n = counts.size
    h = rf.interval_s / 2
    v = rf.values_rps[2 * first : 2 * (first + n) + 1]
    b0, m, b1 = v[0:-1:2], v[1::2], v[2::2]
    area1, area2 = b0 + m, m + b1  # the halves' areas, up to the common factor h/2
    p1 = np.divide(area1, area1 + area2, out=np.full(n, 0.5), where=(area1 + area2) > 0)
    n1 = rng.binomial(counts, p1)
    owner = np.repeat(np.arange(n), counts)
    rank = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    in_first = rank < n1[owner]
    a = np.where(in_first, b0[owner], m[owner])  # density at the segment's start
    e = np.where(in_first, m[owner], b1[owner])  # ... and at its end
    u = rng.random(total)
    # Inverse CDF of a linear density from a to e on [0, 1], in the cancellation-free form.
    denom = a + np.sqrt(a * a + u * (e * e - a * a))
    x = np.divide(u * (a + e), denom, out=u.copy(), where=denom > 0)
    times = rf.starts_s[first + owner] + np.where(in_first, 0.0, h) + np.clip(x, 0.0, 1.0) * h
    times.sort()
    return times


def iter_arrival_chunks(
    trace: Trace,
    start_s: float,
    end_s: float,
    rng: np.random.Generator,
    chunk_s: float = DEFAULT_CHUNK_S,
) -> Iterator[np.ndarray]:
    """Sorted arrival times in [start_s, end_s), yielded in consecutive chunks (some may be empty).

    Concatenated, the chunks are the sorted arrivals. For counts traces chunk_s is rounded to
    whole 600 s blocks of the trace; per-request traces are cut every chunk_s seconds.
    Consumes exactly one draw from `rng` (counts traces), whatever the window and chunk size.
    """
    end_s = min(end_s, trace.end_s)
    start_s = max(start_s, trace.start_s)
    if trace.arrivals_s is not None:
        yield from _request_chunks(trace.arrivals_s, start_s, end_s, chunk_s)
        return
    base_seed = int(rng.integers(0, 2**63))
    if end_s <= start_s:
        return
    rf = rate_function(trace)
    dt = trace.interval_s
    per_block = max(1, round(BLOCK_S / dt))
    n = trace.counts.size
    i_lo = int(np.clip((start_s - trace.start_s) // dt, 0, n - 1))
    i_hi = int(np.clip(math.ceil((end_s - trace.start_s) / dt - 1e-12), 1, n))
    blocks_per_chunk = max(1, round(chunk_s / (per_block * dt)))
    k_lo, k_hi = i_lo // per_block, (i_hi - 1) // per_block + 1
    for k0 in range(k_lo, k_hi, blocks_per_chunk):
        parts = []
        for k in range(k0, min(k0 + blocks_per_chunk, k_hi)):
            j0, j1 = k * per_block, min((k + 1) * per_block, n)
            block_rng = np.random.default_rng([base_seed, k])
            parts.append(_place(rf, trace.counts[j0:j1], j0, block_rng))
        times = np.concatenate(parts) if parts else np.empty(0)
        lo, hi = np.searchsorted(times, start_s, "left"), np.searchsorted(times, end_s, "left")
        yield times[lo:hi]


def _request_chunks(
    arrivals_s: np.ndarray, start_s: float, end_s: float, chunk_s: float
) -> Iterator[np.ndarray]:
    t = start_s
    while t < end_s:
        hi_t = min(t + chunk_s, end_s)
        lo, hi = np.searchsorted(arrivals_s, t, "left"), np.searchsorted(arrivals_s, hi_t, "left")
        yield arrivals_s[lo:hi]
        t = hi_t


def arrival_times(
    trace: Trace, start_s: float, end_s: float, rng: np.random.Generator
) -> np.ndarray:
    """All arrival times in [start_s, end_s) at once (see iter_arrival_chunks to stream)."""
    chunks = list(iter_arrival_chunks(trace, start_s, end_s, rng))
    return np.concatenate(chunks) if chunks else np.empty(0)


def request_indices(trace: Trace, start_s: float, end_s: float) -> slice:
    """For a per-request trace, the slice of its requests (and tokens) in [start_s, end_s)."""
    if trace.arrivals_s is None:
        raise ValueError("request_indices needs a per-request trace")
    a = trace.arrivals_s
    return slice(int(np.searchsorted(a, start_s, "left")), int(np.searchsorted(a, end_s, "left")))


def counts_per_second(trace: Trace, start_s: float, end_s: float) -> np.ndarray:
    """Expected arrivals in each 1-second step [start_s + k, start_s + k + 1) up to end_s.

    From the same rate function as the arrivals (per-request traces: the recorded arrivals per
    step). A last partial step is clipped at end_s. Summed over an original interval that lies
    on the step grid, the result equals that interval's count (up to float rounding).
    """
    n_steps = max(0, math.ceil(end_s - start_s - 1e-9))
    edges = np.minimum(start_s + np.arange(n_steps + 1, dtype=np.float64), end_s)
    if trace.arrivals_s is not None:
        idx = np.searchsorted(trace.arrivals_s, edges, "left")
        return np.diff(idx).astype(np.float64)
    return np.diff(rate_function(trace).cumulative(edges))
