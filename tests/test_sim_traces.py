"""Trace readers: exact file:line: fault messages, the recorded traces, windows and scaling."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.errors import SimulatorError, TraceError
from simulator.traces import Trace, load_trace, per_request_trace

H = "timestamp_s,requests\n"
A = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
T0 = "2023-11-16 18:17:03.9799600"


@pytest.mark.parametrize(
    ("text", "line", "fault"),
    [
        pytest.param("", 1, "empty file (expected header 'timestamp_s,requests')", id="empty-file"),
        pytest.param(H, 2, "no data rows after the header", id="header-only"),
        pytest.param("time,count\n0,1\n", 1, "expected header 'timestamp_s,requests', found 'time,count'", id="wrong-header"),
        pytest.param("0,1\n60,2\n", 1, "expected header 'timestamp_s,requests', found '0,1'", id="missing-header"),
        pytest.param(H + "0,1\n60,2\n120,abc\n", 4, "non-numeric requests 'abc'", id="non-numeric-count"),
        pytest.param(H + "0,1\n6o,2\n", 3, "non-numeric timestamp_s '6o'", id="non-numeric-timestamp"),
        pytest.param(H + "0,1\n60,-2\n120,3\n", 3, "negative count (-2)", id="negative-count"),
        pytest.param(H + "0,1\n60,2.5\n", 3, "non-integer count (2.5)", id="fractional-count"),
        pytest.param(H + "0,1\n60,1\n120,1\n60,1\n", 5, "timestamps out of order (60 after 120)", id="out-of-order"),
        pytest.param(H + "0,1\n60,1\n60,1\n120,1\n", 4, "duplicated timestamp (60)", id="duplicated"),
        pytest.param(H + "0,1\n60,1\n120,1\n200,1\n", 5, "irregular interval (80 s where the first is 60 s)", id="irregular"),
        pytest.param(H + "0,1\n60,1,7\n120,1\n", 3, "wrong number of cells (expected 2, found 3)", id="extra-cell"),
        pytest.param(H + "0,1\n60\n120,1\n", 3, "missing requests", id="missing-cell"),
        pytest.param(H + "0,1\n\n120,1\n", 3, "empty row", id="blank-line"),
        pytest.param(H + "-60,1\n0,1\n", 2, "negative timestamp_s (-60)", id="negative-timestamp"),
        pytest.param(H + "0,5\n", 2, "a single data row: the interval cannot be inferred", id="single-row"),
        pytest.param(A + f"{T0},10,x\n", 2, "non-numeric GeneratedTokens 'x'", id="azure-non-numeric"),
        pytest.param(A + f"{T0},10,5\n2023-11-16 18:17:03,1,1\n", 3,
                     "TIMESTAMP '2023-11-16 18:17:03' is not 'YYYY-MM-DD HH:MM:SS.fffffff'", id="azure-bad-time"),
        pytest.param(A + f"{T0},10,5\n{T0},-1,5\n", 3, "ContextTokens must be a non-negative integer (-1)", id="azure-negative-tokens"),
        pytest.param(A + f"{T0},10,5\n2023-11-16 18:17:02.0000000,1,1\n", 3,
                     f"timestamps out of order (2023-11-16 18:17:02.0000000 after {T0})", id="azure-out-of-order"),
        pytest.param(A, 2, "no data rows after the header", id="azure-header-only"),
    ],
)
def test_bad_file_names_file_line_and_fault(tmp_path: Path, text: str, line: int, fault: str) -> None:
    path = tmp_path / "series.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    assert str(err.value) == f"{path}:{line}: {fault}"
    assert "\n" not in str(err.value)
    assert isinstance(err.value, SimulatorError)


def test_good_series_file(tmp_path: Path) -> None:
    d = tmp_path / "mytrace"
    d.mkdir()
    (d / "series.csv").write_text(H + "600,3\n1200,0\n1800,7\n")
    trace = load_trace(d)
    assert (trace.name, trace.interval_s, trace.start_s, trace.end_s) == ("mytrace", 600.0, 600.0, 2400.0)
    assert trace.counts.tolist() == [3, 0, 7] and trace.counts.dtype == np.int64
    assert trace.timestamps_s.tolist() == [600.0, 1200.0, 1800.0]
    assert not trace.is_per_request and trace.duration_s == 1800.0
    assert trace.total_requests() == 10
    assert trace.total_requests(1200, 2400) == 7
    assert trace.total_requests(900, 1500) == pytest.approx(1.5)  # half of 3, half of 0


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="neither series.csv nor an Azure raw CSV"):
        load_trace(tmp_path)


def test_worldcup98_loads_whole(traces: Path) -> None:
    stats = json.loads((traces / "worldcup98" / "stats.json").read_text())
    trace = load_trace(traces / "worldcup98")
    assert not trace.is_per_request  # its raw/ file is not the Azure format: series.csv wins
    assert trace.counts.size == stats["n_intervals"] == 125_310
    assert trace.total == stats["total_requests"]
    assert trace.interval_s == stats["interval_s"] and trace.duration_s == stats["duration_s"]


@pytest.mark.parametrize("name", ["azure-llm-code-2023", "azure-llm-conv-2023"])
def test_azure_directory_replays_raw_requests(traces: Path, name: str) -> None:
    trace = load_trace(traces / name)
    series = load_trace(traces / name / "series.csv")
    stats = json.loads((traces / name / "stats.json").read_text())
    assert trace.is_per_request and trace.has_tokens and trace.interval_s == 0
    assert trace.arrivals_s.size == stats["rows"] == trace.prompt_tokens.size
    # Its 1-second bins reproduce the published series exactly.
    assert np.array_equal(trace.counts, series.counts)
    assert trace.end_s == series.end_s
    assert trace.prompt_tokens.mean() == pytest.approx(stats["mean_context_tokens"], abs=0.05)
    assert trace.output_tokens.mean() == pytest.approx(stats["mean_generated_tokens"], abs=0.05)
    # Arrival times equal the recorded timestamps (parsed here independently, row by row).
    raw = next((traces / name / "raw").glob("*.csv")).read_text().splitlines()[1:]
    stamps = [datetime.strptime(r.split(",")[0][:26], "%Y-%m-%d %H:%M:%S.%f") for r in raw[:200]]
    t0 = stamps[0].replace(microsecond=0)
    expected = np.array([(s - t0).total_seconds() for s in stamps])
    assert np.allclose(trace.arrivals_s[:200], expected, atol=1e-6)
    assert np.all(np.diff(trace.arrivals_s) >= 0)


def _counts_trace(counts: list[int], interval_s: float = 60.0) -> Trace:
    n = len(counts)
    return Trace("t", interval_s, 0.0, n * interval_s, np.array(counts), np.arange(n) * interval_s)


def test_window_keeps_the_trace_clock() -> None:
    trace = _counts_trace([1, 2, 3, 4, 5])
    w = trace.window(60, 180)
    assert (w.start_s, w.end_s, w.counts.tolist()) == (60.0, 240.0, [2, 3, 4])
    assert trace.window(240, 1000).counts.tolist() == [5]  # clipped to the trace
    with pytest.raises(TraceError, match="not on the trace's 60 s interval grid"):
        trace.window(30, 60)
    with pytest.raises(TraceError, match="outside the trace"):
        trace.window(600, 60)


def test_per_request_window_and_bins() -> None:
    trace = per_request_trace("r", np.array([0.2, 0.7, 1.5, 2.9, 3.0]), 4.0, [1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert trace.counts.tolist() == [2, 1, 1, 1]
    w = trace.window(1.0, 2.0)
    assert w.arrivals_s.tolist() == [1.5, 2.9] and w.prompt_tokens.tolist() == [3, 4]
    assert w.counts.tolist() == [1, 1] and (w.start_s, w.end_s) == (1.0, 3.0)
    assert trace.total_requests(0.5, 3.0) == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=50), st.floats(0.05, 20.0))
def test_scaled_counts_stay_within_one_of_the_product(counts: list[int], scale: float) -> None:
    scaled = _counts_trace(counts).scaled(scale)
    exact = np.array(counts) * scale
    assert np.all(np.abs(scaled.counts - exact) <= 1.0 + 1e-9)
    assert abs(scaled.total - exact.sum()) <= 0.5 + 1e-6
    assert np.all(scaled.counts >= 0)


def test_scaled_counts_integer_scale_is_exact() -> None:
    assert _counts_trace([3, 0, 7]).scaled(3).counts.tolist() == [9, 0, 21]


def test_scaled_per_request() -> None:
    rng = np.random.default_rng(5)
    a = np.sort(rng.uniform(0, 1000, 20_000))
    trace = per_request_trace("r", a, 1000.0, np.arange(a.size), np.arange(a.size))
    double = trace.scaled(2.0)
    assert double.arrivals_s.size == 2 * a.size
    assert np.all(np.diff(double.arrivals_s) >= 0) and double.arrivals_s[-1] < 1000
    assert np.isin(a, double.arrivals_s).all()  # the originals keep their recorded times
    half = trace.scaled(0.5, seed=1)
    sd = np.sqrt(a.size * 0.25)
    assert abs(half.arrivals_s.size - a.size / 2) < 5 * sd
    assert np.isin(half.arrivals_s, a).all()  # thinning only removes requests
    # Tokens travel with their request.
    assert np.array_equal(half.prompt_tokens, np.searchsorted(a, half.arrivals_s))
    assert np.array_equal(half.arrivals_s, trace.scaled(0.5, seed=1).arrivals_s)
    assert not np.array_equal(half.arrivals_s, trace.scaled(0.5, seed=2).arrivals_s)
    with pytest.raises(TraceError, match="positive"):
        trace.scaled(0.0)
