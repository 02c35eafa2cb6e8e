"""The service shell: the API's probes and metrics, the scheduler's jobs, and `autoscaler run`.

Against a REAL Prometheus scraping a live exporter (tests/prom_fixtures.py); standalone mode,
so no Kubernetes is involved. Every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autoscaler.app import create_app
from autoscaler.errors import ConfigError
from autoscaler.service import LEASE_JOB, REFIT_EXECUTOR, REFIT_PREFIX, TICK_JOB, build_service
from autoscaler.settings import Settings
from tests.process_support import reaped, stop

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = PROJECT_ROOT / "examples" / "standalone.yaml"
RATE_QUERY = "sum(rate(demo_requests_total[1m]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(url: str, n_targets: int = 1) -> Settings:
    return Settings(prometheus_url=url, refit_interval_s=3600.0, targets=[
        {"namespace": "default", "name": f"demo-{i}", "queries": {"request_rate": RATE_QUERY},
         "lead_time_default_s": 120.0,
         "policy": {"capacity_rps_per_replica": 10.0, "min_replicas": 1, "max_replicas": 10}}
        for i in range(n_targets)])


# The API refuses to start standalone without a token (see tests/test_api*.py for auth).
TOKENS = {"AUTOSCALER_API_TOKENS": "test-token-for-service:read"}


@pytest.fixture
def standalone(prometheus_scraping, tmp_path):
    prometheus_scraping.exporter.inc("default", "demo", 5)
    service = build_service(settings_for(prometheus_scraping.url), standalone=True,
                            state_dir=tmp_path / "state", tick_s=3600.0, environ=TOKENS)
    service.start()
    try:
        yield service
    finally:
        service.shutdown()


# -- (a) the API -------------------------------------------------------------------------------


def test_standalone_builds_no_kubernetes_and_forces_dry_run(standalone, tmp_path) -> None:
    assert standalone.api_client is None and standalone.elector is None
    assert standalone.controller.actuator is None and standalone.controller.cluster is None
    assert all(s.config.dry_run for s in standalone.controller.targets.values())
    assert (tmp_path / "state").is_dir()
    assert LEASE_JOB not in {j.id for j in standalone.scheduler.get_jobs()}


def test_healthz_readyz_and_metrics_after_a_tick(standalone) -> None:
    standalone.tick()  # the job's own function, at the wall clock
    with TestClient(create_app(standalone)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        m = client.get("/metrics")
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'predictive_autoscaler_decisions_total{namespace="default"' in m.text
    assert 'predictive_autoscaler_lead_time_seconds{namespace="default",target="demo-0"} 120.0' \
        in m.text
    # The scheduler's first tick may have run too: one or two ticks, never none.
    count = next(line for line in m.text.splitlines()
                 if line.startswith("predictive_autoscaler_tick_duration_seconds_count "))
    assert float(count.split()[1]) in (1.0, 2.0)


def test_readyz_503_names_prometheus_when_unreachable(tmp_path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    service = build_service(settings_for(closed), standalone=True, state_dir=tmp_path,
                            tick_s=3600.0, environ=TOKENS)
    with TestClient(create_app(service)) as client:
        assert client.get("/healthz").status_code == 503  # not started: not alive
        service.start()
        try:
            assert client.get("/healthz").status_code == 200
            r = client.get("/readyz")
        finally:
            service.shutdown()
    assert r.status_code == 503
    assert "prometheus unreachable" in r.json()["reason"]


# -- (b) the scheduler -------------------------------------------------------------------------


def test_shutdown_during_a_tick_that_submits_refits_does_not_deadlock(prometheus_scraping,
                                                                     tmp_path) -> None:
    """APScheduler's shutdown holds its job-store lock while it waits for the running tick;
    a tick that then adds its refit jobs must not wait on that lock forever."""
    in_tick, stopping = threading.Event(), threading.Event()
    service: Any = None

    def tick_then_wait(now_s: float) -> None:
        for state in service.controller.targets.values():  # refits due when it returns
            state.fed_until_s = now_s - 60.0
        in_tick.set()
        stopping.wait(10.0)
        time.sleep(0.3)  # let shutdown reach the scheduler's wait for this job

    service = build_service(settings_for(prometheus_scraping.url, n_targets=2),
                            standalone=True, state_dir=tmp_path, tick_s=3600.0,
                            tick_fn=tick_then_wait, environ=TOKENS)
    service.start()
    assert in_tick.wait(10.0), "the first tick never ran"
    stopper = threading.Thread(target=service.shutdown, daemon=True)
    stopper.start()
    stopping.set()
    stopper.join(20.0)
    assert not stopper.is_alive(), "shutdown deadlocked with the tick adding refit jobs"
    assert not service.running


def test_tick_job_never_piles_up_and_refits_are_separate_jobs(prometheus_scraping,
                                                              tmp_path) -> None:
    prometheus_scraping.exporter.inc("default", "demo", 5)
    calls: list[float] = []

    def slow_tick(now_s: float) -> None:  # each tick takes 8 intervals
        calls.append(now_s)
        time.sleep(0.4)

    service = build_service(settings_for(prometheus_scraping.url, n_targets=3),
                            standalone=True, state_dir=tmp_path, tick_s=0.05,
                            tick_fn=slow_tick, environ=TOKENS)
    tick = service.scheduler.get_job(TICK_JOB)
    assert tick.max_instances == 1 and tick.coalesce is True
    assert tick.trigger.interval.total_seconds() == pytest.approx(0.05)
    service.start()
    time.sleep(1.5)
    service.shutdown()  # waits for every started instance, so piled-up ones count too
    # 1.5 s / 0.4 s per tick: at most 4 run (+1 for the boundary), never one per 50 ms.
    assert 2 <= len(calls) <= 5

    # Refits: each due target gets its own one-shot job on the refit executor, never the
    # tick's. A fresh Prometheus has no settled history yet, so mark it fed (the condition
    # Controller.refit_due documents) instead of waiting minutes for it.
    service = build_service(settings_for(prometheus_scraping.url, n_targets=3),
                            standalone=True, state_dir=tmp_path, tick_s=3600.0,
                            environ=TOKENS)
    now_s = time.time()
    for state in service.controller.targets.values():
        state.fed_until_s = now_s - 60.0
    due = service.controller.refit_due(now_s)
    assert len(due) == 3, "the targets have history and their first fit is due at once"
    ids = service.submit_refits(now_s)
    assert sorted(ids) == sorted(REFIT_PREFIX + "/".join(k) for k in due)
    jobs = {j.id: j for j in service.scheduler.get_jobs()}
    assert set(ids) <= set(jobs)
    assert all(jobs[i].executor == REFIT_EXECUTOR for i in ids)
    assert jobs[TICK_JOB].executor != REFIT_EXECUTOR
    assert service.submit_refits(now_s) == []  # already queued: not twice


# -- (c) `autoscaler run` ----------------------------------------------------------------------


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    env.update(TOKENS)
    env.update(extra)
    return env


def test_run_standalone_serves_healthz_and_stops_on_sigterm(prometheus_scraping,
                                                            tmp_path) -> None:
    port = free_port()
    env = _cli_env(AUTOSCALER_PROMETHEUS_URL=prometheus_scraping.url,
                   AUTOSCALER_API_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoscaler.cli", "run", "--standalone", "--config",
         str(EXAMPLE), "--state-dir", str(tmp_path / "state")],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with reaped(proc):
        deadline, status = time.monotonic() + 20, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(0.2)
        assert status == 200, f"no /healthz within 20 s; exit {proc.poll()}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert r.status == 200
        out = stop(proc, 10)
    assert proc.returncode == 0, out[-2000:]
    assert (tmp_path / "state").is_dir()


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param("tick_s: 0\n", "tick_s", id="out-of-range"),
    pytest.param("targets: [{namespace: default, name: demo, bogus: 1}]\n", "unknown key",
                 id="unknown-key"),
    pytest.param(None, "cannot read", id="missing-file"),
])
def test_run_bad_config_prints_one_line_and_exits_2(tmp_path, content, expected) -> None:
    config = tmp_path / "config.yaml"
    if content is not None:
        config.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "run", "--standalone", "--config", str(config)],
        cwd=tmp_path, env=_cli_env(PYTHONPATH=str(PROJECT_ROOT)), capture_output=True,
        text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], \
        done.stderr
    assert not (tmp_path / ".autoscaler-state").exists()


def test_a_state_dir_that_is_a_file_is_one_line_naming_the_option(tmp_path) -> None:
    taken = tmp_path / "state"
    taken.write_text("not a directory")
    with pytest.raises(ConfigError) as e:
        build_service(settings_for("http://127.0.0.1:9"), standalone=True, state_dir=taken,
                      environ=TOKENS)
    assert str(e.value).startswith(f"--state-dir {taken}: cannot be used")
    assert "\n" not in str(e.value)
