"""`autoscaler simulate` end to end: the JSON document of issue section 7, the HTML report, and
one line on stderr (non-zero exit, no traceback) for every user error."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autoscaler.cli import app
from policies.hpa import HPAConfig
from policies.predictive import PredictiveConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOP_KEYS = {"trace", "profile", "slo_ms", "results"}
RESULT_KEYS = {"policy", "params", "slo_attainment", "replica_hours", "cost_vs_oracle",
               "p50_ms", "p95_ms", "p99_ms", "cold_starts", "scale_events"}


def invoke(*args: str):
    return CliRunner().invoke(app, ["simulate", *args])


# ------------------------------------------------------------------------------ a whole run
@pytest.fixture(scope="module", params=[
    pytest.param(("--policy", "hpa:target_utilization=0.6", "--policy", "oracle"),
                 id="hpa-and-oracle"),
    pytest.param((), id="default-policies"),
])
def run(request, tmp_path_factory) -> tuple[dict, Path, tuple[str, ...]]:
    out = tmp_path_factory.mktemp("cli")
    policy_args = request.param
    result = invoke("--workload", "flash-crowd", "--duration", "7200", *policy_args,
                    "--json", str(out / "out.json"), "--report", str(out / "report"))
    assert result.exit_code == 0, result.stderr or repr(result.exception)
    return json.loads((out / "out.json").read_text()), out / "report", policy_args


def test_json_has_the_documented_shape(run):
    doc, _, policy_args = run
    assert doc.keys() >= TOP_KEYS
    assert doc["trace"] == "flash-crowd"
    assert doc["profile"] == "small-model"
    assert doc["slo_ms"] == 250  # the small-model SLO of the issue
    policies = [r["policy"] for r in doc["results"]]
    expected = ["hpa", "oracle"] if policy_args else ["hpa", "predictive", "oracle"]
    assert policies == expected  # bare names, in the order given
    for r in doc["results"]:
        assert r.keys() >= RESULT_KEYS, r["policy"]
        assert isinstance(r["params"], dict)
        assert 0.0 <= r["slo_attainment"] <= 1.0
        assert r["replica_hours"] > 0
        for key in ("cold_starts", "scale_events"):
            assert isinstance(r[key], int) and r[key] >= 0
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["p50_ms"] > 0


def test_cost_vs_oracle_divides_by_the_oracle(run):
    doc, _, _ = run
    by_name = {r["policy"]: r for r in doc["results"]}
    oracle = by_name["oracle"]
    assert oracle["cost_vs_oracle"] == pytest.approx(1.0)
    for r in doc["results"]:
        assert r["cost_vs_oracle"] == pytest.approx(r["replica_hours"] / oracle["replica_hours"])


def _expected_params(config_type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_type)}


def test_params_hold_every_effective_parameter(run):
    doc, _, policy_args = run
    by_name = {r["policy"]: r for r in doc["results"]}
    hpa = by_name["hpa"]["params"]
    assert _expected_params(HPAConfig) <= hpa.keys()
    assert hpa["target_utilization"] == (0.6 if policy_args else HPAConfig().target_utilization)
    assert hpa["tolerance"] == HPAConfig().tolerance
    assert isinstance(hpa["max_replicas"], int) and hpa["max_replicas"] >= 1
    assert "max_miss" in by_name["oracle"]["params"]
    if "predictive" in by_name:
        pred = by_name["predictive"]["params"]
        assert _expected_params(PredictiveConfig) <= pred.keys()
        assert {"hpa_" + k for k in _expected_params(HPAConfig)} <= pred.keys()
        for value in pred.values():
            json.dumps(value)  # every value is plain JSON


def test_report_has_index_html_and_the_pngs_it_shows(run):
    doc, report, _ = run
    index = (report / "index.html").read_text()
    shown = re.findall(r'<img src="([^"]+)"', index)
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert sorted(set(shown)) == pngs
    # one demand-vs-capacity plot per policy, and the latency CDF
    assert len(pngs) >= len(doc["results"]) + 1
    for name in pngs:
        assert (report / name).read_bytes()[:8] == PNG_MAGIC, name


# ------------------------------------------------------------------------------ user errors
def _write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


ERROR_CASES = [
    # id, args (with {bad_*} files filled in), a word the message must contain
    ("non-numeric-cell", ["--trace", "{nonnumeric}"], "nonnumeric.csv"),
    ("wrong-header", ["--trace", "{header}"], "header.csv"),
    ("negative-count", ["--trace", "{negative}"], "negative.csv"),
    ("out-of-order", ["--trace", "{order}"], "order.csv"),
    ("empty-file", ["--trace", "{empty}"], "empty.csv"),
    ("missing-file", ["--trace", "/nonexistent/series.csv"], "/nonexistent"),
    ("unknown-policy", ["--workload", "flash-crowd", "--policy", "magic"], "magic"),
    ("unknown-parameter", ["--workload", "flash-crowd", "--policy", "hpa:speed=3"], "speed"),
    ("non-numeric-parameter", ["--workload", "flash-crowd", "--policy",
                               "hpa:target_utilization=high"], "target_utilization"),
    ("non-positive-parameter", ["--workload", "flash-crowd", "--policy",
                                "hpa:target_utilization=0"], "target_utilization"),
    ("predictive-unknown-parameter", ["--workload", "flash-crowd", "--policy",
                                      "predictive:nonsense=1"], "nonsense"),
    ("start-after-trace", ["--workload", "flash-crowd", "--start", "1e9"], "--start"),
    ("start-before-trace", ["--workload", "flash-crowd", "--start", "-10"], "--start"),
    ("both-inputs", ["--workload", "flash-crowd", "--trace", "{nonnumeric}"], "--trace"),
    ("neither-input", ["--profile", "small-model"], "--trace"),
    ("unknown-profile", ["--workload", "flash-crowd", "--profile", "huge-model"], "huge-model"),
    ("bad-fidelity", ["--workload", "flash-crowd", "--fidelity", "medium"], "fidelity"),
    ("unknown-workload", ["--workload", "sawtooth"], "sawtooth"),
    ("non-positive-duration", ["--workload", "flash-crowd", "--duration", "0"], "duration"),
    ("non-positive-rate-scale", ["--workload", "flash-crowd", "--rate-scale", "-2"], "scale"),
    ("non-positive-slo", ["--workload", "flash-crowd", "--slo-ms", "0"], "slo"),
    ("non-integer-seed", ["--workload", "flash-crowd", "--seed", "abc"], "seed"),
    ("non-numeric-duration", ["--workload", "flash-crowd", "--duration", "long"], "duration"),
    ("unknown-option", ["--workload", "flash-crowd", "--speed", "3"], "--speed"),
]

BAD_FILES = {
    "nonnumeric": "timestamp_s,requests\n0,5\n60,x\n",
    "header": "time,count\n0,5\n60,6\n",
    "negative": "timestamp_s,requests\n0,5\n60,-6\n",
    "order": "timestamp_s,requests\n0,5\n120,6\n60,7\n",
    "empty": "",
}


@pytest.mark.parametrize("args, must_mention",
                         [pytest.param(a, m, id=i) for i, a, m in ERROR_CASES])
def test_user_error_is_one_line_on_stderr(tmp_path, args, must_mention):
    files = {k: _write(tmp_path, f"{k}.csv", v) for k, v in BAD_FILES.items()}
    result = invoke(*(a.format(**files) for a in args))
    assert result.exit_code != 0
    # the CLI exited by itself (typer.Exit / SystemExit), no exception escaped
    assert result.exception is None or isinstance(result.exception, SystemExit)
    err = result.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert must_mention.lower() in err.lower(), err
    assert result.stdout.strip() == ""


def test_a_user_error_in_a_real_process_has_no_traceback(tmp_path):
    bad = _write(tmp_path, "series.csv", BAD_FILES["negative"])
    proc = subprocess.run([sys.executable, "-m", "autoscaler.cli", "simulate", "--trace", bad],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "series.csv" in lines[0] and ":3" in lines[0]  # the file and its bad line


def test_json_numbers_are_finite_or_documented(run):
    doc, _, _ = run
    for r in doc["results"]:
        for key in ("slo_attainment", "replica_hours", "cost_vs_oracle"):
            assert math.isfinite(r[key]), (r["policy"], key)
