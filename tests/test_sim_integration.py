"""Whole replays through simulator.compare / simulator.replay, checked against theory.

- constant load: the HPA settles on ceil(rate * service_mean / (slots * target)), the formula of
  the Kubernetes HPA, with the profile figures of the issue (small-model: 40 ms, 4 slots);
- causality: arrivals changed after T change no hpa / predictive decision before T;
- the oracle is a lower bound: on each shared trace no policy reaching at least the oracle's
  SLO attainment bills fewer replica-hours;
- determinism: same seed, same summary; another seed, another summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from policies.registry import parse_policy_spec
from simulator.compare import SimulationRequest, default_max_replicas, run_comparison
from simulator.profiles import load_profile
from simulator.replay import Replay, ReplayConfig
from simulator.results import PolicyResult
from simulator.traces import Trace, per_request_trace
from simulator.workload_view import WorkloadView

# small-model figures from the issue (section 3), not read from the code under test
SMALL_SERVICE_MEAN_S = 0.040
SMALL_SLOTS = 4
HPA_TOLERANCE = 0.1  # the Kubernetes default


def replay_one(trace: Trace, spec: str, start_s: float, duration_s: float, *,
               profile: str = "small-model", fidelity: str = "request", seed: int = 0,
               max_replicas: int | None = None) -> PolicyResult:
    """One policy replayed the way run_comparison does it, without the oracle run."""
    prof = load_profile(profile)
    view = WorkloadView(trace, prof, start_s, start_s + duration_s, prof.slo_s)
    config = ReplayConfig(start_s=start_s, duration_s=duration_s, seed=seed, fidelity=fidelity,
                          max_replicas=max_replicas or default_max_replicas(view))
    return Replay(view, parse_policy_spec(spec), config).run()


def counts_trace(rates_rps: list[float], interval_s: float = 60.0) -> Trace:
    """A counts trace holding each rate for one interval."""
    counts = np.round(np.asarray(rates_rps) * interval_s).astype(np.int64)
    n = counts.size
    return Trace(name="constant", interval_s=interval_s, start_s=0.0, end_s=n * interval_s,
                 counts=counts, timestamps_s=np.arange(n) * interval_s)


# ------------------------------------------------------------------------------ constant load
# x = rate * service_mean / (slots * target) is what the HPA formula divides into replicas.
# Each x is chosen so that ceil(x) is the ONLY count the HPA can rest on: one fewer replica
# gives a usage ratio above 1 + tolerance, one more a ratio below 1 - tolerance (ceil(N r) < N).
CONSTANT_CASES = [
    pytest.param(0.5, 2.5, id="target-0.5-x-2.5"),
    pytest.param(0.7, 4.8, id="target-0.7-x-4.8"),
    pytest.param(0.9, 6.9, id="target-0.9-x-6.9"),
]


def test_constant_case_table_has_a_single_resting_point():
    for case in CONSTANT_CASES:
        _, x = case.values
        n = math.ceil(x)
        assert x / (n - 1) > 1 + HPA_TOLERANCE + 0.03
        assert x / (n + 1) < 1 - HPA_TOLERANCE - 0.03
        assert abs(x / n - 1) <= HPA_TOLERANCE + 0.1


@pytest.mark.parametrize("fidelity", ["request", "fast"])
@pytest.mark.parametrize("approach", [0.3, 2.5], ids=["from-below", "from-above"])
@pytest.mark.parametrize("target, x", CONSTANT_CASES)
def test_constant_load_gives_the_hpa_formula_count(target, x, approach, fidelity):
    rate = x * SMALL_SLOTS * target / SMALL_SERVICE_MEAN_S
    expected = math.ceil(rate * SMALL_SERVICE_MEAN_S / (SMALL_SLOTS * target))
    # 10 minutes at another rate so that the HPA must move to get there, then 50 constant
    trace = counts_trace([rate * approach] * 10 + [rate] * 50)
    r = replay_one(trace, f"hpa:target_utilization={target}", 0.0, trace.end_s,
                   fidelity=fidelity)
    steady = r.t_s >= trace.end_s - 20 * 60  # the last 20 minutes
    assert set(r.ready[steady].astype(int)) == {expected}
    assert set(r.total[steady].astype(int)) == {expected}
    # it did have to move: the first minutes ran another count
    assert r.total[r.t_s < 600].astype(int)[0] != expected


# --------------------------------------------------------------------------------- causality
PERIOD_S = 4 * 3600.0
HISTORY_S = 8 * 3600.0  # two periods of warm history before the replay
REPLAY_S = 3 * 3600.0
CHANGE_AT_S = HISTORY_S + 5400.0  # on the 600 s chunk grid of the request-level server


def _poisson_arrivals(rng, rate_fn, t0_s, t1_s):
    secs = np.arange(t0_s, t1_s)
    n = rng.poisson(rate_fn(secs + 0.5))
    times = np.repeat(secs, n) + rng.random(n.sum())
    return np.sort(times)


@pytest.fixture(scope="module")
def causal_pair() -> tuple[Trace, Trace]:
    """Two per-request traces equal before CHANGE_AT_S, different (a 3x surge) after it."""
    rng = np.random.default_rng(7)
    base = lambda t: 180.0 + 120.0 * np.sin(2 * np.pi * t / PERIOD_S)  # noqa: E731
    end = HISTORY_S + REPLAY_S
    a = _poisson_arrivals(rng, base, 0.0, end)
    after = _poisson_arrivals(rng, lambda t: 3.0 * base(t), CHANGE_AT_S, end)
    b = np.concatenate([a[a < CHANGE_AT_S], after])
    return per_request_trace("causal-a", a, end), per_request_trace("causal-b", b, end)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [
    "hpa",
    "hpa:target_utilization=0.5",
    pytest.param("predictive", id="predictive"),
])
def test_decisions_before_a_change_do_not_depend_on_it(causal_pair, spec):
    a, b = causal_pair
    # a fixed replica ceiling: the default one is sized from the window's peak (the future)
    ra, rb = (replay_one(t, spec, HISTORY_S, REPLAY_S, max_replicas=60) for t in (a, b))
    before = ra.t_s < CHANGE_AT_S
    assert np.array_equal(ra.t_s, rb.t_s)
    for series in ("total", "ready", "floor"):
        assert np.array_equal(getattr(ra, series)[before], getattr(rb, series)[before]), series
    # and the change does matter after T (else the test could not fail)
    assert not np.array_equal(ra.total[~before], rb.total[~before])


# ------------------------------------------------------------------ the oracle is a lower bound
LOWER_BOUND_WINDOWS = [
    # trace, profile, start_s, duration_s, fidelity
    pytest.param("worldcup98", "small-model", 3_888_000.0, 86_400.0, "fast", id="worldcup98"),
    pytest.param("alibaba-servegen-llm-14d", "llm-7b", 864_000.0, 172_800.0, "fast",
                 id="servegen"),
    pytest.param("azure-llm-code-2023", "llm-7b", 0.0, None, "request", id="azure-code"),
    pytest.param("azure-llm-conv-2023", "llm-7b", 0.0, None, "request", id="azure-conv"),
]
POLICY_SETS = [
    pytest.param(("hpa:target_utilization=0.5", "hpa:target_utilization=0.7",
                  "hpa:target_utilization=0.9"), id="hpa"),
    pytest.param(("predictive",), id="predictive"),
]


@pytest.mark.slow
@pytest.mark.parametrize("policies", POLICY_SETS)
@pytest.mark.parametrize("name, profile, start_s, duration_s, fidelity", LOWER_BOUND_WINDOWS)
def test_no_policy_matching_the_oracle_costs_less(traces: Path, name, profile, start_s,
                                                  duration_s, fidelity, policies):
    comparison, _ = run_comparison(SimulationRequest(
        trace=traces / name, profile=profile, policies=policies, start_s=start_s,
        duration_s=duration_s, fidelity=fidelity))
    oracle = comparison.oracle
    assert oracle.requests > 0 and oracle.replica_hours > 0
    for r in comparison.results:
        assert r.requests == oracle.requests  # everyone saw the same arrivals
        if r.slo_attainment >= oracle.slo_attainment:
            assert r.replica_hours >= oracle.replica_hours, (
                f"{r.policy} {r.params.get('target_utilization', '')}: "
                f"{100 * r.slo_attainment:.3f} % at {r.replica_hours:.2f} replica-h, oracle "
                f"{100 * oracle.slo_attainment:.3f} % at {oracle.replica_hours:.2f}")


# ------------------------------------------------------------------------------- determinism
def _summary(seed: int, policies: tuple[str, ...], trace: Path | None = None) -> str:
    comparison, _ = run_comparison(SimulationRequest(
        trace=trace, workload=None if trace else "flash-crowd", duration_s=3 * 3600.0,
        seed=seed, policies=policies))
    doc = comparison.to_json()
    doc["oracle"] = comparison.oracle.summary()
    for record in [doc, doc["oracle"], *doc["results"]]:
        record.pop("wall_s", None)  # a measurement of this machine, not a simulated figure
    return json.dumps(doc, sort_keys=True, default=float)


@pytest.mark.parametrize("policies", [
    pytest.param(("hpa", "oracle"), id="hpa+oracle"),
    pytest.param(("predictive",), id="predictive"),
])
def test_same_seed_same_results_other_seed_other_results(policies):
    first = _summary(0, policies)
    assert _summary(0, policies) == first
    assert _summary(1, policies) != first


def test_the_seed_reaches_the_simulator_not_only_the_workload(tmp_path):
    """On a fixed recorded trace only the simulator's draws (arrival placement, service and
    cold start times) depend on the seed."""
    rng = np.random.default_rng(3)
    counts = rng.poisson(150 * 60 * (1 + 0.5 * np.sin(np.arange(240) / 30)))
    path = tmp_path / "series.csv"
    path.write_text("timestamp_s,requests\n"
                    + "".join(f"{60 * i},{c}\n" for i, c in enumerate(counts)))
    first = _summary(0, ("hpa", "oracle"), path)
    assert _summary(0, ("hpa", "oracle"), path) == first
    assert _summary(5, ("hpa", "oracle"), path) != first


def test_a_policy_result_does_not_depend_on_the_others_in_the_run():
    """Replays share the workload view: none may leak state into the next."""
    def records(policies: tuple[str, ...]) -> dict[str, str]:
        comparison, _ = run_comparison(SimulationRequest(
            workload="flash-crowd", duration_s=3 * 3600.0, policies=policies))
        out = {}
        for r in [*comparison.results, comparison.oracle]:
            summary = {k: v for k, v in r.summary().items()
                       if k not in ("wall_s", "cost_vs_oracle")}
            out[r.policy] = json.dumps(summary, sort_keys=True, default=float)
        return out

    alone = records(("predictive",))
    together = records(("hpa", "oracle", "predictive"))
    assert together["predictive"] == alone["predictive"]
    assert together["oracle"] == alone["oracle"]


# ------------------------------------------------------------------- a replay from the first second
@pytest.mark.parametrize(("rates", "start_s", "expected_rps"), [
    pytest.param([300.0] * 20, 0.0, 300.0, id="trace-start-first-minute"),
    # the first minute of the trace lies before the midpoint interpolation reaches 400
    pytest.param([100.0] * 10 + [400.0] * 10, 0.0, 100.0, id="trace-start-before-a-step"),
    pytest.param([100.0] * 10 + [400.0] * 10, 1140.0, 400.0, id="minute-before-a-later-start"),
])
def test_initial_rate_is_the_interpolated_rate_at_the_start(rates, start_s, expected_rps):
    view = WorkloadView(counts_trace(rates), load_profile("small-model"), start_s, 1200.0, 0.25)
    assert view.initial_rate_rps() == pytest.approx(expected_rps)


def test_a_replay_from_the_traces_first_second_sees_its_rate_not_an_idle_history():
    """Before the trace starts the workload is taken to have run at its initial rate: the first
    ticks' rate() reads 300 req/s, never a ramp up from 0 that a trend would extrapolate."""
    from simulator.pipeline import PipelineConfig, ScrapeStore

    view = WorkloadView(counts_trace([300.0] * 20), load_profile("small-model"), 0.0, 1200.0,
                        0.25)
    store = ScrapeStore(PipelineConfig(), 0.0, 1200.0)
    view.seed_store(store, 5)
    assert store.rate_rps(15.0) == pytest.approx(300.0)
    r = replay_one(counts_trace([300.0] * 20), "predictive", 0.0, 1200.0, fidelity="fast")
    # 300 req/s needs 300 * 0.04 / 4 = 3 busy replicas' worth: the floor never overshoots
    assert r.floor.max() <= 6
