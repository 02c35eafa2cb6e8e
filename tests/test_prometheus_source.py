"""The Prometheus source against a REAL Prometheus (backfilled from worldcup98, and scraping a
live prometheus-client exporter). Expected values come from series.csv and from Prometheus'
documented rate()/range semantics (2.x: a range [T - w, T] includes both ends; rate() over two
samples 60 s apart, extrapolated to the window, is their difference / 60), never from the code
under test.

Fixture layout (tests/prom_fixtures.py): counter samples at Prometheus time = 30 (mod 60) s,
one per trace minute, holding the cumulative count up to the END of that minute; a 60 s
evaluation grid therefore falls halfway between samples, and rate(x[120s]) at a grid time T is
exactly requests(minute whose sample is at T - 30) / 60.
"""

from __future__ import annotations

import csv
import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_api_client import PrometheusConnect

from autoscaler.errors import MetricsUnavailable, QueryRejected
from autoscaler.metric_presets import (
    PRESETS,
    TargetLabels,
    counter_queries,
    custom_queries,
    preset_queries,
)
from autoscaler.prometheus_source import MetricTarget, PrometheusSource, TargetRef
from tests.conftest import traces_dir

DEMO = TargetRef("default", "demo")
TEAM_B = TargetRef("team-b", "demo")
REL = 1e-9  # counters are exact integers in float64; rate = difference / 60
QUERIES = counter_queries(
    "demo_requests_total", labels=TargetLabels(), rate_window_s=120
)  # namespace/deployment labels are on the series; GPU joined by pod name
TARGETS = [MetricTarget(DEMO, QUERIES), MetricTarget(TEAM_B, QUERIES)]


class RecordingConnect(PrometheusConnect):
    """The real client, remembering each query_range's (start, end, step)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=10)
        self.ranges: list[tuple[float, float, float]] = []

    def custom_query_range(self, query, start_time, end_time, step, params=None, timeout=None):
        self.ranges.append((start_time.timestamp(), end_time.timestamp(), float(step)))
        return super().custom_query_range(query, start_time, end_time, step, params, timeout)


def trace_requests() -> dict[int, int]:
    """worldcup98 requests per minute, read straight from series.csv."""
    with (traces_dir() / "worldcup98" / "series.csv").open() as f:
        return {int(r["timestamp_s"]): int(r["requests"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def minutes(prometheus_backfilled) -> dict[int, int]:
    return trace_requests()


# -- presets (pure, then validated by the real PromQL parser) --------------------------------


@pytest.mark.parametrize(
    ("preset", "counter"),
    [
        pytest.param("vllm", "vllm:request_success_total", id="vllm"),
        pytest.param("triton", "nv_inference_request_success", id="triton"),
        pytest.param("tgi", "tgi_request_count", id="tgi"),
        pytest.param("tf-serving", ":tensorflow:serving:request_count", id="tf-serving"),
        pytest.param("torchserve", "ts_inference_requests_total", id="torchserve"),
        pytest.param("kserve", "http_requests_total", id="kserve"),
    ],
)
def test_preset_rate_groups_by_target_labels(preset: str, counter: str) -> None:
    q = preset_queries(preset, labels=TargetLabels(namespace="ns", workload="app"))
    assert q.request_rate == f"sum by (ns, app) (rate({counter}[120s]))"
    assert q.gpu_util is not None and q.gpu_util.startswith("avg by (ns, app) (")
    assert "DCGM_FI_DEV_GPU_UTIL" in q.gpu_util
    assert q.split_labels == ("ns", "app")


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metrics preset"):
        preset_queries("nope")


def test_every_preset_query_is_valid_promql(prometheus_backfilled) -> None:
    src = PrometheusSource(prometheus_backfilled.url)
    variants = [TargetLabels(), TargetLabels(workload_from_pod=True, workload_kind="StatefulSet")]
    for name in PRESETS:
        for labels in variants:
            for kind, q in preset_queries(name, labels=labels).all_queries().items():
                src.instant(q, prometheus_backfilled.last_sample_s)  # raises QueryRejected if not
                assert kind


@given(st.integers(-(10**6), 10**6), st.integers(0, 50_000), st.integers(1, 11_000))
def test_chunks_partition_the_range(from_k: int, n: int, max_points: int) -> None:
    src = PrometheusSource(max_points_per_query=max_points)
    end_k = from_k + n - 1
    chunks = src.chunks(from_k, end_k)
    covered = [k for a, b in chunks for k in range(a, b + 1)]
    assert covered == list(range(from_k, end_k + 1))
    assert all(b - a + 1 <= max_points for a, b in chunks)
    assert len(chunks) == math.ceil(n / max_points)


# -- per tick, backfilled ------------------------------------------------------------------


def test_tick_rate_and_gpu_match_trace_with_one_query_per_kind(
    prometheus_backfilled, minutes
) -> None:
    bf = prometheus_backfilled
    src = PrometheusSource(bf.url)
    kept_idx = np.flatnonzero(bf.kept[1:] & bf.kept[:-1]) + 1
    peak = int(kept_idx[np.argmax(bf.requests[kept_idx])])
    trough = int(kept_idx[np.argmin(bf.requests[kept_idx])])
    before = bf.server.http_requests("/api/v1/query")
    for j in (peak, trough, 1000, 3000):
        now = float(bf.sample_s[j] + 15)
        # the minute whose count the sample at now - 15 holds starts 60 s earlier
        tau = int(bf.prom_to_trace(bf.sample_s[j] - 60))
        expect_rps = minutes[tau] / 60
        got = src.read_tick(TARGETS, now)
        demo, team_b = got[DEMO], got[TEAM_B]
        assert demo.rate_rps == pytest.approx(expect_rps, rel=REL)
        assert team_b.rate_rps == pytest.approx(2 * expect_rps, rel=REL)
        # pods A and B (B at half of A) average to 0.75 A; other pods and pod-less GPUs excluded
        assert demo.gpu_util_pct == pytest.approx(0.75 * bf.gpu_pct[j], rel=REL)
        assert demo.counter_resets == 0 and not demo.stale
        assert demo.last_sample_age_s == pytest.approx(15.0)
    # four kinds (rate, gpu, resets, last sample), two targets: four HTTP queries per tick
    assert bf.server.http_requests("/api/v1/query") - before == 4 * 4
    assert src.queries_issued["instant"] == 16


@pytest.mark.parametrize(
    ("after_last_s", "rate_present", "age_s", "stale"),
    [
        pytest.param(40, True, 40.0, False, id="fresh"),
        pytest.param(200, False, 200.0, True, id="no-rate-in-window"),
        pytest.param(3600, False, None, True, id="beyond-lookback-never-seen"),
    ],
)
def test_staleness_after_the_series_ends(
    prometheus_backfilled, after_last_s, rate_present, age_s, stale
) -> None:
    bf = prometheus_backfilled
    reading = PrometheusSource(bf.url).read_tick(TARGETS, bf.last_sample_s + after_last_s)[DEMO]
    assert (reading.rate_rps is not None) is rate_present
    assert reading.last_sample_age_s == age_s
    assert reading.stale is stale


def test_stale_age_is_remembered_beyond_lookback(prometheus_backfilled) -> None:
    bf = prometheus_backfilled
    src = PrometheusSource(bf.url)
    src.read_tick(TARGETS, bf.last_sample_s + 40)
    later = src.read_tick(TARGETS, bf.last_sample_s + 3600)[DEMO]
    assert later.stale and later.rate_rps is None
    assert later.last_sample_age_s == pytest.approx(3600.0)


def test_custom_unlabelled_query_belongs_to_its_only_target(prometheus_backfilled, minutes):
    bf = prometheus_backfilled
    q = custom_queries('sum(rate(demo_requests_total{namespace="team-b"}[2m]))')
    j = 2000
    got = PrometheusSource(bf.url).read_tick([MetricTarget(TEAM_B, q)], bf.sample_s[j] + 15)
    tau = int(bf.prom_to_trace(bf.sample_s[j] - 60))
    assert got[TEAM_B].rate_rps == pytest.approx(2 * minutes[tau] / 60, rel=REL)


def test_rejected_query_is_reported_for_its_target_only(prometheus_backfilled) -> None:
    bf = prometheus_backfilled
    broken = MetricTarget(TargetRef("default", "broken"), custom_queries("sum(rate(x[2m]"))
    got = PrometheusSource(bf.url).read_tick([broken, *TARGETS], bf.last_sample_s + 15)
    assert got[broken.ref].errors == ("request_rate",) and got[broken.ref].stale
    assert got[DEMO].errors == () and got[DEMO].rate_rps is not None


def test_nan_values_are_reported_not_dropped(prometheus_backfilled) -> None:
    bf = prometheus_backfilled
    nan_q = custom_queries(
        "sum by (namespace, deployment) (rate(demo_requests_total[2m])) * (0 / 0)"
    )
    target = MetricTarget(TEAM_B, nan_q)
    src = PrometheusSource(bf.url, history_points=60, settle_s=0)
    tick = src.read_tick([target], bf.last_sample_s + 15)[TEAM_B]
    assert tick.nan_kinds == ("request_rate",) and tick.rate_rps is None and tick.stale
    now = bf.last_sample_s + 30
    series, report = src.history([target], now)[TEAM_B]
    assert report.nan_s == ((now - 59 * 60, now + 60),) and report.points == 0
    assert report.gaps_s == () and report.stale and len(series) == 0


def test_unreachable_prometheus_is_metrics_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    src = PrometheusSource(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(MetricsUnavailable) as err:
        src.read_tick(TARGETS, 0.0)
    assert err.value.temporary


# -- history, backfilled ---------------------------------------------------------------------


def test_history_matches_trace_and_reports_the_hole(prometheus_backfilled, minutes) -> None:
    bf = prometheus_backfilled
    n = len(bf.sample_s)
    now = bf.last_sample_s + 30  # a grid time (multiple of 60)
    src = PrometheusSource(bf.url, history_points=n + 10, settle_s=0)
    hist = src.history(TARGETS, now)
    series, report = hist[DEMO]
    # grid T has a value iff the samples at T - 30 and T - 90 both exist
    d0, d1 = bf.hole_sample_s
    assert report.gaps_s == ((d0 + 30, d1 + 90 + 60),)
    n_dropped = int((~bf.kept).sum())
    assert n_dropped == 30
    assert report.points == (n - 1) - (n_dropped + 1)  # first sample has no predecessor
    assert report.first_sample_s == bf.sample_s[1] + 30
    assert report.last_sample_s == now and not report.stale and report.nan_s == ()
    assert series.step_s == 60 and series.start_s == bf.sample_s[1] + 30
    times = series.start_s + 60 * np.arange(len(series))
    expected = np.array([minutes[int(bf.prom_to_trace(t - 90))] / 60 for t in times])
    in_gap = (times >= d0 + 30) & (times < d1 + 150)
    assert np.all(np.isnan(series.values[in_gap]))
    np.testing.assert_allclose(series.values[~in_gap], expected[~in_gap], rtol=REL)
    team_series, team_report = hist[TEAM_B]
    assert team_report.gaps_s == () and team_report.points == n - 1
    np.testing.assert_allclose(team_series.values, 2 * expected, rtol=REL)


@pytest.mark.parametrize(
    ("step_s", "max_points", "history_points", "n_queries"),
    [
        pytest.param(20, 11_000, 3 * 86_400 // 20, 2, id="3d-at-20s-default-limit"),
        pytest.param(60, 1_000, 4_320, 5, id="3d-at-60s-1000-per-query"),
        pytest.param(60, 11_000, 4_320, 1, id="3d-at-60s-one-query"),
    ],
)
def test_chunked_history_returns_every_point_once(
    prometheus_backfilled, step_s, max_points, history_points, n_queries
) -> None:
    bf = prometheus_backfilled
    client = RecordingConnect(bf.url)
    src = PrometheusSource(
        client=client,
        step_s=step_s,
        history_points=history_points,
        max_points_per_query=max_points,
        settle_s=0,
    )
    end_s = (bf.last_sample_s + 30) // step_s * step_s
    before = bf.server.http_requests("/api/v1/query_range")
    series, report = src.history(TARGETS, end_s)[TEAM_B]
    assert bf.server.http_requests("/api/v1/query_range") - before == n_queries
    assert len(client.ranges) == n_queries
    # chunks: contiguous, non-overlapping, each within the limit, covering the window
    starts = [a for a, _, _ in client.ranges]
    ends = [b for _, b, _ in client.ranges]
    assert starts[0] == end_s - (history_points - 1) * step_s and ends[-1] == end_s
    assert all(s2 == e1 + step_s for e1, s2 in zip(ends, starts[1:], strict=False))
    assert all((b - a) / step_s + 1 <= max_points for a, b in zip(starts, ends, strict=True))
    # count: grid T in the window has a value iff >= 2 samples lie in [T - 120, T]
    grid = end_s - step_s * np.arange(history_points)[::-1]
    in_window = np.searchsorted(bf.sample_s, grid, side="right") - np.searchsorted(
        bf.sample_s, grid - 120, side="left"
    )
    assert report.points == int((in_window >= 2).sum())
    assert int(np.sum(~np.isnan(series.values))) == report.points
    assert src.cached_points() == 2 * history_points


def test_prometheus_refuses_more_than_11000_points(prometheus_backfilled) -> None:
    src = PrometheusSource(prometheus_backfilled.url, step_s=20)
    k0 = int(prometheus_backfilled.sample_s[0]) // 20
    src.range(QUERIES.request_rate, k0, k0 + 11_000)  # 11,001 points: accepted
    with pytest.raises(QueryRejected, match="11,000"):
        src.range(QUERIES.request_rate, k0, k0 + 11_001)


def test_incremental_extension_fetches_only_the_new_part(prometheus_backfilled) -> None:
    bf = prometheus_backfilled
    client = RecordingConnect(bf.url)
    src = PrometheusSource(client=client, history_points=1_440, settle_s=0)
    now1 = float(bf.sample_s[2_500] + 30)
    first = src.history(TARGETS, now1)[DEMO][0]
    assert client.ranges == [(now1 - 1_439 * 60, now1, 60.0)]
    now2 = now1 + 600
    second, report = src.history(TARGETS, now2)[DEMO]
    assert client.ranges[1:] == [(now1 + 60, now2, 60.0)]  # ten new points, one query
    assert len(second) == len(first) == 1_440  # bounded: the window slid by ten points
    assert second.start_s == first.start_s + 600
    np.testing.assert_array_equal(second.values[:-10], first.values[10:])
    fresh = PrometheusSource(bf.url, history_points=1_440, settle_s=0).history(TARGETS, now2)
    np.testing.assert_array_equal(fresh[DEMO][0].values, second.values)
    assert src.cached_points() == 2 * 1_440
    src.history(TARGETS, now2)  # nothing new: no query
    assert len(client.ranges) == 2


# -- live scraping ---------------------------------------------------------------------------

LIVE = counter_queries("demo_requests_total", rate_window_s=10)


def _wait_value(prom, ns: str, dep: str, pred) -> None:
    sel = f'demo_requests_total{{namespace="{ns}",deployment="{dep}"}}'
    prom.wait_until(sel, lambda r: len(r) == 1 and pred(float(r[0]["value"][1])))


def test_one_instant_query_serves_several_targets(prometheus_scraping) -> None:
    prom = prometheus_scraping
    deps = ["alpha", "beta", "gamma"]
    pods = {"alpha": "alpha-6b7c8d9f5-bcdfg", "beta": "beta-6b7c8d9f5-hjklm", "gamma": "gamma-0"}
    for i, d in enumerate(deps, start=1):
        prom.exporter.set_gpu("live", pods[d], 10.0 * i)
    stop = threading.Event()

    def drive() -> None:  # beta and gamma always hold exactly 2x and 3x alpha's count
        while not stop.is_set():
            prom.exporter.inc_many({("live", d): float(i) for i, d in enumerate(deps, start=1)})
            time.sleep(0.05)

    worker = threading.Thread(target=drive, daemon=True)
    worker.start()
    try:
        for d in deps:
            _wait_value(prom, "live", d, lambda v: v > 0)
        prom.wait_until(
            'count(count_over_time(demo_requests_total{namespace="live"}[10s]) >= 3)',
            lambda r: len(r) == 1 and float(r[0]["value"][1]) == 3,
        )
        targets = [MetricTarget(TargetRef("live", d), LIVE) for d in deps]
        before = prom.server.http_requests("/api/v1/query")
        got = PrometheusSource(prom.url).read_tick(targets, time.time())
        assert prom.server.http_requests("/api/v1/query") - before == 4  # 3 targets, 4 kinds
    finally:
        stop.set()
        worker.join(timeout=5)
    a, b, g = (got[TargetRef("live", d)] for d in deps)
    assert a.rate_rps is not None and a.rate_rps > 0
    assert b.rate_rps == pytest.approx(2 * a.rate_rps, rel=1e-9)
    assert g.rate_rps == pytest.approx(3 * a.rate_rps, rel=1e-9)
    assert a.gpu_util_pct == pytest.approx(10.0) and b.gpu_util_pct == pytest.approx(20.0)
    assert g.gpu_util_pct is None  # "gamma-0" is not a Deployment pod name
    assert not a.stale and a.counter_resets == 0


def test_counter_reset_is_detected(prometheus_scraping) -> None:
    prom = prometheus_scraping
    prom.exporter.inc("live", "restarts", 100)
    prom.exporter.inc("live", "steady", 100)
    _wait_value(prom, "live", "restarts", lambda v: v == 100)
    prom.exporter.inc("live", "restarts", 50)
    prom.exporter.inc("live", "steady", 50)
    _wait_value(prom, "live", "restarts", lambda v: v == 150)
    prom.exporter.reset("live", "restarts")  # the server restarted
    prom.exporter.inc("live", "restarts", 7)
    _wait_value(prom, "live", "restarts", lambda v: v == 7)
    _wait_value(prom, "live", "steady", lambda v: v == 150)
    targets = [MetricTarget(TargetRef("live", d), LIVE) for d in ("restarts", "steady")]
    got = PrometheusSource(prom.url).read_tick(targets, time.time())
    assert got[TargetRef("live", "restarts")].counter_resets == 1
    assert got[TargetRef("live", "steady")].counter_resets == 0


def test_a_series_that_stops_is_reported_stale(prometheus_scraping) -> None:
    prom = prometheus_scraping
    prom.exporter.inc("live", "stopper", 10)
    _wait_value(prom, "live", "stopper", lambda v: v == 10)
    prom.exporter.inc("live", "stopper", 10)
    _wait_value(prom, "live", "stopper", lambda v: v == 20)
    target = MetricTarget(TargetRef("live", "stopper"), LIVE)
    src = PrometheusSource(prom.url)
    first = src.read_tick([target], time.time())[target.ref]
    assert not first.stale and first.last_sample_age_s is not None
    assert first.last_sample_age_s < 5
    prom.exporter.remove("live", "stopper")
    removed_at = time.time()
    prom.wait_until('demo_requests_total{deployment="stopper"}', lambda r: r == [])
    later = src.read_tick([target], time.time())[target.ref]
    # rate() may still answer for one rate window after the stop; the series is stale at once
    assert later.stale
    assert later.last_sample_age_s is not None
    assert 0 < later.last_sample_age_s < time.time() - removed_at + 5
