"""The compiled hpa replay in fast mode (simulator/fast_hpa.py) equals the replay event by event,
field by field; replays it does not model fall back to the event path on their own."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.hpa import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, HPABehavior, HPAScalingRules
from policies.registry import PolicySpec
from policies.stabilization import ScalingPolicy
from simulator import erlang
from simulator.compare import default_max_replicas
from simulator.profiles import load_profile
from simulator.replay import Replay, ReplayConfig
from simulator.results import PolicyResult
from simulator.traces import Trace, load_trace
from simulator.workload_view import WorkloadView
from simulator.workloads import make_workload
from tests.conftest import traces_dir

DAY_S = 86400.0


@functools.cache
def _trace(name: str) -> Trace:
    if name in ("flash-crowd", "llm-bursty"):
        return make_workload(name, seed=0)
    path = traces_dir() / name
    if not (path / "series.csv").is_file():
        pytest.fail(f"recorded traces not found at {traces_dir()}: set AUTOSCALER_TRACES_DIR to "
                    "the shared traces directory (CI has it at ../shared/traces)")
    return load_trace(path)


@functools.cache
def _view(trace: str, profile: str, start_s: float, duration_s: float | None) -> WorkloadView:
    tr = _trace(trace)
    prof = load_profile(profile)
    end_s = tr.end_s if duration_s is None else start_s + duration_s
    return WorkloadView(tr, prof, start_s, end_s, prof.slo_s)


class Ticks:
    """A progress callback that counts its calls: the event path calls it at every tick, the
    compiled replay once at the end."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, t_s: float) -> None:
        self.calls += 1


def replay(view: WorkloadView, spec: PolicySpec, compiled: bool, seed: int = 0,
           fidelity: str = "fast", pod_mtbf_s: float | None = None,
           record_decisions: bool = False, max_replicas: int | None = None,
           ) -> tuple[PolicyResult, Replay, Ticks]:
    config = ReplayConfig(start_s=view.start_s, duration_s=view.end_s - view.start_s, seed=seed,
                          fidelity=fidelity, pod_mtbf_s=pod_mtbf_s,
                          max_replicas=max_replicas or default_max_replicas(view))
    ticks = Ticks()
    rp = Replay(view, spec, config, progress=ticks, record_decisions=record_decisions,
                compiled=compiled)
    return rp.run(), rp, ticks


def assert_same(a: PolicyResult, b: PolicyResult) -> None:
    for name in ("requests", "within_slo", "replica_hours", "cold_starts", "pod_failures",
                 "scale_events", "under_provisioned_s", "p50_ms", "p95_ms", "p99_ms", "params",
                 "label", "fidelity"):
        x, y = getattr(a, name), getattr(b, name)
        assert x == y or (x != x and y != y), name  # NaN percentiles when nothing was served
    assert a.reasons == b.reasons
    assert list(a.reasons) == list(b.reasons)  # same first-appearance order (reports list them)
    assert a.latency_cdf_ms is not None and b.latency_cdf_ms is not None
    for x, y in zip(a.latency_cdf_ms, b.latency_cdf_ms, strict=True):
        assert np.array_equal(x, y)
    for name in ("t_s", "ready", "total", "demand_rps", "floor"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def compiled_and_events(view: WorkloadView, spec: PolicySpec, **kw: Any
                        ) -> tuple[PolicyResult, PolicyResult]:
    # each path fills its own Erlang C entries (the process shares them): the compiled one
    # computes them ahead, and a wrong one must not reach the reference through the cache
    erlang._CTAB_ROWS.clear()
    fast, fast_rp, fast_ticks = replay(view, spec, True, **kw)
    erlang._CTAB_ROWS.clear()
    slow, slow_rp, slow_ticks = replay(view, spec, False, **kw)
    assert fast_ticks.calls == 1, "the compiled replay did not run"
    assert slow_ticks.calls == slow.t_s.size > 1
    try:
        assert_same(fast, slow)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: the compiled hpa replay differs (after an edit of "
                             "simulator/fluid.py, erlang.py or fast_hpa_rule.py, delete "
                             "simulator/__pycache__/*.nb*: "
                             "numba's cache does not see other files)") from exc
    # the Replay is left as the event path leaves it
    assert fast_rp.cluster.cold_starts_s == slow_rp.cluster.cold_starts_s
    assert fast_rp.cluster.timeline == slow_rp.cluster.timeline
    assert fast_rp.cluster.billed_pod_s == slow_rp.cluster.billed_pod_s
    assert [(p.pid, p.created_s, p.ready_at_s, p.ready) for p in fast_rp.cluster.pods] == [
        (p.pid, p.created_s, p.ready_at_s, p.ready) for p in slow_rp.cluster.pods]
    assert fast_rp.hstate == slow_rp.hstate
    assert fast_rp.hpa_replicas == slow_rp.hpa_replicas
    for name in ("requests", "busy_slot_s", "ready_pod_s"):
        assert np.array_equal(getattr(fast_rp.store, name), getattr(slow_rp.store, name)), name
    assert np.array_equal(fast_rp.serving.fluid._state, slow_rp.serving.fluid._state)
    # each ready pod's serving replica id, and the id the next ready pod would get
    assert fast_rp._rid == slow_rp._rid
    end_s = fast_rp.cfg.end_s
    assert fast_rp.serving.add_replica(end_s) == slow_rp.serving.add_replica(end_s)
    return fast, slow


MIN_SELECT = HPABehavior(
    scale_up=HPAScalingRules(0.0, (ScalingPolicy("Percent", 50, 60.0),
                                   ScalingPolicy("Pods", 2, 30.0)), "Min"),
    scale_down=HPAScalingRules(120.0, (ScalingPolicy("Pods", 1, 60.0),
                                       ScalingPolicy("Percent", 20, 120.0)), "Min"))
SLOW_UP_FAST_DOWN = HPABehavior(
    scale_up=replace(DEFAULT_SCALE_UP, stabilization_window_s=60.0, tolerance=0.0),
    scale_down=replace(DEFAULT_SCALE_DOWN, stabilization_window_s=0.0, tolerance=0.3))
NO_DOWN = HPABehavior(scale_down=replace(DEFAULT_SCALE_DOWN, select_policy="Disabled"))
NO_UP = HPABehavior(scale_up=replace(DEFAULT_SCALE_UP, select_policy="Disabled"))

WC, SG = ("worldcup98", "small-model", 45 * DAY_S, 2 * DAY_S), (
    "alibaba-servegen-llm-14d", "llm-7b", 0.0, 2 * DAY_S)
FC, LB = ("flash-crowd", "small-model", 0.0, None), ("llm-bursty", "llm-7b", 0.0, None)


@pytest.mark.parametrize(("window", "params", "min_scale_events"), [
    pytest.param(WC, {}, 20, id="worldcup-default"),
    pytest.param(WC, {"target_utilization": 0.5}, 20, id="worldcup-target-0.5"),
    pytest.param(WC, {"target_utilization": 0.9}, 20, id="worldcup-target-0.9"),
    pytest.param(SG, {}, 20, id="servegen-default"),
    pytest.param(SG, {"target_utilization": 0.5}, 20, id="servegen-target-0.5"),
    pytest.param(SG, {"target_utilization": 0.9}, 20, id="servegen-target-0.9"),
    pytest.param(FC, {}, 20, id="flash-crowd-default"),
    pytest.param(LB, {}, 10, id="llm-bursty-default"),
    pytest.param(FC, {"behavior": MIN_SELECT}, 20, id="percent-and-pods-select-min"),
    pytest.param(FC, {"downscale_stabilization_s": 0.0}, 20, id="down-stabilization-0"),
    pytest.param(FC, {"downscale_stabilization_s": 600.0}, 20, id="down-stabilization-600"),
    pytest.param(FC, {"behavior": NO_DOWN}, 3, id="scale-down-disabled"),
    pytest.param(FC, {"behavior": NO_UP}, 0, id="scale-up-disabled"),
    pytest.param(FC, {"behavior": None}, 20, id="legacy-no-behavior"),
    pytest.param(WC, {"behavior": None, "downscale_stabilization_s": 60.0}, 20,
                 id="legacy-short-window"),
    pytest.param(FC, {"tolerance": 0.0}, 20, id="tolerance-0"),
    pytest.param(FC, {"tolerance": 0.4}, 10, id="tolerance-0.4"),
    pytest.param(FC, {"behavior": SLOW_UP_FAST_DOWN}, 20, id="per-direction-tolerance-windows"),
    pytest.param(FC, {"min_replicas": 3}, 20, id="min-replicas-3"),
    pytest.param(FC, {"max_replicas": 4}, 3, id="max-replicas-4-saturates"),
])
def test_compiled_equals_event_by_event(window: tuple, params: dict[str, Any],
                                        min_scale_events: int) -> None:
    fast, _ = compiled_and_events(_view(*window), PolicySpec("hpa", params))
    assert fast.scale_events >= min_scale_events  # the HPA moved: there was something to get
    assert fast.requests > 0


def test_saturated_max_is_hit() -> None:
    """The low max really binds (else the case above would not test saturation)."""
    fast, _ = compiled_and_events(_view(*FC), PolicySpec("hpa", {"max_replicas": 4}))
    assert fast.total.max() == 4 and fast.under_provisioned_s > 0


policies_st = st.lists(st.builds(ScalingPolicy, st.sampled_from(["Pods", "Percent"]),
                                 st.integers(1, 200), st.sampled_from([15.0, 30.0, 60.0, 90.0])),
                       max_size=3).map(tuple)
rules_st = st.builds(HPAScalingRules, st.one_of(st.none(), st.sampled_from([0.0, 15.0, 45.0,
                                                                            120.0])),
                     policies_st, st.sampled_from(["Max", "Min", "Disabled"]),
                     st.one_of(st.none(), st.sampled_from([0.0, 0.05, 0.2])))
behavior_st = st.one_of(st.none(), st.just(HPABehavior()), st.builds(HPABehavior, rules_st,
                                                                     rules_st))


@st.composite
def hpa_params(draw: st.DrawFn) -> dict[str, Any]:
    max_r = draw(st.integers(1, 25))
    return {"target_utilization": draw(st.sampled_from([0.3, 0.5, 0.7, 0.85, 0.95])),
            "tolerance": draw(st.sampled_from([0.0, 0.05, 0.1, 0.25])),
            "min_replicas": draw(st.integers(0, min(max_r, 3))), "max_replicas": max_r,
            "downscale_stabilization_s": draw(st.sampled_from([0.0, 15.0, 60.0, 300.0])),
            "behavior": draw(behavior_st)}


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 30_000), min_size=8, max_size=30),
       interval_s=st.sampled_from([10.0, 60.0]), start_steps=st.integers(0, 2),
       params=hpa_params(), seed=st.integers(0, 3))
def test_random_demand_and_configs_are_identical(counts: list[int], interval_s: float,
                                                 start_steps: int, params: dict[str, Any],
                                                 seed: int) -> None:
    """Short synthetic series (bursts, silences, a warm start inside the trace) and random HPA
    settings, including min_replicas 0 and policy sets that block one direction."""
    n = len(counts)
    trace = Trace("synthetic", interval_s, 0.0, n * interval_s, np.asarray(counts),
                  np.arange(n) * interval_s)
    start = min(start_steps, n - 2) * interval_s
    prof = load_profile("small-model")
    view = WorkloadView(trace, prof, start, trace.end_s, prof.slo_s)
    compiled_and_events(view, PolicySpec("hpa", params), seed=seed)


@pytest.mark.parametrize(("spec", "kw", "check"), [
    pytest.param(PolicySpec("hpa"), {"pod_mtbf_s": 1800.0},
                 lambda r, rp: r.pod_failures > 0, id="pod-failures"),
    pytest.param(PolicySpec("hpa"), {"fidelity": "request"},
                 lambda r, rp: r.fidelity == "request", id="request-fidelity"),
    pytest.param(PolicySpec("hpa"), {"record_decisions": True},
                 lambda r, rp: len(rp.decisions) == r.t_s.size, id="recorded-decisions"),
    pytest.param(PolicySpec("hpa", {"target_rps_per_replica": 50.0}), {},
                 lambda r, rp: r.scale_events > 0, id="external-metric"),
    pytest.param(PolicySpec("predictive"), {},
                 lambda r, rp: sum(r.reasons.values()) == r.t_s.size, id="predictive"),
])
def test_unsupported_replays_fall_back_to_the_event_path(spec: PolicySpec, kw: dict[str, Any],
                                                         check: Any) -> None:
    """The event path runs (one progress call per tick) whatever `compiled` says, and gives
    the same result both ways."""
    view = _view("flash-crowd", "small-model", 0.0, 6 * 3600.0)
    default, default_rp, ticks = replay(view, spec, True, **kw)
    assert ticks.calls == default.t_s.size > 1
    assert check(default, default_rp)
    reference, _, _ = replay(view, spec, False, **kw)
    assert default.requests == reference.requests
    assert default.within_slo == reference.within_slo
    assert default.replica_hours == reference.replica_hours
    assert np.array_equal(default.total, reference.total)


def test_reasons_are_the_python_hpa_strings() -> None:
    fast, _ = compiled_and_events(_view(*FC), PolicySpec("hpa", {"behavior": MIN_SELECT}))
    assert isinstance(fast.reasons, Counter)
    assert set(fast.reasons) <= {"ScalingDisabled", "TooManyReplicas", "TooFewReplicas",
                                 "FailedGetPodsMetric", "DesiredWithinRange", "ScaleUpLimit",
                                 "ScaleDownLimit", "ScaleUpStabilized", "ScaleDownStabilized"}
    assert fast.reasons["ScaleUpLimit"] > 0  # the strict Min policies bound scale-ups
