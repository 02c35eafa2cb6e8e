"""The what-if endpoints: 202 + Location, polling, 429 per caller, the spec the API builds.

The replay itself (record + simulate, same numbers as the CLI) is tested with the what-if
module; here the jobs run module-level stand-in runners in the real spawned process pool.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from autoscaler.app import create_app
from autoscaler.whatif import WhatIfJobs
from tests.api_whatif_runners import echo_runner, failing_runner, slow_runner
from tests.test_api import DEMO, MERGE, READ, TOKENS, R, W, make_service

OTHER_READ = "other-read-token-0123"


@pytest.fixture
def service(prometheus_scraping, tmp_path, monkeypatch):
    monkeypatch.setitem(TOKENS, "AUTOSCALER_API_TOKENS",
                        TOKENS["AUTOSCALER_API_TOKENS"] + f",{OTHER_READ}:read")
    svc = make_service(prometheus_scraping.url, tmp_path / "state")
    yield svc
    svc.shutdown()


def use_runner(svc, runner) -> None:
    svc.whatif.shutdown()
    svc.whatif = WhatIfJobs(max_running_per_caller=2, workers=1, runner=runner)


def test_whatif_accepts_polls_and_builds_the_spec(service) -> None:
    use_runner(service, echo_runner)
    with TestClient(create_app(service)) as c:
        etag = c.get(f"{DEMO}/policy", headers=R).headers["etag"]
        assert c.patch(f"{DEMO}/policy", headers={**W, "If-Match": etag, "Content-Type": MERGE},
                       json={"min_replicas": 2}).status_code == 200
        r = c.post(f"{DEMO}/whatif?window=2h", headers=R, json={"quantile": 0.99})
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        assert location == f"/whatif/{r.json()['job_id']}"
        service.whatif.wait(r.json()["job_id"], timeout_s=60)
        job = c.get(location, headers=R).json()
    assert job["status"] == "done" and job["error"] is None
    result = job["result"]
    assert result["window_s"] == 7200
    assert result["current"]["min_replicas"] == 2  # the stored policy, not the file's
    assert result["candidate"]["quantile"] == 0.99
    assert result["candidate"]["min_replicas"] == 2  # missing fields: the current policy's
    assert "demo_requests_total" in result["query"]
    assert '"default"' in result["query"] and '"demo"' in result["query"]
    assert abs(result["until_s"] - time.time()) < 120  # ends now (on the history grid)


def test_whatif_failure_is_one_line(service) -> None:
    use_runner(service, failing_runner)
    with TestClient(create_app(service)) as c:
        r = c.post(f"{DEMO}/whatif?window=1h", headers=W, json={})
        assert r.status_code == 202
        service.whatif.wait(r.json()["job_id"], timeout_s=60)
        job = c.get(r.headers["location"], headers=R).json()
    assert job["status"] == "failed" and job["result"] is None
    assert "no samples" in job["error"] and "\n" not in job["error"]


def test_more_than_two_running_per_caller_is_429(service) -> None:
    use_runner(service, slow_runner)
    with TestClient(create_app(service)) as c:
        first = [c.post(f"{DEMO}/whatif?window=1h", headers=R, json={}) for _ in range(2)]
        assert [r.status_code for r in first] == [202, 202]
        third = c.post(f"{DEMO}/whatif?window=1h", headers=R, json={})
        assert third.status_code == 429, third.text
        assert int(third.headers["retry-after"]) > 0
        # The limit is per caller: another token still gets its jobs in.
        other = c.post(f"{DEMO}/whatif?window=1h",
                       headers={"Authorization": f"Bearer {OTHER_READ}"}, json={})
        assert other.status_code == 202
        running = c.get(first[0].headers["location"], headers=R).json()
        assert running["status"] == "running" and running["result"] is None
        for r in first:
            service.whatif.wait(r.json()["job_id"], timeout_s=60)
        assert c.post(f"{DEMO}/whatif?window=1h", headers=R, json={}).status_code == 202


def test_whatif_needs_only_read_and_a_token(service) -> None:
    use_runner(service, echo_runner)
    with TestClient(create_app(service)) as c:
        assert c.post(f"{DEMO}/whatif", json={}).status_code == 401
        r = c.post(f"{DEMO}/whatif", headers={"Authorization": f"Bearer {READ}"}, json={})
        assert r.status_code == 202
        service.whatif.wait(r.json()["job_id"], timeout_s=60)
        assert c.get(r.headers["location"]).status_code == 401


def test_whatif_through_the_api_equals_record_then_simulate(prometheus_backfilled,
                                                             tmp_path) -> None:
    """POST .../whatif on the real backfilled Prometheus, the real replay in the worker
    process: the job's figures equal those of the two commands it reports, run as a user
    would (`autoscaler record ... > series.csv`, then `autoscaler simulate ... --json`)."""
    import json
    import os
    import subprocess

    from autoscaler.service import build_service
    from autoscaler.settings import Settings
    from tests.test_whatif import GROUPED, VENV_BIN, figures

    settings = Settings(prometheus_url=prometheus_backfilled.url,
                        history={"days": 0.125, "step_s": 60.0},  # 3 h of warm-up history
                        targets=[{"namespace": "default", "name": "demo",
                                  "queries": {"request_rate": GROUPED}}])
    svc = build_service(settings, standalone=True, state_dir=tmp_path / "state",
                        tick_s=3600.0, environ=TOKENS)
    try:
        with TestClient(create_app(svc)) as c:
            r = c.post(f"{DEMO}/whatif?window=3h", headers=R, json={"quantile": 0.99})
            assert r.status_code == 202, r.text
            svc.whatif.wait(r.json()["job_id"], timeout_s=240)
            job = c.get(r.headers["location"], headers=R).json()
    finally:
        svc.shutdown()
    assert job["status"] == "done", job["error"]
    result = job["result"]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    for line in result["command"]:
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, (line, done.stderr[-2000:])
    cli = json.loads((tmp_path / "whatif.json").read_text())
    assert figures(result["comparison"]) == figures(cli)
    policies = [row["policy"] for row in cli["results"]]
    assert policies == ["hpa", "predictive", "predictive"]  # HPA alone, current, candidate
    assert cli["results"][2]["params"]["quantile"] == 0.99
