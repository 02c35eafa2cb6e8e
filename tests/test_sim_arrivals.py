"""Arrivals from traces: exact per-interval counts, a continuous rate, seeds, streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.arrivals import (
    arrival_times,
    counts_per_second,
    iter_arrival_chunks,
    rate_function,
    request_indices,
)
from simulator.traces import Trace, load_trace, per_request_trace


def _trace(counts, interval_s: float = 60.0, start_s: float = 0.0) -> Trace:
    counts = np.asarray(counts)
    n = counts.size
    return Trace("t", interval_s, start_s, start_s + n * interval_s, counts,
                 start_s + np.arange(n) * interval_s)


counts_lists = st.lists(st.integers(0, 400), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(counts_lists, st.sampled_from([1.0, 10.0, 60.0, 600.0]), st.integers(0, 2**32))
def test_every_interval_keeps_its_count(counts: list[int], interval_s: float, seed: int) -> None:
    trace = _trace(counts, interval_s)
    times = arrival_times(trace, trace.start_s, trace.end_s, np.random.default_rng(seed))
    assert np.all(np.diff(times) >= 0)
    binned = np.bincount((times // interval_s).astype(int), minlength=len(counts))
    assert binned.tolist() == counts


@settings(max_examples=60, deadline=None)
@given(counts_lists, st.sampled_from([1.0, 60.0, 600.0]))
def test_rate_is_continuous_nonnegative_and_integrates_to_counts(counts: list[int], interval_s: float) -> None:
    trace = _trace(counts, interval_s)
    rf = rate_function(trace)
    assert np.all(rf.values_rps >= 0)
    # Continuity at every interior boundary: limits from both sides agree.
    eps = interval_s * 1e-7
    bounds = trace.timestamps_s[1:]
    scale = max(counts) / interval_s + 1
    assert np.allclose(rf(bounds - eps), rf(bounds + eps), atol=1e-5 * scale)
    # Integral over each interval by a fine trapezoid rule (independent of cumulative()).
    grid = np.linspace(0, trace.end_s, 200 * len(counts) + 1)
    values = rf(grid)
    areas = np.array([np.trapezoid(values[200 * i : 200 * i + 201], grid[200 * i : 200 * i + 201])
                      for i in range(len(counts))])
    assert np.allclose(areas, counts, atol=1e-6 * max(1, max(counts)))
    # counts_per_second sums back to the counts on each interval.
    cps = counts_per_second(trace, 0.0, trace.end_s)
    if interval_s >= 1:
        per = int(interval_s)
        assert np.allclose(cps.reshape(-1, per).sum(1), counts, atol=1e-6 * max(1, max(counts)))


def test_linear_trend_is_reproduced_as_a_line() -> None:
    # Rates 1, 2, 3, 4, 5 req/s over 10 s intervals: the interior is the line through midpoints.
    rf = rate_function(_trace([10, 20, 30, 40, 50], 10.0))
    t = np.array([5.0, 12.5, 20.0, 27.5, 35.0])
    assert np.allclose(rf(t), 1 + (t - 5) / 10)


def test_zero_interval_gets_no_rate_and_no_arrivals() -> None:
    trace = _trace([600, 0, 600], 60.0)
    rf = rate_function(trace)
    assert np.all(rf(np.linspace(60, 120, 101)) == 0)
    times = arrival_times(trace, 0, 180, np.random.default_rng(1))
    assert not np.any((times >= 60) & (times < 120))


def test_rising_interval_has_more_arrivals_in_its_second_half() -> None:
    # Mean rates 150, 200, 250 req/s: the middle interval's rate rises linearly 175 -> 225
    # (boundaries are the neighbour means), so its halves expect 5,625 and 6,375 arrivals.
    trace = _trace([9000, 12000, 15000], 60.0)
    times = arrival_times(trace, 0, 180, np.random.default_rng(2))
    mid = times[(times >= 60) & (times < 120)]
    first, second = np.sum(mid < 90), np.sum(mid >= 90)
    assert first + second == 12000
    sd = np.sqrt(12000 * 0.25)
    assert abs(first - 5625) < 5 * sd and abs(second - 6375) < 5 * sd
    assert second > first


def test_arrivals_follow_the_rate_within_an_interval() -> None:
    # Chi-square of 20 sub-bins of a peaked interval against the rate function's integral.
    trace = _trace([1000, 40000, 1000], 100.0)
    rf = rate_function(trace)
    times = arrival_times(trace, 0, 300, np.random.default_rng(3))
    edges = np.linspace(100, 200, 21)
    observed = np.histogram(times, edges)[0]
    expected = np.diff(rf.cumulative(edges))
    chi2 = np.sum((observed - expected) ** 2 / expected)
    assert chi2 < 45  # 19 dof: p ~ 0.001


def test_same_seed_same_arrivals_other_seed_different() -> None:
    trace = _trace(np.arange(1, 200) * 7, 60.0)
    a = arrival_times(trace, 0, trace.end_s, np.random.default_rng(11))
    b = arrival_times(trace, 0, trace.end_s, np.random.default_rng(11))
    c = arrival_times(trace, 0, trace.end_s, np.random.default_rng(12))
    assert np.array_equal(a, b)
    assert a.size == c.size and not np.array_equal(a, c)


def test_arrivals_do_not_depend_on_chunk_size_or_window() -> None:
    trace = _trace(np.random.default_rng(0).integers(0, 3000, 500), 60.0)
    full = arrival_times(trace, 0, trace.end_s, np.random.default_rng(7))
    for chunk_s in (600, 3600, 10_000):
        chunks = list(iter_arrival_chunks(trace, 0, trace.end_s, np.random.default_rng(7), chunk_s))
        assert np.array_equal(np.concatenate(chunks), full)
        assert len(chunks) > 1
    lo, hi = 4530.0, 20_000.0  # not on the interval grid
    part = arrival_times(trace, lo, hi, np.random.default_rng(7))
    assert np.array_equal(part, full[(full >= lo) & (full < hi)])


def test_per_request_trace_replays_recorded_times() -> None:
    a = np.array([0.1, 0.1, 0.5, 2.25, 7.0])
    trace = per_request_trace("r", a, 8.0, [1, 2, 3, 4, 5], [1, 1, 1, 1, 1])
    assert np.array_equal(arrival_times(trace, 0, 8, np.random.default_rng(0)), a)
    assert np.array_equal(arrival_times(trace, 0.5, 7.0, np.random.default_rng(0)), [0.5, 2.25])
    chunks = list(iter_arrival_chunks(trace, 0, 8, np.random.default_rng(0), chunk_s=1.0))
    assert np.array_equal(np.concatenate(chunks), a)
    assert trace.prompt_tokens[request_indices(trace, 0.5, 7.0)].tolist() == [3, 4]
    assert counts_per_second(trace, 0, 8).tolist() == [3, 0, 1, 0, 0, 0, 0, 1]


def test_azure_replay_equals_recorded(traces: Path) -> None:
    trace = load_trace(traces / "azure-llm-code-2023")
    times = arrival_times(trace, 0, trace.end_s, np.random.default_rng(0))
    assert np.array_equal(times, trace.arrivals_s)
    assert counts_per_second(trace, 0, trace.end_s).sum() == trace.arrivals_s.size


def test_worldcup_window_keeps_minute_counts(traces: Path) -> None:
    trace = load_trace(traces / "worldcup98")
    start, dur = 45 * 86400.0, 6 * 3600.0
    times = arrival_times(trace, start, start + dur, np.random.default_rng(0))
    minutes = np.bincount(((times - start) // 60).astype(int), minlength=int(dur // 60))
    assert np.array_equal(minutes, trace.window(start, dur).counts)
    cps = counts_per_second(trace, start, start + dur)
    assert np.allclose(cps.reshape(-1, 60).sum(1), minutes)
