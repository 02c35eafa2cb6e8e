"""The oracle's fast replay computed from its plan in one compiled call equals the replay event
by event; the fluid model over a per-step replica schedule equals one step call per run; the
cached SLO tables equal their definition."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.registry import PolicySpec
from simulator.compare import default_max_replicas
from simulator.fluid import FluidServer, _slo_tables
from simulator.oracle_need import need_fast
from simulator.profiles import load_profile
from simulator.replay import Replay, ReplayConfig
from simulator.results import PolicyResult
from simulator.traces import Trace, load_trace
from simulator.workload_view import WorkloadView
from simulator.workloads import make_workload

DAY_S = 86400.0


def oracle_pair(trace: Trace, profile: str, start_s: float, duration_s: float,
                routing: str = "lor", pod_mtbf_s: float | None = None
                ) -> tuple[PolicyResult, PolicyResult]:
    """The oracle replayed in fast mode from its plan (default) and event by event."""
    prof = load_profile(profile)
    view = WorkloadView(trace, prof, start_s, start_s + duration_s, prof.slo_s)
    config = ReplayConfig(start_s=start_s, duration_s=duration_s, fidelity="fast",
                          routing=routing, max_replicas=default_max_replicas(view),
                          pod_mtbf_s=pod_mtbf_s)
    need = np.maximum(need_fast(view, config.tick_s, config.max_miss, config.max_replicas,
                                routing), prof.min_replicas)
    planned = Replay(view, PolicySpec("oracle"), config, oracle_need=need).run()
    events = Replay(view, PolicySpec("oracle"), config, oracle_need=need,
                    compiled=False).run()
    return planned, events


def assert_same(planned: PolicyResult, events: PolicyResult) -> None:
    assert planned.requests == events.requests > 0
    assert planned.within_slo == events.within_slo
    assert planned.replica_hours == pytest.approx(events.replica_hours, rel=1e-12)
    assert planned.cold_starts == events.cold_starts
    assert planned.pod_failures == events.pod_failures
    assert planned.scale_events == events.scale_events
    assert planned.under_provisioned_s == events.under_provisioned_s
    assert (planned.p50_ms, planned.p95_ms, planned.p99_ms) == (
        events.p50_ms, events.p95_ms, events.p99_ms)
    for a, b in zip(planned.latency_cdf_ms, events.latency_cdf_ms, strict=True):
        assert np.array_equal(a, b)
    for name in ("t_s", "ready", "total", "demand_rps", "floor"):
        assert np.array_equal(getattr(planned, name), getattr(events, name)), name


def test_worldcup98_day_45_planned_equals_event_by_event(traces: Path) -> None:
    trace = load_trace(traces / "worldcup98")
    planned, events = oracle_pair(trace, "small-model", 45 * DAY_S, DAY_S)
    assert_same(planned, events)
    assert planned.cold_starts > 10  # the plan moved: there were events to get right


@pytest.mark.parametrize(("workload", "profile", "start_s", "duration_s", "routing", "mtbf_s"), [
    pytest.param("flash-crowd", "small-model", 0.0, None, "lor", None, id="flash-crowd-whole"),
    pytest.param("llm-bursty", "llm-7b", 3600.0, 6 * 3600 + 7.5, "random", None,
                 id="llm-bursty-random-routing-odd-end"),
    pytest.param("flash-crowd", "small-model", 1800.0, 8 * 3600, "lor", 2 * 3600.0,
                 id="flash-crowd-with-pod-failures"),
])
def test_builtin_workloads_planned_equals_event_by_event(workload: str, profile: str,
                                                         start_s: float,
                                                         duration_s: float | None, routing: str,
                                                         mtbf_s: float | None) -> None:
    trace = make_workload(workload, seed=0)
    duration = trace.end_s - start_s if duration_s is None else duration_s
    planned, events = oracle_pair(trace, profile, start_s, duration, routing, mtbf_s)
    assert_same(planned, events)
    if mtbf_s is not None:
        assert planned.pod_failures > 0


def exp_samples(mean_s: float, n: int = 2000) -> np.ndarray:
    return -mean_s * np.log(1.0 - (np.arange(n) + 0.5) / n)


@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(st.floats(0.0, 400.0), min_size=1, max_size=120),
       ready_seed=st.integers(0, 2**32 - 1), slots=st.integers(1, 4),
       routing=st.sampled_from(["lor", "random"]))
def test_schedule_equals_one_step_call_per_second(arrivals: list[float], ready_seed: int,
                                                  slots: int, routing: str) -> None:
    """Ready counts change at random steps (0 = no replica: arrivals are held)."""
    per_s = np.asarray(arrivals)
    rng = np.random.default_rng(ready_seed)
    ready = np.repeat(rng.integers(0, 6, per_s.size), rng.integers(1, 8, per_s.size))[:per_s.size]
    args = (slots, 0.04, 1.0, 0.25, exp_samples(0.04))
    batched = FluidServer(*args, routing=routing)
    stepped = FluidServer(*args, routing=routing)
    batched.step_schedule(per_s, ready)
    for i in range(per_s.size):
        stepped.step(per_s[i:i + 1], int(ready[i]))
    assert np.array_equal(batched._state, stepped._state)
    assert np.array_equal(batched.histogram.counts, stepped.histogram.counts)
    assert batched.arrivals == pytest.approx(per_s.sum())


def test_schedule_needs_one_count_per_step() -> None:
    server = FluidServer(1, 0.04, 1.0, 0.25, exp_samples(0.04))
    with pytest.raises(ValueError):
        server.step_schedule(np.ones(5), np.ones(4, dtype=int))


def test_slo_tables_equal_their_definition_and_are_shared() -> None:
    samples = np.sort(exp_samples(0.1, 300))
    slo_s = 0.5
    f_tab, h_tab = _slo_tables(samples, slo_s)
    y = np.linspace(0.0, slo_s, f_tab.size)
    theta = slo_s * np.exp(np.linspace(math.log(1e-3), math.log(1e3), h_tab.shape[0]))
    for j in (0, 1, 100, 512, f_tab.size - 1):
        assert f_tab[j] == np.count_nonzero(samples <= y[j]) / samples.size
        for k in (0, 7, 256, h_tab.shape[0] - 1):
            below = samples[samples <= y[j]]
            want = np.exp(-(y[j] - below) / theta[k]).sum() / samples.size
            assert h_tab[k, j] == pytest.approx(want, rel=1e-9, abs=1e-300)
    again = _slo_tables(samples.copy(), slo_s)  # same content, another array: the same tables
    assert again[0] is f_tab and again[1] is h_tab
    assert not h_tab.flags.writeable
    other = _slo_tables(samples * 1.5, slo_s)
    assert other[1] is not h_tab and not np.array_equal(other[1], h_tab)
