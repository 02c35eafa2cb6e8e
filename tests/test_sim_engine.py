"""The event core and the simulated metric pipeline."""

from __future__ import annotations

import pytest

from simulator.engine import Engine
from simulator.pipeline import PipelineConfig, ScrapeStore


def test_events_run_in_time_then_schedule_order_and_continuous_work_first() -> None:
    seen: list[tuple[str, float]] = []
    eng = Engine(0.0, before_event=lambda t: seen.append(("advance", t)))
    eng.schedule(5.0, lambda: seen.append(("b", eng.now_s)))
    eng.schedule(2.0, lambda: seen.append(("a", eng.now_s)))
    eng.schedule(5.0, lambda: seen.append(("c", eng.now_s)))
    eng.run(10.0)
    assert seen == [("advance", 2.0), ("a", 2.0), ("advance", 5.0), ("b", 5.0),
                    ("advance", 5.0), ("c", 5.0), ("advance", 10.0)]


def test_every_stops_before_until() -> None:
    times: list[float] = []
    eng = Engine(0.0)
    eng.every(15.0, 15.0, times.append, until_s=61.0)
    eng.run(100.0)
    assert times == [15.0, 30.0, 45.0, 60.0]


def test_cannot_schedule_in_the_past() -> None:
    eng = Engine(10.0)
    with pytest.raises(ValueError):
        eng.schedule(9.0, lambda: None)


def _store_with_counter(rate_rps: float, until_s: float) -> ScrapeStore:
    store = ScrapeStore(PipelineConfig(), start_s=0.0, duration_s=until_s, warm=0)
    t = 0.0
    while t <= until_s:
        store.scrape(t, rate_rps * t, 0.5 * 4 * 2 * t, 2 * t)
        t += 15.0
    return store


def test_rate_sees_samples_one_query_lag_old() -> None:
    """Counter rises 10/s until 300 s then 20/s; at 330 s the query sees up to 315 s."""
    store = ScrapeStore(PipelineConfig(), start_s=0.0, duration_s=600.0, warm=0)
    for i in range(0, 41):
        t = 15.0 * i
        c = 10 * t if t <= 300 else 3000 + 20 * (t - 300)
        store.scrape(t, c, 0.0, 0.0)
    # window (255, 315]: samples at 255 (2550) and 315 (3300) -> 750 / 60 = 12.5
    assert store.rate_rps(330.0) == pytest.approx(12.5)
    assert store.newest_sample_s(330.0) == 315.0


def test_utilization_is_busy_share_of_ready_slots() -> None:
    store = _store_with_counter(10.0, 300.0)
    assert store.utilization(300.0, slots_per_replica=4) == pytest.approx(0.5)


def test_no_rate_before_two_samples() -> None:
    store = ScrapeStore(PipelineConfig(), start_s=0.0, duration_s=60.0, warm=0)
    store.scrape(0.0, 0.0, 0.0, 0.0)
    assert store.rate_rps(15.0) is None


def test_a_failed_pod_is_replaced_after_a_cold_start() -> None:
    from simulator.cluster import Cluster

    eng = Engine(0.0)
    ready_at: list[float] = []
    deleted_at: list[float] = []
    failures = iter([100.0, 1e9, 1e9])
    cluster = Cluster(eng, cold_start_s=lambda: 30.0,
                      on_ready=lambda pod, t: ready_at.append(t),
                      on_delete=lambda pod, t: deleted_at.append(t),
                      time_to_failure_s=lambda: next(failures))
    cluster.start_ready(1, 0.0)
    eng.run(200.0)
    cluster.finish(200.0)
    # fails at 100 s, the replacement is created then and ready at 130 s
    assert deleted_at == [100.0] and ready_at == [0.0, 130.0]
    assert cluster.failures == 1 and cluster.spec_replicas == 1
    # billed: 100 s for the first pod + 100 s for the replacement (from creation)
    assert cluster.billed_pod_s == 200.0
