"""`autoscaler policy get|set|history` and `autoscaler whatif`, the REST API's thin clients.

Pure parts as tables of named cases (value parsing, targets, diffs, the comparison table from a
JSON document whose cells are computed by hand). End to end: the REAL app
(`autoscaler run --standalone`, static tokens, a real scraping Prometheus) in a subprocess and
every CLI command as a subprocess against it; every error path is one `error:` line, exit 2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from autoscaler.api_client import ApiClient, ApiClientError, reason_of
from autoscaler.cli_client import (
    COMPARISON_COLUMNS,
    changed_fields,
    comparison_table,
    parse_assignments,
    parse_target,
    parse_value,
    wait_for_job,
    whatif_names,
    whatif_table,
    with_changes,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def render(table) -> str:
    console = Console(width=250, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def cells(text: str) -> list[list[str]]:
    """The data rows of a rendered rich table (box characters stripped)."""
    rows = []
    for line in text.splitlines():
        if "│" not in line and "┃" not in line:
            continue
        parts = [p.strip() for p in re.split(r"[│┃]", line)[1:-1]]
        rows.append(parts)
    return rows


# -- pure: --set values ---------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("0.99", 0.99, id="float"),
    pytest.param("3", 3, id="int"),
    pytest.param("1e3", 1000.0, id="exponent"),
    pytest.param("true", True, id="true"),
    pytest.param("false", False, id="false"),
    pytest.param("null", None, id="null-resets"),
    pytest.param("[0.2, 0.5]", [0.2, 0.5], id="list"),
    pytest.param('"5"', "5", id="quoted-number-is-a-string"),
    pytest.param("auto", "auto", id="bare-word"),
    pytest.param("seasonal-naive", "seasonal-naive", id="word-with-dash"),
    pytest.param("", "", id="empty"),
    pytest.param("01", "01", id="leading-zero-is-not-json"),
    pytest.param("NaN", "NaN", id="nan-stays-text"),
    pytest.param("Infinity", "Infinity", id="infinity-stays-text"),
    pytest.param("True", "True", id="python-bool-is-text"),
])
def test_parse_value(text, expected) -> None:
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                 st.booleans(), st.none(), st.lists(st.floats(-1e6, 1e6), max_size=4)))
def test_parse_value_roundtrips_json(value) -> None:
    assert parse_value(json.dumps(value)) == value


@pytest.mark.parametrize(("items", "expected"), [
    pytest.param(["quantile=0.99"], {"quantile": 0.99}, id="one"),
    pytest.param(["a=1", "b=x"], {"a": 1, "b": "x"}, id="two"),
    pytest.param(["query=a=b"], {"query": "a=b"}, id="first-equals-splits"),
    pytest.param([" lead_time_s =null"], {"lead_time_s": None}, id="key-trimmed"),
    pytest.param([], {}, id="none"),
])
def test_parse_assignments(items, expected) -> None:
    assert parse_assignments(items) == expected


@pytest.mark.parametrize(("items", "message"), [
    pytest.param(["quantile"], "needs key=value", id="no-equals"),
    pytest.param(["=1"], "needs key=value", id="no-key"),
    pytest.param(["a=1", "a=2"], "a given twice", id="repeated"),
])
def test_parse_assignments_rejects(items, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_assignments(items)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("default/demo", ("default", "demo"), id="ok"),
    pytest.param("team-b/llm.v2", ("team-b", "llm.v2"), id="dotted-name"),
    pytest.param("demo", None, id="no-slash"),
    pytest.param("/demo", None, id="no-namespace"),
    pytest.param("default/", None, id="no-name"),
    pytest.param("a/b/c", None, id="two-slashes"),
])
def test_parse_target(text, expected) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            parse_target(text)
    else:
        assert parse_target(text) == expected


def test_with_changes_null_drops_the_field_so_the_default_applies() -> None:
    current = {"quantile": 0.9, "lead_time_s": 60.0, "mode": "floor"}
    assert with_changes(current, {"quantile": 0.99, "lead_time_s": None}) == {
        "quantile": 0.99, "mode": "floor"}
    assert current["lead_time_s"] == 60.0  # not mutated


DEFAULTS = {"quantile": 0.97, "min_replicas": 1, "forecaster": "auto", "lead_time_s": None}


@pytest.mark.parametrize(("old", "new", "expected"), [
    pytest.param({**DEFAULTS}, {**DEFAULTS, "quantile": 0.99}, ["quantile: 0.97 -> 0.99"],
                 id="one-field"),
    pytest.param({**DEFAULTS}, {**DEFAULTS, "min_replicas": 3, "forecaster": "ets"},
                 ["min_replicas: 1 -> 3", "forecaster: auto -> ets"], id="two-in-doc-order"),
    pytest.param(None, {**DEFAULTS, "lead_time_s": 90.0}, ["lead_time_s: null -> 90.0"],
                 id="first-change-against-defaults"),
    pytest.param({**DEFAULTS, "quantile": 0.9}, {"min_replicas": 1}, ["quantile: 0.9 -> 0.97"],
                 id="missing-field-is-default"),
    pytest.param({**DEFAULTS}, {**DEFAULTS}, [], id="nothing"),
])
def test_changed_fields(old, new, expected) -> None:
    assert changed_fields(old, new, DEFAULTS) == expected


# -- pure: the comparison table -------------------------------------------------------------------
def _result(policy: str, **figures: float) -> dict:
    base = {"policy": policy, "params": {}, "slo_attainment": 1.0, "replica_hours": 1.0,
            "cost_usd": 1.0, "cost_vs_oracle": 1.0, "p50_ms": 1.0, "p95_ms": 1.0,
            "p99_ms": 1.0, "cold_starts": 0, "scale_events": 0, "requests": 1,
            "requests_per_replica_hour": 1.0}
    return {**base, **figures}


WHATIF_RESULT = {
    "comparison": {
        "trace": "default-demo", "profile": "small-model", "slo_ms": 250.0, "start_s": 3600.0,
        "duration_s": 86400.0, "seed": 0, "fidelity": "request",
        "results": [
            # 987_654 of 1_000_000 within the SLO -> 98.765 %; 1_000_000 / 1_234.56 = 810 req/h
            _result("hpa", slo_attainment=0.987654, replica_hours=1234.56, cost_usd=2469.12,
                    cost_vs_oracle=1.23456, p50_ms=41.6, p95_ms=1234.5, p99_ms=2500.49,
                    cold_starts=12, scale_events=34, requests=1_000_000,
                    requests_per_replica_hour=1_000_000 / 1234.56),
            _result("predictive", slo_attainment=0.99995, replica_hours=999.94),
            _result("predictive", slo_attainment=0.5, replica_hours=None, p99_ms=None),
        ]},
    "labels": {"hpa": "hpa", "current": "predictive",
               "candidate": "predictive:quantile=0.99"},
}


def test_comparison_table_cells_from_json() -> None:
    assert whatif_names(WHATIF_RESULT) == ["hpa", "current", "candidate"]
    text = render(whatif_table(WHATIF_RESULT, "http://h/whatif/ab"))
    assert "default-demo · profile small-model · SLO 250 ms · request fidelity" in text
    # the caption names each row's policy (the hpa's label is its role: not repeated)
    caption = [line.strip() for line in text.splitlines() if ":" in line and "│" not in line]
    assert caption[-3:] == ["current: predictive", "candidate: predictive:quantile=0.99",
                            "job http://h/whatif/ab"]
    rows = cells(text)
    assert rows[0] == list(COMPARISON_COLUMNS)
    assert rows[1] == ["hpa", "98.765 %", "1,234.6", "2,469.12", "1.235", "42", "1,234",
                       "2,500", "12", "34", "810"]
    assert rows[2][:3] == ["current", "99.995 %", "999.9"]
    # null figures (NaN on the server) are shown, not crashed on
    assert rows[3][:3] == ["candidate", "50.000 %", "n/a"]
    assert rows[3][7] == "n/a"


def test_comparison_table_is_the_simulate_table() -> None:
    """Same cells as simulator.report.table for the same comparison, via its --json."""
    from simulator.report import COLUMNS, table
    from simulator.results import Comparison, PolicyResult

    assert COMPARISON_COLUMNS == COLUMNS
    rng = np.random.default_rng(7)
    results = []
    for name in ("hpa", "predictive", "oracle"):
        r = PolicyResult(policy=name, params={}, fidelity="fast", label=name,
                         requests=int(rng.integers(10_000, 10_000_000)),
                         within_slo=0.0, replica_hours=float(rng.uniform(1, 5000)),
                         cold_starts=int(rng.integers(0, 99)),
                         scale_events=int(rng.integers(0, 999)),
                         p50_ms=float(rng.uniform(1, 100)), p95_ms=float(rng.uniform(100, 900)),
                         p99_ms=float(rng.uniform(900, 9000)),
                         price_per_replica_hour=float(rng.uniform(0.5, 4)))
        r.within_slo = r.requests * float(rng.uniform(0.9, 1.0))
        results.append(r)
    oracle = results[-1]
    for r in results:
        r.cost_vs_oracle = r.replica_hours / oracle.replica_hours
    comparison = Comparison(trace="t", profile="small-model", slo_ms=250.0, start_s=0.0,
                            duration_s=3600.0, seed=0, fidelity="fast", results=results,
                            oracle=oracle)
    doc = json.loads(json.dumps(comparison.to_json(), default=float))
    ours = render(comparison_table(doc, ["hpa", "predictive", "oracle (lower bound)"]))
    assert ours == render(table(comparison))


# -- pure: errors and waiting ---------------------------------------------------------------------
@pytest.mark.parametrize(("status", "body", "expected", "field"), [
    pytest.param(401, {"detail": "missing bearer token"}, "missing bearer token", None,
                 id="detail-string"),
    pytest.param(422, {"detail": {"field": "quantile", "reason": "must be in [0.5, 1)"}},
                 "quantile: must be in [0.5, 1)", "quantile", id="policy-invalid"),
    pytest.param(422, {"detail": [{"loc": ["query", "window"], "msg": "bad duration"}]},
                 "window: bad duration", "window", id="pydantic-list"),
    pytest.param(502, "<html>\n bad   gateway</html>", "<html> bad gateway</html>", None,
                 id="not-json-one-line"),
])
def test_reason_of(status, body, expected, field) -> None:
    if isinstance(body, str):
        response = httpx.Response(status, text=body)
    else:
        response = httpx.Response(status, json=body)
    assert reason_of(response) == (expected, field)


class _Jobs:
    """Answers `running` n times, then done (a stand-in for ApiClient.get_job only)."""

    def __init__(self, running: int) -> None:
        self.running, self.calls = running, 0

    def get_job(self, url: str) -> dict:
        self.calls += 1
        return {"status": "running" if self.calls <= self.running else "done", "result": {}}


@dataclass
class _Clock:
    now_s: float = 0.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, s: float) -> None:
        self.now_s += s


@pytest.mark.parametrize(("running", "timeout_s", "done", "calls"), [
    pytest.param(0, 10.0, True, 1, id="done-at-once"),
    pytest.param(3, 10.0, True, 4, id="done-after-three-polls"),
    pytest.param(100, 2.5, False, 4, id="times-out"),  # polls at 0, 1, 2, 2.5 s
])
def test_wait_for_job(running, timeout_s, done, calls) -> None:
    jobs, clock = _Jobs(running), _Clock()
    if done:
        assert wait_for_job(jobs, "u", timeout_s, clock=clock, sleep=clock.sleep)["status"] == \
            "done"
    else:
        with pytest.raises(ApiClientError, match="still running after 2.5 s"):
            wait_for_job(jobs, "u", timeout_s, clock=clock, sleep=clock.sleep)
    assert jobs.calls == calls


@pytest.mark.parametrize(("base", "location", "expected"), [
    pytest.param("http://h:8080", "/whatif/ab", "http://h:8080/whatif/ab", id="absolute-path"),
    pytest.param("http://h:8080/", "http://x/whatif/ab", "http://x/whatif/ab", id="absolute-url"),
])
def test_job_url_of_location(base, location, expected) -> None:
    with ApiClient(base) as client:
        assert client.url_of(location) == expected


def test_bad_api_url_is_one_line() -> None:
    with pytest.raises(ApiClientError, match="AUTOSCALER_API_URL must be an http"):
        ApiClient.from_env({"AUTOSCALER_API_URL": "127.0.0.1:8080"})


# -- end to end: the real app in a subprocess, the CLI as subprocesses ------------------------------
READ_TOKEN, WRITE_TOKEN = "cli-read-token-0123456789", "cli-write-token-9876543210"
# 60 s samples in the backfilled Prometheus: a rate needs a range of several of them.
RATE_QUERY = "sum by (namespace, deployment) (rate(demo_requests_total[5m]))"
CAPPED = "    policy:\n      capacity_rps_per_replica: 10.0\n      max_replicas: 10\n"
# (namespace, name, policy). team-b/demo has a series in the backfilled Prometheus (the others
# are read and written through the API only) and runs the defaults, for the what-if.
TARGETS = [("default", name, CAPPED) for name in ("demo", "stale", "rejects", "history")] + [
    ("team-b", "demo", "")]
READY_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env.update(extra)
    return env


def _config_yaml(prometheus_url: str) -> str:
    targets = "".join(
        f"  - namespace: {namespace}\n    name: {name}\n"
        f"    queries:\n      request_rate: '{RATE_QUERY}'\n"
        f"    lead_time_default_s: 120\n{policy}"
        for namespace, name, policy in TARGETS)
    # 3 h of history: the what-if warmup, and little for each tick to fetch
    return (f"prometheus_url: {prometheus_url}\ntick_s: 5\nrefit_interval_s: 3600\n"
            f"history:\n  days: 0.125\nleader_election:\n  enabled: false\n"
            f"targets:\n{targets}")


def cli_module() -> str:
    """autoscaler.cli once the lead registered the commands there; until then the same
    commands from autoscaler.cli_client (test_cli_registers_the_commands says which)."""
    from autoscaler.cli import app

    groups = {g.name for g in app.registered_groups}
    return "autoscaler.cli" if "policy" in groups else "autoscaler.cli_client"


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class RunningApi:
    url: str
    proc: subprocess.Popen

    def cli(self, *args: str, token: str | None = READ_TOKEN, url: str | None = None,
            timeout_s: float = 120.0) -> Outcome:
        """The CLI as a subprocess (the entry point, its imports, its exit status)."""
        env = _clean_env(AUTOSCALER_API_URL=url or self.url)
        if token is not None:
            env["AUTOSCALER_API_TOKEN"] = token
        done = subprocess.run([sys.executable, "-m", cli_module(), *args], cwd=PROJECT_ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout_s)
        return Outcome(done.returncode, done.stdout, done.stderr)

    def cli_in_process(self, *args: str, token: str | None = READ_TOKEN) -> Outcome:
        """The same commands in this process (typer's CliRunner): the error table runs
        here, a subprocess start for each case would cost more than the case."""
        import typer
        from typer.testing import CliRunner

        from autoscaler.cli_client import policy_app, whatif

        app = typer.Typer()
        app.add_typer(policy_app, name="policy")
        app.command()(whatif)
        env = {"AUTOSCALER_API_URL": self.url, "AUTOSCALER_API_TOKEN": token}
        result = CliRunner().invoke(app, list(args), env=env)
        return Outcome(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def api(prometheus_backfilled, tmp_path_factory) -> Iterator[RunningApi]:
    if not (PROJECT_ROOT / "autoscaler" / "api.py").is_file():
        pytest.fail("autoscaler/api.py is missing: the REST API is not there to test against")
    workdir = tmp_path_factory.mktemp("cli-api")
    config = workdir / "config.yaml"
    config.write_text(_config_yaml(prometheus_backfilled.url))
    port = _free_port()
    env = _clean_env(AUTOSCALER_API_PORT=str(port),
                     AUTOSCALER_API_TOKENS=f"{READ_TOKEN}:read,{WRITE_TOKEN}:write")
    log = (workdir / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoscaler.cli", "run", "--standalone", "--config", str(config),
         "--state-dir", str(workdir / "state")],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (workdir / "app.log").read_text()[-3000:]
                pytest.fail(f"`autoscaler run --standalone` not serving (exit {proc.poll()}):"
                            f"\n{tail}")
            time.sleep(0.2)
        yield RunningApi(url, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


def one_error_line(done: Outcome) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    return lines[0]


def policy_rows(done: Outcome) -> dict[str, tuple[str, str]]:
    """field -> (value, default) from `policy get` output ('*' marks changed fields)."""
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {}
    for row in cells(done.stdout)[1:]:
        if len(row) == 3 and row[0]:
            rows[row[0].removesuffix(" *")] = (row[1], row[2])
    return rows


def test_cli_registers_the_commands() -> None:
    """The lead registers them in autoscaler/cli.py (see autoscaler/cli_client.py)."""
    from autoscaler.cli import app

    assert "policy" in {g.name for g in app.registered_groups}
    assert "whatif" in {c.name or c.callback.__name__ for c in app.registered_commands}


def test_policy_get_shows_value_and_default(api) -> None:
    done = api.cli("policy", "get", "default/demo")
    rows = policy_rows(done)
    assert rows["capacity_rps_per_replica"] == ("10.0", "100.0")  # the config's, the default
    assert rows["max_replicas"] == ("10", "100")
    assert rows["quantile"] == ("0.97", "0.97")
    assert rows["forecaster"] == ("auto", "auto")
    assert rows["lead_time_s"] == ("null", "null")
    assert rows["mode"] == ("floor", "floor")
    assert "tick_s" not in rows
    assert "capacity_rps_per_replica *" in done.stdout and "quantile *" not in done.stdout


def test_policy_set_then_history_records_who_and_what(api) -> None:
    import hashlib

    done = api.cli("policy", "set", "default/history", "--set", "quantile=0.99",
                   "--set", "forecaster=holt-winters", "--set", "lead_time_s=90",
                   token=WRITE_TOKEN)
    rows = policy_rows(done)
    assert rows["quantile"][0] == "0.99" and rows["forecaster"][0] == "holt-winters"
    assert rows["lead_time_s"][0] == "90.0"  # the API normalizes floats
    # it persisted: a fresh GET reads it back
    assert policy_rows(api.cli_in_process("policy", "get", "default/history"))["quantile"][0] \
        == "0.99"
    # null puts a field back to its default
    rows = policy_rows(api.cli_in_process("policy", "set", "default/history",
                                          "--set", "quantile=null", token=WRITE_TOKEN))
    assert rows["quantile"] == ("0.97", "0.97")

    done = api.cli("policy", "history", "default/history")
    assert done.returncode == 0, done.stderr
    rows = [r for r in cells(done.stdout)[1:] if len(r) == 4]
    who = "token:" + hashlib.sha256(WRITE_TOKEN.encode()).hexdigest()[:6]
    # a change's lines continue on rows with empty when/who/action cells: regroup them
    changes: list[list[str]] = []
    for when, by, action, change in rows:
        if when:
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", when), when
            assert (by, action) == (who, "update")
            changes.append([change])
        elif change:
            changes[-1].append(change)
    assert sorted(changes[0]) == sorted(["quantile: 0.97 -> 0.99",
                                         "forecaster: auto -> holt-winters",
                                         "lead_time_s: null -> 90.0"])
    assert changes[1] == ["quantile: 0.99 -> 0.97"]
    assert len(changes) == 2


def test_stale_etag_is_412_with_a_retry_hint(api) -> None:
    with ApiClient(api.url, READ_TOKEN) as client:
        stale = client.get_policy("default", "stale").etag
    assert stale
    assert api.cli_in_process("policy", "set", "default/stale", "--set", "min_replicas=2",
                              token=WRITE_TOKEN).returncode == 0
    line = one_error_line(api.cli("policy", "set", "default/stale", "--set", "min_replicas=3",
                                  "--if-match", stale, token=WRITE_TOKEN))
    assert "HTTP 412" in line and "changed by someone else" in line and "again" in line
    rows = policy_rows(api.cli_in_process("policy", "get", "default/stale"))
    assert rows["min_replicas"][0] == "2"  # the losing write changed nothing


@pytest.mark.parametrize(("args", "token", "expected"), [
    pytest.param(("policy", "get", "default/demo"), None, "HTTP 401", id="no-token"),
    pytest.param(("policy", "get", "default/demo"), "not-a-token", "HTTP 401", id="bad-token"),
    pytest.param(("policy", "set", "default/rejects", "--set", "quantile=0.9"), READ_TOKEN,
                 "HTTP 403", id="read-token-cannot-write"),
    pytest.param(("policy", "get", "default/nosuch"), READ_TOKEN, "HTTP 404", id="unknown"),
    pytest.param(("policy", "history", "nosuch/demo"), READ_TOKEN, "HTTP 404",
                 id="unknown-history"),
    pytest.param(("policy", "set", "default/nosuch", "--set", "quantile=0.9"), WRITE_TOKEN,
                 "HTTP 404", id="unknown-set"),
    pytest.param(("policy", "set", "default/rejects", "--set", "quantile=1.5"), WRITE_TOKEN,
                 "HTTP 422: quantile", id="out-of-range"),
    pytest.param(("policy", "set", "default/rejects", "--set", "bogus=1"), WRITE_TOKEN,
                 "HTTP 422: bogus", id="unknown-field"),
    pytest.param(("policy", "set", "default/rejects", "--set", "quantile=NaN"), WRITE_TOKEN,
                 "HTTP 422: quantile", id="nan-is-a-string"),
    pytest.param(("policy", "set", "default/rejects", "--set", "forecaster=crystal-ball"),
                 WRITE_TOKEN, "HTTP 422: forecaster", id="unknown-forecaster"),
    pytest.param(("policy", "set", "default/rejects", "--set", "min_replicas=20"), WRITE_TOKEN,
                 "HTTP 422: m", id="min-above-max"),
    pytest.param(("whatif", "default/nosuch", "--no-wait"), READ_TOKEN, "HTTP 404",
                 id="whatif-unknown"),
    pytest.param(("whatif", "default/demo", "--no-wait"), None, "HTTP 401",
                 id="whatif-no-token"),
    pytest.param(("whatif", "default/demo", "--set", "quantile=2", "--no-wait"), READ_TOKEN,
                 "HTTP 422: quantile", id="whatif-invalid-candidate"),
    pytest.param(("whatif", "default/demo", "--window", "soon", "--no-wait"), READ_TOKEN,
                 "HTTP 422: window", id="whatif-bad-window"),
    pytest.param(("policy", "set", "default/rejects"), WRITE_TOKEN, "nothing to change",
                 id="no-set"),
    pytest.param(("policy", "set", "default/rejects", "--set", "quantile"), WRITE_TOKEN,
                 "key=value", id="set-without-equals"),
    pytest.param(("policy", "get", "demo"), READ_TOKEN, "NAMESPACE/NAME", id="bad-target"),
])
def test_errors_are_one_line_exit_2(api, args, token, expected) -> None:
    line = one_error_line(api.cli_in_process(*args, token=token))
    assert expected in line, line
    for secret in (READ_TOKEN, WRITE_TOKEN):
        assert secret not in line


def test_rejected_updates_leave_the_policy_unchanged(api) -> None:
    before = policy_rows(api.cli_in_process("policy", "get", "default/rejects"))
    line = one_error_line(api.cli("policy", "set", "default/rejects", "--set", "quantile=0.99",
                                  "--set", "max_replicas=0", token=WRITE_TOKEN))
    assert "HTTP 422: max_replicas" in line
    assert policy_rows(api.cli_in_process("policy", "get", "default/rejects")) == before


def test_unreachable_api_is_one_line(api) -> None:
    closed = f"http://127.0.0.1:{_free_port()}"
    line = one_error_line(api.cli("policy", "get", "default/demo", url=closed))
    assert f"cannot reach the API at {closed}" in line


def test_whatif_no_wait_prints_the_job_url(api) -> None:
    done = api.cli_in_process("whatif", "team-b/demo", "--set", "quantile=0.99",
                              "--window", "1d", "--no-wait")
    assert done.returncode == 0, done.stderr
    job_url = done.stdout.strip()
    assert re.fullmatch(re.escape(api.url) + r"/whatif/[0-9a-f]{32}", job_url), job_url
    with ApiClient(api.url, READ_TOKEN) as client:
        job = wait_for_job(client, job_url, 120.0)  # also: no job left running at teardown
    assert job["status"] == "done", job.get("error")


def test_whatif_prints_the_comparison_of_the_jobs_result(api) -> None:
    done = api.cli("whatif", "team-b/demo", "--set", "quantile=0.99", "--set",
                   "scale_down_max_fraction=0.5", "--window", "1d", "--timeout", "120")
    assert done.returncode == 0, done.stderr[-2000:]
    job_url = re.search(r"job (http://\S+)", done.stdout).group(1)
    with ApiClient(api.url, READ_TOKEN) as client:
        job = client.get_job(job_url)
    results = job["result"]["comparison"]["results"]
    assert [r["policy"] for r in results] == ["hpa", "predictive", "predictive"]
    rows = {r[0]: r for r in cells(done.stdout)[1:] if r and r[0]}
    assert list(rows) == ["hpa", "current", "candidate"]
    for role, r in zip(("hpa", "current", "candidate"), results, strict=True):
        row = rows[role]
        assert float(row[1].removesuffix(" %")) == pytest.approx(100 * r["slo_attainment"],
                                                                  abs=5e-4)
        assert float(row[2].replace(",", "")) == pytest.approx(r["replica_hours"], abs=0.05)
        assert int(row[8]) == r["cold_starts"] and int(row[9]) == r["scale_events"]
    # the candidate is the current policy with the two changes, nothing else
    labels = job["result"]["labels"]
    assert labels["current"] == "predictive"  # the target runs the defaults
    assert labels["candidate"] in ("predictive:quantile=0.99,scale_down_max_fraction=0.5",
                                   "predictive:scale_down_max_fraction=0.5,quantile=0.99")
    assert f"candidate: {labels['candidate']}" in " ".join(done.stdout.split())



@pytest.mark.parametrize(("window", "note"), [
    pytest.param({"from": "2026-11-26T21:44:00Z", "until": "2026-11-29T21:49:00Z",
                  "asked_s": 7 * 86_400, "warmup_s": 0, "recorded_from": "2026-11-26T21:44:00Z"},
                 "only 72.1 h of the asked 168.0 h replayed (history starts "
                 "2026-11-26T21:44:00Z, warm-up 0.0 h)", id="shorter-than-asked"),
    pytest.param({"from": "2026-11-22T21:49:00Z", "until": "2026-11-29T21:49:00Z",
                  "asked_s": 7 * 86_400, "warmup_s": 172_800}, None, id="as-asked"),
])
def test_whatif_caption_says_when_less_than_the_window_was_replayed(window, note) -> None:
    text = render(whatif_table({**WHATIF_RESULT, "window": window}))
    assert f"window {window['from']} to {window['until']}" in text
    if note is None:
        assert "only " not in text
    else:
        assert note in " ".join(line.strip() for line in text.splitlines())
