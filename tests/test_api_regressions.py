"""Regressions found by trying `autoscaler run --standalone` by hand (standalone API on a real
Prometheus): policies that stalled every tick, PUT bodies of any content type, and documents
stored although the target could never run them. Each test fails without its fix.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from autoscaler.app import create_app
from autoscaler.policy_doc import MAX_SERVICE_S, PolicyInvalid, validate_document
from autoscaler.service import build_service
from autoscaler.settings import Settings
from policies.predictive import PredictiveConfig, size_for
from tests.test_api import DEMO, MERGE, RATE, READ, TOKENS, WRITE, R, W  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
WEB = "/targets/team-b/web"  # has an HPA


@pytest.fixture
def client(prometheus_scraping, tmp_path):
    settings = Settings(prometheus_url=prometheus_scraping.url, refit_interval_s=3600.0, targets=[
        {"namespace": "default", "name": "demo", "queries": {"request_rate": RATE},
         "policy": {"capacity_rps_per_replica": 10.0, "max_replicas": 10}},
        {"namespace": "team-b", "name": "web", "hpa": "web", "queries": {"request_rate": RATE},
         "policy": {"capacity_rps_per_replica": 5.0, "max_replicas": 20}}])
    svc = build_service(settings, standalone=True, state_dir=tmp_path / "state", tick_s=3600.0,
                        environ=TOKENS, clock=time.time)
    try:
        with TestClient(create_app(svc)) as c:
            yield c
    finally:
        svc.shutdown()


def _etag(client, path: str) -> str:
    return client.get(f"{path}/policy", headers=R).headers["etag"]


# -- a policy whose sizing never ends -----------------------------------------------------------

@pytest.mark.parametrize(("patch", "field"), [
    # slots / capacity = 4e300 s of service per request: the Erlang walk runs ~1e302 steps
    pytest.param({"capacity_rps_per_replica": 1e-300, "target_utilization": None},
                 "capacity_rps_per_replica", id="tiny-capacity"),
    pytest.param({"slots_per_replica": 10**9, "target_utilization": None}, "slots_per_replica",
                 id="a-billion-slots"),
    # the bound holds whatever sizing rule is chosen (the what-if replays the queueing model)
    pytest.param({"capacity_rps_per_replica": 4 / (2 * MAX_SERVICE_S)},
                 "capacity_rps_per_replica", id="two-hour-requests"),
])
def test_policies_that_would_stall_every_tick_are_422(client, patch, field) -> None:
    before = client.get(f"{DEMO}/policy", headers=R)
    r = client.patch(f"{DEMO}/policy", json=patch,
                     headers={**W, "If-Match": before.headers["etag"], "Content-Type": MERGE})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["field"] == field
    after = client.get(f"{DEMO}/policy", headers=R)
    assert after.json() == before.json() and after.headers["etag"] == before.headers["etag"]


def test_the_service_time_bound_still_admits_slow_llm_serving() -> None:
    # 256 slots at 0.1 req/s: 2,560 s per request, under the hour; sized in well under a second
    doc = validate_document({"capacity_rps_per_replica": 0.1, "slots_per_replica": 256,
                             "target_utilization": None, "max_replicas": 1000})
    assert doc["capacity_rps_per_replica"] == 0.1
    config = PredictiveConfig(capacity_rps_per_replica=0.1, slots_per_replica=256,
                              target_utilization=None, max_replicas=1000)
    # 10 req/s x 2,560 s = 25,600 busy slots -> at least 100 replicas of 256
    assert size_for(config, 10.0) >= 100
    with pytest.raises(PolicyInvalid) as e:
        validate_document({"capacity_rps_per_replica": 0.05, "slots_per_replica": 256})
    assert e.value.field == "capacity_rps_per_replica" and "3600" in e.value.reason


# -- PUT content type ---------------------------------------------------------------------------

@pytest.mark.parametrize(("content_type", "status"), [
    pytest.param("text/plain", 415, id="text-plain"),
    pytest.param("application/x-www-form-urlencoded", 415, id="curl-d-default"),
    pytest.param(MERGE, 415, id="merge-patch-is-for-patch"),
    pytest.param("application/json", 200, id="json"),
    pytest.param("application/json; charset=utf-8", 200, id="json-charset"),
    pytest.param(None, 200, id="none-taken-as-json"),
])
def test_put_content_type(client, content_type, status) -> None:
    headers = {**W, "If-Match": _etag(client, DEMO)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = client.put(f"{DEMO}/policy", content=b'{"capacity_rps_per_replica": 10.0, '
                                              b'"quantile": 0.9}', headers=headers)
    assert r.status_code == status, r.text
    if status == 415:
        assert "application/json" in r.json()["detail"]
        assert client.get(f"{DEMO}/policy", headers=R).json()["quantile"] == 0.97


# -- the target's own rules ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_direct_mode_beside_an_hpa_is_422_and_not_stored(client, method) -> None:
    before = client.get(f"{WEB}/policy", headers=R)
    headers = {**W, "If-Match": before.headers["etag"],
               "Content-Type": MERGE if method == "PATCH" else "application/json"}
    r = client.request(method, f"{WEB}/policy", json={"mode": "direct"}, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["field"] == "mode" and "HPA" in r.json()["detail"]["reason"]
    after = client.get(f"{WEB}/policy", headers=R)
    assert after.json() == before.json() and after.headers["etag"] == before.headers["etag"]
    assert client.get(f"{WEB}/policy/history", headers=R).json()["changes"] == []


# -- what-if over more than the history ---------------------------------------------------------

def test_whatif_reports_the_window_it_replayed_not_the_one_asked(prometheus_backfilled) -> None:
    """3 h asked (+ 3 h warm-up) with only about 2 h of history before `until`: the result's
    window is the replayed one (no warm-up left), and says what was asked."""
    from autoscaler.whatif import run_whatif, whatif_spec_for

    bf = prometheus_backfilled
    until_s = float(bf.sample_s[0]) + 30 + 2 * 3600  # a grid time 2 h after the first sample
    s = Settings(prometheus_url=bf.url, history={"days": 0.125, "step_s": 60.0}, targets=[
        {"namespace": "team-b", "name": "demo", "queries": {
            "request_rate": "sum by (namespace, deployment) (rate(demo_requests_total[2m]))"}}])
    spec = whatif_spec_for(s.targets_config()[0], s, {"quantile": 0.99}, {}, 3 * 3600, until_s,
                           fidelity="fast")
    assert spec.window_s == 3 * 3600 and spec.warmup_s == 3 * 3600
    result = run_whatif(spec)
    window, comparison = result["window"], result["comparison"]
    assert window["from"] == window["recorded_from"]
    assert window["warmup_s"] == 0 == comparison["start_s"]
    span_s = (datetime.fromisoformat(window["until"].replace("Z", "+00:00"))
              - datetime.fromisoformat(window["from"].replace("Z", "+00:00"))).total_seconds()
    assert span_s == comparison["duration_s"]
    assert 1.5 * 3600 < span_s <= 2 * 3600  # about the 2 h there are, not the 3 h asked
    assert window["asked_s"] == 3 * 3600 and window["asked_warmup_s"] == 3 * 3600


# -- SIGTERM while a what-if runs ---------------------------------------------------------------

def announce_then_block(gate: str) -> dict:
    """A replay that never ends by itself: says it started, then waits up to 120 s."""
    Path(gate + ".started").touch()
    deadline = time.monotonic() + 120
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {}


def test_shutdown_without_wait_stops_a_running_replay(tmp_path) -> None:
    """Service.shutdown calls WhatIfJobs.shutdown(wait=False): the process must then exit at
    once, not when the replay ends (here: never within the 60 s allowed)."""
    gate = str(tmp_path / "gate")
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from pathlib import Path\n"
        "from autoscaler.whatif import WhatIfJobs\n"
        "from tests.test_api_regressions import announce_then_block\n"
        "jobs = WhatIfJobs(runner=announce_then_block)\n"
        f"job = jobs.submit('alice', {gate!r})\n"
        f"while not Path({gate!r} + '.started').exists():\n"
        "    time.sleep(0.05)\n"
        "jobs.shutdown(wait=False)\n"
        "print(jobs.wait(job, timeout_s=30).status)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "failed"
    assert not Path(gate).exists()



# -- what-if of a policy the replay cannot express ----------------------------------------------

def test_whatif_of_an_unreplayable_policy_is_422_not_a_failed_job(client) -> None:
    r = client.post(f"{DEMO}/whatif?window=1h", headers=R,
                    json={"slo_s": 0.5, "slo_part_quantiles_s": [0.1, 0.2]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["field"] == "slo_part_quantiles_s"
    assert "candidate" in r.json()["detail"]["reason"]
    # the same field in the policy in force: every what-if of this target would fail
    etag = _etag(client, DEMO)
    assert client.patch(f"{DEMO}/policy", json={"slo_part_quantiles_s": [0.1]}, headers={
        **W, "If-Match": etag, "Content-Type": MERGE}).status_code == 200
    r = client.post(f"{DEMO}/whatif?window=1h", headers=R, json={})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["field"] == "slo_part_quantiles_s"
    assert "current policy" in r.json()["detail"]["reason"]


# -- a corrupt policy file ----------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    pytest.param('{"broken', id="not-json"),
    pytest.param("[]", id="not-an-object"),
    pytest.param("{}", id="no-fields"),
])
@pytest.mark.parametrize("path", ["/policy", "/policy/history"])
def test_an_unreadable_policy_file_is_a_500_that_says_so(client, tmp_path, content,
                                                           path) -> None:
    etag = _etag(client, WEB)
    assert client.patch(f"{WEB}/policy", json={"quantile": 0.9}, headers={
        **W, "If-Match": etag, "Content-Type": MERGE}).status_code == 200
    (tmp_path / "state" / "policies" / "team-b_web.json").write_text(content)
    r = client.get(f"{WEB}{path}", headers=R)
    assert r.status_code == 500, r.text
    detail = r.json()["detail"]
    assert "stored policy of team-b/web cannot be read" in detail and "\n" not in detail
    # the other targets are served as usual
    assert client.get(f"{DEMO}/policy", headers=R).status_code == 200


# -- a PUT's missing fields and a PATCH's nulls go back to the TARGET's configured values ------

def test_put_and_null_fall_back_to_the_targets_configured_policy(client) -> None:
    """team-b/web is configured with capacity 5 and max 20 (built-in: 100 and 100): a partial
    PUT keeps them, a null puts one back to 20, never to the built-in 100."""
    r = client.put(f"{WEB}/policy", json={"quantile": 0.99},
                   headers={**W, "If-Match": _etag(client, WEB)})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["quantile"], doc["capacity_rps_per_replica"], doc["max_replicas"]) == (
        0.99, 5.0, 20)
    r = client.patch(f"{WEB}/policy", json={"max_replicas": 12},
                     headers={**W, "If-Match": r.headers["etag"], "Content-Type": MERGE})
    assert r.json()["max_replicas"] == 12
    r = client.patch(f"{WEB}/policy", json={"max_replicas": None, "quantile": None},
                     headers={**W, "If-Match": r.headers["etag"], "Content-Type": MERGE})
    assert r.status_code == 200, r.text
    assert (r.json()["max_replicas"], r.json()["quantile"]) == (20, 0.97)


# -- a write that changes nothing ---------------------------------------------------------------
@pytest.mark.parametrize(("method", "body"), [
    pytest.param("patch", {}, id="empty-merge-patch"),
    pytest.param("patch", {"min_replicas": 2}, id="patch-to-the-same-value"),
    pytest.param("put", None, id="put-of-the-document-itself"),
])
def test_a_write_that_changes_nothing_keeps_the_etag_and_the_history(client, method,
                                                                     body) -> None:
    first = client.patch(f"{DEMO}/policy", json={"min_replicas": 2},
                         headers={**W, "If-Match": _etag(client, DEMO), "Content-Type": MERGE})
    assert first.status_code == 200, first.text
    etag, doc = first.headers["etag"], first.json()
    before = client.get(f"{DEMO}/policy/history", headers=R).json()["changes"]
    headers = {**W, "If-Match": etag}
    if method == "patch":
        r = client.patch(f"{DEMO}/policy", json=body,
                         headers={**headers, "Content-Type": MERGE})
    else:
        r = client.put(f"{DEMO}/policy", json=doc, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.headers["etag"], r.json()) == (etag, doc)
    assert client.get(f"{DEMO}/policy/history", headers=R).json()["changes"] == before


# -- a 404 for a name no Kubernetes object can have ---------------------------------------------
@pytest.mark.parametrize(("path", "echoed"), [
    pytest.param(f"/targets/default/{'x' * 300}/policy", False, id="name-over-253"),
    pytest.param(f"/targets/{'n' * 64}/demo/policy", False, id="namespace-over-63"),
    pytest.param("/targets/default/a%0Ab/policy", False, id="newline-in-name"),
    pytest.param("/targets/default/no-such-app/policy", True, id="a-valid-name-is-named"),
])
def test_a_404_never_echoes_what_cannot_be_a_name(client, path, echoed) -> None:
    r = client.get(path, headers=R)
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "\n" not in detail and len(detail) < 120
    assert ("no-such-app" in detail) is echoed
