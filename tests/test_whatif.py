"""What-if replays (autoscaler/whatif.py) against the real backfilled Prometheus.

The backfill (tests/prom_fixtures.py) holds days 45-47 of worldcup98: the default/demo counter is
the trace (with a 30-minute hole on day 46), team-b/demo is twice the trace. The what-if window
here is the last hours of day 47, away from the hole. Its numbers must equal those of the two
CLI commands it reports, run as a user would run them (subprocesses of .venv/bin/autoscaler).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.metric_presets import counter_queries
from autoscaler.prometheus_source import PrometheusSource
from autoscaler.settings import Settings
from autoscaler.whatif import (
    MAX_WARMUP_S,
    TooManyJobs,
    WhatIfJobs,
    WhatIfSpec,
    json_safe,
    predictive_spec,
    run_whatif,
    select_series,
    whatif_spec_for,
)
from policies.registry import parse_policy_spec
from tests.whatif_fakes import die, echo, gated

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
GROUPED = "sum by (namespace, deployment) (rate(demo_requests_total[2m]))"
WINDOW_S = 3 * 3600
WARMUP_DAYS = 0.125  # 3 h of history before the window
CURRENT = {"quantile": 0.8, "mode": "floor", "dry_run": False}
CANDIDATE = {"quantile": 0.99, "mode": "floor", "dry_run": True}
# every figure of a row except the wall-clock time it took
FIGURES = ("policy", "params", "slo_attainment", "replica_hours", "cost_usd", "cost_vs_oracle",
           "p50_ms", "p95_ms", "p99_ms", "cold_starts", "scale_events", "requests",
           "under_provisioned_s", "fidelity", "reasons")


def settings_for(url: str, *, days: float = WARMUP_DAYS, step_s: float = 60.0,
                 query: str = GROUPED, namespace: str = "default") -> Settings:
    return Settings(prometheus_url=url, history={"days": days, "step_s": step_s},
                    targets=[{"namespace": namespace, "name": "demo",
                              "queries": {"request_rate": query}}])


def spec_for(url: str, until_s: float, **kw) -> WhatIfSpec:
    s = settings_for(url, **kw)
    return whatif_spec_for(s.targets_config()[0], s, CANDIDATE, CURRENT, WINDOW_S, until_s,
                           fidelity="fast")


def figures(comparison: dict) -> list[dict]:
    return [{k: json_safe(r[k]) for k in FIGURES} for r in comparison["results"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- predictive_spec (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "expected"), [
    pytest.param({}, "predictive", id="empty"),
    pytest.param({"quantile": 0.97, "forecaster": "auto", "lead_time_s": None,
                  "slo_part_quantiles_s": [], "trend_floor": True}, "predictive",
                 id="all-defaults"),
    pytest.param({"mode": "direct", "dry_run": True}, "predictive", id="not-simulated"),
    pytest.param({"quantile": 0.99}, "predictive:quantile=0.99", id="quantile"),
    pytest.param({"capacity_rps_per_replica": 100}, "predictive", id="int-equal-to-float"),
    pytest.param({"target_utilization": 0.6, "max_replicas": 20},
                 "predictive:target_utilization=0.6,max_replicas=20", id="two-fields"),
    pytest.param({"trend_floor": False}, "predictive:trend_floor=false", id="bool"),
    pytest.param({"forecaster": "seasonal_naive"}, "predictive:forecaster=seasonal_naive",
                 id="forecaster"),
    pytest.param({"lead_time_s": 120.0}, "predictive:lead_time_s=120.0", id="override"),
])
def test_predictive_spec(doc, expected):
    assert predictive_spec(doc) == expected


@pytest.mark.parametrize("doc", [
    pytest.param({"slo_part_quantiles_s": [0.1, 0.2]}, id="tuple-field"),
    pytest.param({"replicas": 3}, id="unknown-field"),
])
def test_predictive_spec_rejects(doc):
    with pytest.raises(ValueError, match=next(iter(doc))):
        predictive_spec(doc)


@given(quantile=st.floats(0.5, 0.999), max_replicas=st.integers(1, 1000),
       window_s=st.one_of(st.none(), st.floats(0, 1e5)))
def test_predictive_spec_round_trips(quantile, max_replicas, window_s):
    doc = {"quantile": quantile, "max_replicas": max_replicas, "scale_down_window_s": window_s}
    params = parse_policy_spec(predictive_spec(doc)).params
    defaults = {"quantile": 0.97, "max_replicas": 100, "scale_down_window_s": None}
    assert params == {k: v for k, v in doc.items() if v != defaults[k]}


# -- whatif_spec_for (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(("days", "step_s", "warmup_s"), [
    pytest.param(7.0, 60.0, MAX_WARMUP_S, id="week-capped-at-2d"),
    pytest.param(1.0, 60.0, 86_400, id="one-day"),
    pytest.param(0.125, 60.0, 10_800, id="three-hours"),
    pytest.param(0.01, 60.0, 900, id="rounded-up-to-the-step"),  # 864 s -> 15 steps
    pytest.param(0.5, 300.0, 43_200, id="five-minute-step"),
])
def test_spec_warmup_and_step(days, step_s, warmup_s):
    s = settings_for("http://127.0.0.1:9", days=days, step_s=step_s)
    spec = whatif_spec_for(s.targets_config()[0], s, {"quantile": 0.9}, {}, 7 * 86_400,
                           1_700_000_123.5)
    assert spec.warmup_s == warmup_s
    assert spec.step_s == int(step_s)
    assert spec.window_s == 7 * 86_400
    assert spec.until_s % step_s == 0 and 0 <= 1_700_000_123.5 - spec.until_s < step_s
    assert (spec.namespace, spec.name, spec.profile) == ("default", "demo", "small-model")
    assert spec.candidate == {"quantile": 0.9} and spec.current == {}
    assert spec.prometheus_url == "http://127.0.0.1:9"


def test_spec_for_a_preset_target_selects_its_series():
    s = Settings(targets=[{"namespace": "ml", "name": "llama", "preset": "vllm"}])
    spec = whatif_spec_for(s.targets_config()[0], s, {}, {}, 3600, 1_700_000_000)
    assert spec.query.startswith("(sum by (namespace, deployment) (rate(vllm:request_success")
    assert '"namespace", "ml"' in spec.query and '"deployment", "llama"' in spec.query
    assert "or vector(1)" not in spec.query  # preset series always carry the labels


# -- the query selects ONE series (real Prometheus) ------------------------------------------


@pytest.mark.parametrize(("query", "labels", "unlabelled", "expected"), [
    pytest.param(GROUPED, ("default", "demo"), False, 1.0, id="default-demo"),
    pytest.param(GROUPED, ("team-b", "demo"), False, 2.0, id="team-b-demo"),
    pytest.param(GROUPED, ("team-c", "demo"), False, None, id="unknown-target"),
    pytest.param(GROUPED, ("default", "demo"), True, 1.0, id="labelled-wins"),
    pytest.param('sum(rate(demo_requests_total{namespace="default"}[2m]))', ("default", "demo"),
                 True, 1.0, id="unlabelled-custom"),
    pytest.param('sum(rate(demo_requests_total{namespace="default"}[2m]))', ("default", "demo"),
                 False, None, id="unlabelled-not-allowed"),
    pytest.param(counter_queries("demo_requests_total").request_rate, ("team-b", "demo"), False,
                 2.0, id="preset-shape"),
])
def test_select_series(prometheus_backfilled, query, labels, unlabelled, expected):
    bf = prometheus_backfilled
    at_s = bf.last_sample_s + 30 - 7200  # a grid time with data on both series
    source = PrometheusSource(bf.url, step_s=60)
    base = source.instant('sum(rate(demo_requests_total{namespace="default"}[2m]))', at_s)
    got = source.instant(select_series(query, ("namespace", "deployment"), labels,
                                       allow_unlabelled=unlabelled), at_s)
    if expected is None:
        assert got == []
        return
    assert len(got) == 1
    assert float(got[0]["value"][1]) == pytest.approx(expected * float(base[0]["value"][1]))


# -- run_whatif == `autoscaler record` + `autoscaler simulate` -------------------------------


def until_of(bf) -> float:
    return bf.last_sample_s + 30  # a grid time: the last minute's value is there


@pytest.fixture(scope="module")
def whatif(prometheus_backfilled):
    bf = prometheus_backfilled
    spec = spec_for(bf.url, until_of(bf))
    return spec, run_whatif(spec)


@pytest.fixture(scope="module")
def cli_run(whatif, tmp_path_factory):
    """The reported command lines, run by a shell with the venv's `autoscaler` first on PATH."""
    _, result = whatif
    cwd = tmp_path_factory.mktemp("whatif-cli")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    for line in result["command"]:
        done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (line, done.stderr[-2000:])
    return cwd


def test_commands_are_record_then_simulate(whatif):
    spec, result = whatif
    record_line, simulate_line = result["command"]
    assert record_line.startswith("autoscaler record ") and record_line.endswith("> series.csv")
    assert f"--since {WINDOW_S + 10_800}s" in record_line and "--step 60s" in record_line
    assert simulate_line.startswith("autoscaler simulate --trace series.csv --start 10800 ")
    assert f"--duration {WINDOW_S}" in simulate_line
    assert result["labels"] == {"hpa": "hpa", "current": "predictive:quantile=0.8",
                                "candidate": "predictive:quantile=0.99"}


def test_recorded_trace_is_the_targets_own(whatif, cli_run, prometheus_backfilled):
    """The exported minutes are default/demo's (= the trace), not team-b's (twice it)."""
    bf = prometheus_backfilled
    spec, _ = whatif
    rows = np.loadtxt(cli_run / "series.csv", delimiter=",", skiprows=1, dtype=np.int64)
    n = (spec.window_s + spec.warmup_s) // 60 + 1
    assert rows.shape == (n, 2)
    assert np.array_equal(rows[:, 0], 60 * np.arange(n))
    # grid time T holds the minute whose sample is at T - 30 (see tests/test_record.py)
    first_sample = spec.until_s - spec.window_s - spec.warmup_s - 30
    i0 = int(np.flatnonzero(bf.sample_s == first_sample)[0])
    assert np.array_equal(rows[:, 1], bf.requests[i0:i0 + n])


def test_same_numbers_as_the_cli(whatif, cli_run):
    _, result = whatif
    cli = json.loads((cli_run / "whatif.json").read_text())
    ours = result["comparison"]
    for key in ("profile", "slo_ms", "start_s", "duration_s", "seed", "fidelity"):
        assert ours[key] == cli[key], key
    assert ours["start_s"] == 10_800 and ours["duration_s"] == WINDOW_S
    assert figures(ours) == figures(cli)
    assert [r["policy"] for r in ours["results"]] == ["hpa", "predictive", "predictive"]


def test_candidate_is_really_replayed(whatif):
    _, result = whatif
    _, current, candidate = result["comparison"]["results"]
    assert current["params"]["quantile"] == 0.8 and candidate["params"]["quantile"] == 0.99
    # sizing for a higher forecast quantile buys capacity sooner and keeps more of it
    assert candidate["replica_hours"] > current["replica_hours"]
    assert candidate["slo_attainment"] >= current["slo_attainment"]


# -- jobs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_jobs():
    """One pool with the real runner for the tests below (a spawned worker costs seconds)."""
    jobs = WhatIfJobs()
    yield jobs
    jobs.shutdown()


def test_job_runs_the_real_replay_in_another_process(whatif, real_jobs):
    spec, direct = whatif
    job_id = real_jobs.submit("alice", spec)
    assert real_jobs.get(job_id).status in ("running", "done")
    view = real_jobs.wait(job_id, timeout_s=120)
    assert view.status == "done", view.error
    assert view.error is None and view.caller == "alice" and view.target == "default/demo"
    assert view.worker_pid is not None and view.worker_pid != os.getpid()
    assert figures(view.result["comparison"]) == figures(direct["comparison"])
    assert view.result["command"] == direct["command"]


def test_job_failure_is_one_line(real_jobs):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = spec_for(url, 1_700_000_000)
    view = real_jobs.wait(real_jobs.submit("alice", spec), timeout_s=120)
    assert view.status == "failed" and view.result is None
    assert view.error == f"Prometheus at {url} is unreachable or failed: connection refused"


def test_running_then_done_and_per_caller_limit(tmp_path):
    gate = tmp_path / "open"
    jobs = WhatIfJobs(max_running_per_caller=2, workers=1, runner=gated)
    try:
        a1 = jobs.submit("alice", str(gate))
        a2 = jobs.submit("alice", str(gate))
        with pytest.raises(TooManyJobs):
            jobs.submit("alice", str(gate))
        b1 = jobs.submit("bob", str(gate))  # another caller is not limited by alice's jobs
        assert [jobs.get(j).status for j in (a1, a2, b1)] == ["running"] * 3
        assert jobs.get(a1).result is None and jobs.get(a1).submitted_at.endswith("Z")
        gate.touch()
        views = [jobs.wait(j, timeout_s=60) for j in (a1, a2, b1)]
        assert [v.status for v in views] == ["done"] * 3
        assert all(v.result["pid"] == v.worker_pid != os.getpid() for v in views)
        assert jobs.get(a1).error is None and jobs.get(a1).finished_at.endswith("Z")
        jobs.wait(jobs.submit("alice", str(gate)), timeout_s=60)  # finished jobs free the slot
    finally:
        jobs.shutdown()


def test_finished_jobs_are_bounded():
    jobs = WhatIfJobs(keep=2, runner=echo, max_running_per_caller=5)
    try:
        ids = [jobs.submit("alice", i) for i in range(3)]
        # workers=1 runs them in order: when the last is done, the first was dropped
        assert jobs.wait(ids[2], timeout_s=60).result == {"spec": 2}
        assert jobs.get(ids[0]) is None
        assert jobs.get(ids[1]).result == {"spec": 1}
        assert jobs.get("no-such-job") is None
    finally:
        jobs.shutdown()


def test_a_dead_worker_fails_its_job_and_the_pool_recovers():
    jobs = WhatIfJobs(runner=die)
    try:
        view = jobs.wait(jobs.submit("alice", 0), timeout_s=60)
        assert view.status == "failed" and view.worker_pid is None
        assert view.error.startswith("the what-if worker failed: ") and "\n" not in view.error
        jobs.runner = echo  # the next job gets a fresh pool
        assert jobs.wait(jobs.submit("alice", 1), timeout_s=60).result == {"spec": 1}
    finally:
        jobs.shutdown()
