"""The REST API, standalone: every endpoint and every error path, on a real Service built by
build_service(standalone=True) against a real Prometheus (tests/prom_fixtures.py), through
FastAPI's TestClient. Policies live in files under the test's state directory.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from autoscaler.app import create_app
from autoscaler.service import build_service
from autoscaler.settings import Settings

READ, WRITE = "read-token-0123456789", "write-token-0123456789"
TOKENS = {"AUTOSCALER_API_TOKENS": f"{READ}:read,{WRITE}:write"}
R = {"Authorization": f"Bearer {READ}"}
W = {"Authorization": f"Bearer {WRITE}"}
MERGE = "application/merge-patch+json"
RATE = "sum(rate(demo_requests_total[1m]))"
DEMO = "/targets/default/demo"


def settings_for(url: str) -> Settings:
    # default/demo exists as a Deployment AND a StatefulSet (the Deployment wins);
    # default/web only as a StatefulSet.
    base = {"queries": {"request_rate": RATE}, "lead_time_default_s": 120.0,
            "policy": {"capacity_rps_per_replica": 10.0, "min_replicas": 1,
                       "max_replicas": 10, "forecaster": "seasonal-naive"}}
    return Settings(prometheus_url=url, refit_interval_s=3600.0, targets=[
        {"namespace": "default", "name": "demo", **base},
        {"namespace": "default", "name": "demo", "kind": "StatefulSet", **base},
        {"namespace": "default", "name": "web", "kind": "StatefulSet", **base}])


class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def make_service(url: str, state_dir, clock=None):
    return build_service(settings_for(url), standalone=True, state_dir=state_dir,
                         tick_s=3600.0, environ=TOKENS, clock=clock or time.time)


@pytest.fixture
def service(prometheus_scraping, tmp_path):
    prometheus_scraping.exporter.inc("default", "demo", 5)
    svc = make_service(prometheus_scraping.url, tmp_path / "state")
    yield svc
    svc.shutdown()


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def rfc3339(text: str) -> float:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00").timestamp()


# -- authentication and error paths (table) ---------------------------------------------------

BIG = b'{"x": "' + b"a" * (64 * 1024) + b'"}'


def chunks(data: bytes):
    for i in range(0, len(data), 8192):
        yield data[i:i + 8192]


ERROR_CASES = [
    pytest.param("GET", "/targets", {}, None, 401, None, id="no-token"),
    pytest.param("GET", "/targets", {"Authorization": "Bearer nope-nope-nope"}, None, 401, None,
                 id="bad-token"),
    pytest.param("GET", "/targets", {"Authorization": f"Basic {READ}"}, None, 401, None,
                 id="not-bearer"),
    pytest.param("GET", "/targets/default/secret-name/policy", {}, None, 401, None,
                 id="unknown-target-no-token"),
    pytest.param("GET", "/no/such/path", {}, None, 401, None, id="unknown-path-no-token"),
    pytest.param("PUT", "/targets/default/secret-name/policy", R, b"{}", 403, None,
                 id="unknown-target-read-token-write"),
    pytest.param("PUT", f"{DEMO}/policy", {**R, "If-Match": "*"}, b"{}", 403, None,
                 id="read-token-put"),
    pytest.param("POST", f"{DEMO}/pause", R, None, 403, None, id="read-token-pause"),
    pytest.param("GET", "/targets/default/secret-name", R, None, 404, None,
                 id="unknown-target"),
    pytest.param("GET", "/targets/other-ns/demo/policy", W, None, 404, None,
                 id="unknown-namespace"),
    pytest.param("PUT", f"{DEMO}/policy", W, b"{}", 428, None, id="put-no-if-match"),
    pytest.param("PATCH", f"{DEMO}/policy", {**W, "Content-Type": MERGE}, b"{}", 428, None,
                 id="patch-no-if-match"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": '"stale"'}, b"{}", 412, None,
                 id="put-stale"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"},
                 b'{"min_replicas": 5, "max_replicas": 4}', 422, "min_replicas",
                 id="min-over-max"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"}, b'{"bogus": 1}', 422,
                 "bogus", id="unknown-field"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"}, b'{"quantile": 95}', 422,
                 "quantile", id="quantile-as-percent"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"},
                 b'{"forecaster": "prophet"}', 422, "forecaster", id="unknown-forecaster"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"}, b'{"mode": "yolo"}', 422,
                 "mode", id="unknown-mode"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"},
                 b'{"min_replicas": "3"}', 422, "min_replicas", id="wrong-type"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"}, b"{not json", 422,
                 "(body)", id="not-json"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"}, b"[1, 2]", 422, "(body)",
                 id="not-an-object"),
    pytest.param("PATCH", f"{DEMO}/policy", {**W, "If-Match": "*",
                                             "Content-Type": "application/json"},
                 b'{"min_replicas": 2}', 415, None, id="patch-plain-json"),
    pytest.param("PATCH", f"{DEMO}/policy", {**W, "If-Match": "*"}, b'{"min_replicas": 2}',
                 415, None, id="patch-no-content-type"),
    pytest.param("PATCH", f"{DEMO}/policy", {**W, "If-Match": "*", "Content-Type": MERGE},
                 b'{"max_replicas": 0}', 422, "max_replicas", id="patch-invalid"),
    pytest.param("GET", f"{DEMO}/decisions?since=yesterday", R, None, 422, "since",
                 id="since-garbage"),
    pytest.param("GET", f"{DEMO}/decisions?since=2026-11-29T12:00:00", R, None, 422, "since",
                 id="since-without-zone"),
    pytest.param("GET", f"{DEMO}/decisions?since=-5m", R, None, 422, "since",
                 id="since-negative"),
    pytest.param("POST", f"{DEMO}/whatif?window=forever", R, b"{}", 422, "window",
                 id="whatif-window-garbage"),
    pytest.param("POST", f"{DEMO}/whatif?window=400d", R, b"{}", 422, "window",
                 id="whatif-window-too-long"),
    pytest.param("POST", f"{DEMO}/whatif", R, b'{"quantile": 1.5}', 422, "quantile",
                 id="whatif-invalid-candidate"),
    pytest.param("GET", "/whatif/0123456789abcdef", R, None, 404, None, id="unknown-job"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"}, BIG, 413, None,
                 id="body-over-64k"),
    pytest.param("PUT", f"{DEMO}/policy", {**W, "If-Match": "*"}, chunks(BIG), 413, None,
                 id="chunked-body-over-64k"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "field"), ERROR_CASES)
def test_error_paths(client, method, path, headers, body, status, field) -> None:
    before = client.get(f"{DEMO}/policy", headers=R)
    r = client.request(method, path, headers=headers, content=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    if status == 422:
        assert detail["field"] == field and detail["reason"], detail
    else:
        assert isinstance(detail, str) and detail
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    if status in (401, 403):
        assert "secret-name" not in r.text and "demo" not in r.text
    # A rejected request leaves the policy in force, unchanged.
    after = client.get(f"{DEMO}/policy", headers=R)
    assert after.json() == before.json() and after.headers["etag"] == before.headers["etag"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"])
def test_open_paths_need_no_token(client, path) -> None:
    r = client.get(path)
    assert r.status_code not in (401, 403), r.text


def test_write_scope_implies_read(client) -> None:
    assert client.get("/targets", headers=W).status_code == 200


# -- targets, decisions, forecast -------------------------------------------------------------


def test_targets_list_and_one(client, service) -> None:
    r = client.get("/targets", headers=R)
    assert r.status_code == 200
    listed = {(t["namespace"], t["name"], t["kind"]) for t in r.json()}
    assert listed == {("default", "demo", "Deployment"), ("default", "demo", "StatefulSet"),
                      ("default", "web", "StatefulSet")}
    demo = client.get(DEMO, headers=R).json()
    assert demo["kind"] == "Deployment"  # the Deployment before the StatefulSet
    assert client.get("/targets/default/web", headers=R).json()["kind"] == "StatefulSet"
    assert demo["mode"] == "floor" and demo["dry_run"] is True and demo["paused"] is False
    # Standalone: no cluster, so replica counts are unknown rather than 0.
    assert demo["replicas"] is None and demo["hpa_replicas"] is None
    assert demo["lead_time_s"] == 120.0 and demo["lead_time_source"] == "default"
    assert demo["last_decision_reason"] is None and demo["health"] == "ok"


def test_target_after_a_tick_shows_the_decision(client, service) -> None:
    service.tick()
    demo = client.get(DEMO, headers=R).json()
    state = service.controller.targets[("default", "Deployment", "demo")]
    record = state.log[-1]
    assert demo["last_decision_reason"] == record.reason
    assert abs(rfc3339(demo["last_decision_at"]) - record.now_s) < 1e-3
    assert demo["floor"] == record.floor and demo["effective_replicas"] == record.replicas
    assert demo["health"] in ("ok", "stale metrics")


def test_decisions_since_duration_and_time(prometheus_scraping, tmp_path) -> None:
    prometheus_scraping.exporter.inc("default", "demo", 5)
    t0 = float(int(time.time()))
    clock = Clock(t0 + 120.0)
    svc = make_service(prometheus_scraping.url, tmp_path / "state", clock=clock)
    try:
        for dt in (0.0, 60.0, 120.0):  # three ticks, 60 s apart on a virtual clock
            svc.controller.tick(t0 + dt)
        with TestClient(create_app(svc)) as c:
            def times(query: str) -> list[float]:
                r = c.get(f"{DEMO}/decisions{query}", headers=R)
                assert r.status_code == 200, r.text
                return [rfc3339(d["at"]) for d in r.json()["decisions"]]

            assert times("") == [t0, t0 + 60, t0 + 120]
            assert times("?since=90s") == [t0 + 60, t0 + 120]  # cut at t0 + 30
            assert times("?since=1m") == [t0 + 60, t0 + 120]  # cut at t0 + 60, inclusive
            assert times("?since=1h") == [t0, t0 + 60, t0 + 120]
            stamp = datetime.fromtimestamp(t0 + 61, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert times(f"?since={stamp}") == [t0 + 120]
            d = c.get(f"{DEMO}/decisions", headers=R).json()["decisions"][-1]
    finally:
        svc.shutdown()
    assert set(d) >= {"inputs", "forecast_quantiles_rps", "lead_time_s", "bounds", "reason",
                      "action", "paused"}
    assert d["bounds"] == {"min_replicas": 1, "max_replicas": 10}
    assert d["lead_time_s"] == 120.0
    assert {"rate_rps", "stale", "metrics_age_s"} <= set(d["inputs"])
    assert all(isinstance(k, str) and 0 < float(k) < 1 for k in d["forecast_quantiles_rps"])


def test_forecast_null_with_a_reason_before_any_fit(client) -> None:
    r = client.get(f"{DEMO}/forecast", headers=R)
    assert r.status_code == 200
    body = r.json()
    assert body["forecast"] is None and body["reason"]


def test_forecast_bands_after_a_fit(prometheus_backfilled, tmp_path) -> None:
    """Three days of history (backfilled), a fit, a tick: the bands of that forecast."""
    query = "sum by (namespace, deployment) (rate(demo_requests_total[2m]))"
    settings = Settings(prometheus_url=prometheus_backfilled.url, targets=[
        {"namespace": "team-b", "name": "demo", "queries": {"request_rate": query},
         "policy": {"forecaster": "seasonal-naive", "capacity_rps_per_replica": 10.0}}])
    svc = build_service(settings, standalone=True, state_dir=tmp_path, tick_s=3600.0,
                        environ=TOKENS)
    key = ("team-b", "Deployment", "demo")
    try:
        now_s = time.time()
        svc.controller.tick(now_s)  # fetches the history
        assert svc.controller.refit(key, now_s)
        svc.controller.tick(now_s + 1)
        with TestClient(create_app(svc)) as c:
            body = c.get("/targets/team-b/demo/forecast", headers=R).json()
    finally:
        svc.shutdown()
    f = body["forecast"]
    assert f is not None, body
    n = len(f["times"])
    assert n >= 2 and len(f["mean"]) == n
    steps = [rfc3339(b) - rfc3339(a) for a, b in zip(f["times"], f["times"][1:], strict=False)]
    assert all(abs(s - f["step_s"]) < 1e-6 for s in steps)
    assert f["quantiles"], "a forecast the policy plans with has quantile bands"
    levels = sorted(f["quantiles"], key=float)
    for lo, hi in zip(levels, levels[1:], strict=False):  # bands are ordered by level
        assert all(a <= b + 1e-9 for a, b in zip(f["quantiles"][lo], f["quantiles"][hi],
                                                 strict=True))


# -- policy -----------------------------------------------------------------------------------


def get_policy(c, path=DEMO):
    r = c.get(f"{path}/policy", headers=R)
    assert r.status_code == 200, r.text
    return r.json(), r.headers["etag"]


def patch(c, changes, etag, path=DEMO):
    return c.patch(f"{path}/policy", headers={**W, "If-Match": etag, "Content-Type": MERGE},
                   content=json.dumps(changes))


def test_policy_defaults_have_a_stable_etag(client) -> None:
    doc, etag = get_policy(client)
    assert doc["quantile"] == 0.97  # a fraction, not a percent
    assert doc["min_replicas"] == 1 and doc["max_replicas"] == 10
    assert doc["mode"] == "floor" and doc["forecaster"] == "seasonal-naive"
    assert "tick_s" not in doc
    assert get_policy(client) == (doc, etag)


def test_patch_applies_at_once_and_is_recorded(client, service) -> None:
    doc, etag = get_policy(client)
    r = patch(client, {"min_replicas": 3, "quantile": 0.9}, etag)
    assert r.status_code == 200, r.text
    new_etag = r.headers["etag"]
    assert new_etag != etag
    assert r.json() == {**doc, "min_replicas": 3, "quantile": 0.9}
    assert get_policy(client) == (r.json(), new_etag)
    cfg = service.controller.targets[("default", "Deployment", "demo")].config
    assert cfg.policy.min_replicas == 3 and cfg.policy.quantile == 0.9
    assert cfg.dry_run is True  # standalone's global dry run still wins
    # Policies are stored per namespace/name (how the API addresses targets), so a
    # StatefulSet of the same name follows the same policy; another name does not.
    other = service.controller.targets[("default", "StatefulSet", "demo")].config
    assert other.policy.min_replicas == 3
    web = service.controller.targets[("default", "StatefulSet", "web")].config
    assert web.policy.min_replicas == 1
    # The same ETag again is now stale.
    assert patch(client, {"min_replicas": 4}, etag).status_code == 412
    # null resets a field to its default (PredictiveConfig's quantile default is 0.97).
    r = patch(client, {"quantile": None}, new_etag)
    assert r.status_code == 200 and r.json()["quantile"] == 0.97
    history = client.get(f"{DEMO}/policy/history", headers=R).json()["changes"]
    assert [h["action"] for h in history] == ["update", "update"]
    assert history[0]["old"]["min_replicas"] == 1 and history[0]["new"]["min_replicas"] == 3
    assert all(h["who"].startswith("token:") and WRITE not in h["who"] for h in history)
    assert rfc3339(history[0]["at"]) <= rfc3339(history[1]["at"])


def test_put_replaces_missing_fields_take_the_targets_configured_values(client,
                                                                         service) -> None:
    _, etag = get_policy(client)
    r = patch(client, {"forecaster": "last", "min_replicas": 2}, etag)  # the old policy
    assert r.status_code == 200, r.text
    r = client.put(f"{DEMO}/policy", headers={**W, "If-Match": r.headers["etag"]},
                   json={"max_replicas": 7, "mode": "metric"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["max_replicas"] == 7 and doc["mode"] == "metric"
    # replaced: not the old policy's values (last, 2) nor the built-in ones (auto, capacity
    # 100), but the configured ones (settings_for: seasonal-naive, min 1, capacity 10)
    assert (doc["forecaster"], doc["min_replicas"], doc["capacity_rps_per_replica"]) == (
        "seasonal-naive", 1, 10.0)
    state = service.controller.targets[("default", "Deployment", "demo")]
    assert state.config.mode == "metric" and state.config.policy.forecaster == "seasonal-naive"
    assert client.get(DEMO, headers=R).json()["mode"] == "metric"


def test_rejected_update_leaves_the_stored_policy_in_force(client, service) -> None:
    _, etag = get_policy(client)
    good = patch(client, {"min_replicas": 2}, etag)
    doc, etag = good.json(), good.headers["etag"]
    for bad in ({"min_replicas": 50}, {"quantile": 0}, {"bogus": True}):
        assert patch(client, bad, etag).status_code == 422
    assert get_policy(client) == (doc, etag)
    assert service.controller.targets[("default", "Deployment", "demo")].config \
        .policy.min_replicas == 2


@pytest.mark.parametrize("stored_first", [False, True], ids=["create-race", "update-race"])
def test_concurrent_patches_with_one_etag_exactly_one_wins(service, stored_first) -> None:
    app = create_app(service)
    with TestClient(app) as c:
        if stored_first:
            _, etag = get_policy(c)
            assert patch(c, {"min_replicas": 2}, etag).status_code == 200
    rounds = 3
    for k in range(rounds):  # values new every round: a write that changes nothing is a no-op
        with TestClient(app) as c:
            _, etag = get_policy(c)
        winner = race_two_patches(app, (8 + 2 * k, 9 + 2 * k), lambda c, value, etag=etag: patch(
            c, {"max_replicas": value}, etag).status_code)
        with TestClient(app) as c:
            assert get_policy(c)[0]["max_replicas"] == winner
    with TestClient(app) as c:
        history = c.get(f"{DEMO}/policy/history", headers=R).json()["changes"]
    assert len(history) == rounds + (1 if stored_first else 0)  # one entry per winner


def race_two_patches(app, values: tuple[int, int], send) -> int:
    """Two clients send(client, value) at once with the same ETag: exactly one 200 and one
    412; returns the winning value."""
    barrier = threading.Barrier(2)
    results: dict[int, int] = {}

    def one(value: int) -> None:
        with TestClient(app) as c:
            barrier.wait()
            results[value] = send(c, value)

    threads = [threading.Thread(target=one, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results.values()) == [200, 412]
    return next(v for v, status in results.items() if status == 200)


def test_restart_keeps_policy_and_pause(prometheus_scraping, tmp_path) -> None:
    state_dir = tmp_path / "state"
    svc = make_service(prometheus_scraping.url, state_dir)
    with TestClient(create_app(svc)) as c:
        _, etag = get_policy(c)
        changed = patch(c, {"min_replicas": 4, "surge_margin": 0.3}, etag)
        assert changed.status_code == 200
        assert c.post(f"{DEMO}/pause", headers=W).status_code == 200
        doc, etag = get_policy(c)
    svc.shutdown()
    again = make_service(prometheus_scraping.url, state_dir)
    try:
        with TestClient(create_app(again)) as c:
            assert get_policy(c) == (doc, etag)
            view = c.get(DEMO, headers=R).json()
            history = c.get(f"{DEMO}/policy/history", headers=R).json()["changes"]
        state = again.controller.targets[("default", "Deployment", "demo")]
    finally:
        again.shutdown()
    assert doc["min_replicas"] == 4 and doc["surge_margin"] == 0.3
    assert view["paused"] is True and state.paused is True
    assert state.config.policy.min_replicas == 4  # applied before the first tick
    assert [h["action"] for h in history] == ["update", "pause"]


# -- pause / resume ---------------------------------------------------------------------------


def test_pause_and_resume(client, service) -> None:
    key = ("default", "Deployment", "demo")
    r = client.post(f"{DEMO}/pause", headers=W)
    assert r.status_code == 200 and r.json()["paused"] is True
    assert service.controller.targets[key].paused is True
    assert client.post(f"{DEMO}/pause", headers=W).status_code == 200  # idempotent
    service.tick()  # a paused target is still decided and logged
    d = client.get(f"{DEMO}/decisions", headers=R).json()["decisions"]
    assert d and d[-1]["paused"] is True
    r = client.post(f"{DEMO}/resume", headers=W)
    assert r.status_code == 200 and r.json()["paused"] is False
    assert service.controller.targets[key].paused is False
    history = client.get(f"{DEMO}/policy/history", headers=R).json()["changes"]
    assert [h["action"] for h in history] == ["pause", "resume"]  # no entry for the repeat
    # pause changes no policy field, so the policy document is still the defaults'.
    assert client.get(f"{DEMO}/policy", headers=R).json()["min_replicas"] == 1


def test_swagger_ui_is_served_from_this_process_not_a_cdn(client) -> None:
    """Clusters without internet egress still get /docs: its script and style come from here,
    with no token, and nothing is loaded from elsewhere."""
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url: ['"]([^'"]+)['"]""", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 10_000, asset
    assert client.get("/docs/assets/../targets").status_code in (400, 401, 404)  # no way round
    assert client.get("/redoc", headers=R).status_code == 404  # ReDoc (CDN only) not served
