"""`autoscaler record` against the real backfilled Prometheus (tests/prom_fixtures.py).

The backfill holds days 45-47 of worldcup98 as counters sampled every 60 s at :30 of the minute;
with `rate(x[2m])` on a 60 s grid, the value at grid time T is the count of the trace minute whose
sample is at T - 30, divided by 60 (Prometheus 2.x extrapolates the two samples 30 s each side to
the window). So the exported `requests` must equal the trace's own per-minute counts, read here
straight from series.csv (bf.requests), except the first minute (no earlier sample).
"""

from __future__ import annotations

import io
import socket
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from autoscaler.cli import app
from autoscaler.record import fill_gaps, parse_duration_s, parse_time_s, record
from simulator.traces import load_series_csv

TEAM_B = 'sum(rate(demo_requests_total{namespace="team-b"}[2m])) / 2'  # = the trace, no hole
DEMO = 'sum(rate(demo_requests_total{namespace="default"}[2m]))'  # the trace, with the hole
THREE_DAYS = "3d"


def run(*args: str):
    return CliRunner().invoke(app, ["record", *args])


def iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def until_of(bf) -> float:
    return bf.last_sample_s + 30  # a grid time: the last minute's value is there


def csv_rows(text: str) -> np.ndarray:
    lines = text.splitlines()
    assert lines[0] == "timestamp_s,requests"
    return np.array([[int(x) for x in ln.split(",")] for ln in lines[1:]], dtype=np.int64)


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def exported(prometheus_backfilled, tmp_path_factory):
    bf = prometheus_backfilled
    result = run("--prometheus", bf.url, "--query", TEAM_B, "--since", THREE_DAYS,
                 "--until", iso(until_of(bf)))
    assert result.exit_code == 0, result.stderr
    path = tmp_path_factory.mktemp("record") / "series.csv"
    path.write_text(result.stdout)
    return path, result


# -- parsing (pure) --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("60s", 60, id="seconds"),
    pytest.param("30m", 1_800, id="minutes"),
    pytest.param("6h", 21_600, id="hours"),
    pytest.param("7d", 604_800, id="days"),
    pytest.param("2w", 1_209_600, id="weeks"),
    pytest.param("1h30m", 5_400, id="compound"),
    pytest.param(" 15S ", 15, id="case-and-space"),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", [
    pytest.param("7", id="no-unit"), pytest.param("7x", id="unknown-unit"),
    pytest.param("1.5m", id="fraction"), pytest.param("-5m", id="negative"),
    pytest.param("0s", id="zero"), pytest.param("30m1h", id="units-out-of-order"),
    pytest.param("1h1h", id="unit-twice"), pytest.param("", id="empty"),
])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_duration_s(text, "--since")


@pytest.mark.parametrize(("text", "epoch_s"), [
    pytest.param("now", 1_000.5, id="now"),
    pytest.param("2026-11-29T12:00:00Z", 1_795_953_600, id="utc-z"),
    pytest.param("2026-11-29T13:00:00+01:00", 1_795_953_600, id="offset"),
])
def test_times(text: str, epoch_s: float) -> None:
    assert parse_time_s(text, now_s=1_000.5) == epoch_s


@pytest.mark.parametrize("text", [
    pytest.param("yesterday", id="word"), pytest.param("2026-11-29T12:00:00", id="no-zone"),
    pytest.param("2026-11-29", id="date-only"), pytest.param("", id="empty"),
])
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError, match="--until"):
        parse_time_s(text, now_s=0.0)


@given(st.lists(st.one_of(st.none(), st.floats(0, 1e4)), min_size=2, max_size=50)
       .filter(lambda v: v[0] is not None and v[-1] is not None))
def test_fills_keep_values_and_stay_between_neighbours(raw) -> None:
    values = np.array([np.nan if v is None else v for v in raw])
    known = ~np.isnan(values)
    zero, linear = fill_gaps(values, "zero"), fill_gaps(values, "linear")
    for filled in (zero, linear):
        assert not np.isnan(filled).any()
        np.testing.assert_array_equal(filled[known], values[known])
    assert np.all(zero[~known] == 0)
    idx = np.flatnonzero(known)
    for i in np.flatnonzero(~known):
        lo, hi = values[idx[idx < i][-1]], values[idx[idx > i][0]]
        assert min(lo, hi) - 1e-9 <= linear[i] <= max(lo, hi) + 1e-9


# -- against the real Prometheus -------------------------------------------------------------


def test_export_equals_the_trace_minutes(prometheus_backfilled, exported) -> None:
    bf = prometheus_backfilled
    path, result = exported
    rows = csv_rows(path.read_text())
    # 3 days = 4320 minutes; the first has no earlier sample for rate()
    assert len(rows) == len(bf.requests) - 1 == 4319
    np.testing.assert_array_equal(rows[:, 0], 60 * np.arange(4319))
    np.testing.assert_array_equal(rows[:, 1], bf.requests[1:])
    assert "recorded 4319 steps of 60 s" in result.stderr and "in 1 range" in result.stderr


def test_export_loads_as_a_trace(prometheus_backfilled, exported) -> None:
    trace = load_series_csv(exported[0])
    assert trace.interval_s == 60 and trace.start_s == 0 and trace.end_s == 4319 * 60
    assert int(trace.counts.sum()) == int(prometheus_backfilled.requests[1:].sum())


def gap_bounds(bf) -> tuple[float, float, float]:
    """(first grid time with a value, gap start, gap end): grid T has a value iff the samples
    at T - 90 and T - 30 both exist, so 30 dropped samples blank 31 grid points."""
    d0, d1 = bf.hole_sample_s
    return bf.sample_s[1] + 30, d0 + 30, d1 + 90 + 60


def test_the_known_gap_fails_naming_it(prometheus_backfilled) -> None:
    bf = prometheus_backfilled
    first, g0, g1 = gap_bounds(bf)
    assert (g1 - g0) / 60 == 31
    line = one_error_line(run("--prometheus", bf.url, "--query", DEMO, "--since", THREE_DAYS,
                              "--until", iso(until_of(bf))))
    assert f"from {iso(g0)} to {iso(g1)}" in line
    assert f"timestamp_s {int(g0 - first)} to {int(g1 - first)}" in line
    assert "31 missing step(s)" in line and "--fill-gaps" in line


@pytest.mark.parametrize("fill", ["zero", "linear"])
def test_the_known_gap_is_filled(prometheus_backfilled, fill: str) -> None:
    bf = prometheus_backfilled
    first, g0, g1 = gap_bounds(bf)
    result = run("--prometheus", bf.url, "--query", DEMO, "--since", THREE_DAYS,
                 "--until", iso(until_of(bf)), "--fill-gaps", fill)
    assert result.exit_code == 0, result.stderr
    got = csv_rows(result.stdout)[:, 1]
    expected = bf.requests[1:].copy()
    a, b = int((g0 - first) // 60), int((g1 - first) // 60)
    if fill == "zero":
        expected[a:b] = 0
    else:  # by hand: the line from the minute before the gap to the minute after it
        left, right = expected[a - 1], expected[b]
        for j in range(1, b - a + 1):
            expected[a + j - 1] = round(left + (right - left) * j / (b - a + 1))
    np.testing.assert_array_equal(got, expected)


def test_chunking_is_invisible(prometheus_backfilled) -> None:
    """3 days at 15 s = 17,280 points: over the limit, two queries; the same trace as 18
    chunks of 1,000. At 60 s, 44 chunks of 100 give the single-query trace."""
    bf = prometheus_backfilled
    until = until_of(bf)
    before = bf.server.http_requests("/api/v1/query_range")
    cli = run("--prometheus", bf.url, "--query", TEAM_B, "--since", THREE_DAYS,
              "--step", "15s", "--until", iso(until))
    assert cli.exit_code == 0, cli.stderr
    assert bf.server.http_requests("/api/v1/query_range") - before == 2
    small = io.StringIO()
    rec = record(small, bf.url, TEAM_B, since_s=3 * 86_400, until_s=until, step_s=15,
                 max_points_per_query=1_000)
    assert rec.queries == 18 and len(rec.values_rps) > 11_000
    assert small.getvalue() == cli.stdout
    one, many = io.StringIO(), io.StringIO()
    assert record(one, bf.url, TEAM_B, since_s=3 * 86_400, until_s=until).queries == 1
    assert record(many, bf.url, TEAM_B, since_s=3 * 86_400, until_s=until,
                  max_points_per_query=100).queries == 44
    assert one.getvalue() == many.getvalue()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("args", "says"), [
    pytest.param(("--since", "7x"), "--since: '7x' is not a duration", id="bad-since"),
    pytest.param(("--since", "0m"), "--since", id="zero-since"),
    pytest.param(("--since", "3d", "--step", "1.5s"), "--step", id="fractional-step"),
    pytest.param(("--since", "3d", "--until", "yesterday"), "--until", id="bad-until"),
    pytest.param(("--since", "3d", "--until", "2026-01-01T00:00:00"), "--until", id="no-zone"),
    pytest.param(("--since", "3d", "--fill-gaps", "cubic"), "--fill-gaps", id="bad-fill"),
    pytest.param(("--since", "30s"), "needs 2 or more", id="window-under-two-steps"),
    pytest.param(("--query", "sum(rate(", "--since", "3d"), "rejected the query",
                 id="rejected-query"),
    pytest.param(("--query", "rate(demo_requests_total[2m])", "--since", "3d"),
                 "several series", id="many-series"),
    pytest.param(("--query", "sum(rate(nothing_total[2m]))", "--since", "3d"), "no data",
                 id="no-data"),
    pytest.param(("--since", "3d", "--unknown"), "--unknown", id="unknown-option"),
    pytest.param(("--query", TEAM_B), "--since", id="missing-since"),
])
def test_bad_arguments_exit_2_with_one_line(prometheus_backfilled, args, says) -> None:
    bf = prometheus_backfilled
    base = ["--prometheus", bf.url]
    if "--query" not in args:
        base += ["--query", TEAM_B]
    if "--until" not in args:
        base += ["--until", iso(until_of(bf))]
    assert says in one_error_line(run(*base, *args))


def test_unreachable_prometheus_is_one_line() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    line = one_error_line(run("--prometheus", url, "--query", TEAM_B, "--since", "1h"))
    assert f"Prometheus at {url} is unreachable" in line


def test_the_exported_trace_replays_in_simulate(exported) -> None:
    result = CliRunner().invoke(app, ["simulate", "--trace", str(exported[0]),
                                      "--duration", "3600", "--policy", "hpa"])
    assert result.exit_code == 0, result.stderr or result.output
    assert "hpa" in result.stdout
