"""The REST API in-cluster: ConfigMap policy store, TokenReview + SubjectAccessReview, Events,
on the project's test Kubernetes API server (RBAC from manifests/base/rbac.yaml) and a real
Prometheus. The ClusterRoles predictive-autoscaler-viewer/-editor are bound per test user.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from autoscaler.app import create_app
from autoscaler.policy_store_kube import POLICY_LABEL
from autoscaler.service import build_service
from autoscaler.settings import Settings
from tests.kubeserver.rbac import UserInfo
from tests.test_api import MERGE, RATE, race_two_patches

POLICY_NS = "predictive-autoscaler"
DEMO = "/targets/default/demo"
USERS = {"viewer-token-abc": "alice", "editor-token-abc": "bob", "nobody-token-abc": "carol"}
VIEWER, EDITOR, NOBODY = ({"Authorization": f"Bearer {t}"} for t in USERS)


def settings_for(url: str) -> Settings:
    return Settings(prometheus_url=url, policy_namespace=POLICY_NS, targets=[
        {"namespace": "default", "name": "demo", "queries": {"request_rate": RATE},
         "policy": {"capacity_rps_per_replica": 10.0, "forecaster": "seasonal-naive"}}])


@pytest.fixture
def users(kube_server):
    for token, user in USERS.items():
        kube_server.add_token(token, UserInfo(user, ("system:authenticated",)))
    kube_server.policy.bind("ClusterRole", "predictive-autoscaler-viewer", user="alice")
    kube_server.policy.bind("ClusterRole", "predictive-autoscaler-editor", user="bob")
    return kube_server


def in_cluster(url: str, api_client):
    service = build_service(settings_for(url), api_client=api_client, tick_s=3600.0,
                            environ={})
    service.renew_lease()  # lead, so that this replica reports changes as Events
    return service


@pytest.fixture
def service(users, kube_client, prometheus_scraping):
    svc = in_cluster(prometheus_scraping.url, kube_client)
    yield svc
    svc.api_client = None  # the fixture closes the client
    svc.shutdown()


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


@pytest.mark.parametrize(("headers", "method", "path", "status"), [
    pytest.param({}, "GET", DEMO, 401, id="no-token"),
    pytest.param({"Authorization": "Bearer forged-token"}, "GET", DEMO, 401, id="unknown-token"),
    pytest.param(NOBODY, "GET", DEMO, 403, id="no-role-read"),
    pytest.param(NOBODY, "GET", "/targets/default/secret-name", 403, id="no-role-unknown"),
    pytest.param(VIEWER, "GET", DEMO, 200, id="viewer-read"),
    pytest.param(VIEWER, "GET", f"{DEMO}/policy", 200, id="viewer-policy"),
    pytest.param(VIEWER, "POST", f"{DEMO}/pause", 403, id="viewer-pause"),
    pytest.param(VIEWER, "PUT", "/targets/default/secret-name/policy", 403,
                 id="viewer-write-unknown"),
    pytest.param(VIEWER, "GET", "/targets/default/secret-name", 404, id="viewer-unknown"),
    pytest.param(EDITOR, "GET", f"{DEMO}/decisions", 200, id="editor-reads-too"),
    pytest.param(EDITOR, "PUT", f"{DEMO}/policy", 428, id="editor-put-no-if-match"),
])
def test_token_review_and_access_review(client, headers, method, path, status) -> None:
    r = client.request(method, path, headers=headers, content=b"{}" if method == "PUT" else None)
    assert r.status_code == status, r.text
    if status in (401, 403):
        assert "secret-name" not in r.text and "demo" not in r.text


def test_policy_in_a_configmap_with_its_resource_version_as_etag(client, service,
                                                                   kube_admin_client) -> None:
    import kubernetes.client as k8s

    r = client.get(f"{DEMO}/policy", headers=VIEWER)
    assert r.status_code == 200
    changed = client.patch(f"{DEMO}/policy", json={"min_replicas": 2, "max_replicas": 20},
                           headers={**EDITOR, "If-Match": r.headers["etag"],
                                    "Content-Type": MERGE})
    assert changed.status_code == 200, changed.text
    core = k8s.CoreV1Api(kube_admin_client)
    maps = core.list_namespaced_config_map(POLICY_NS, label_selector=f"{POLICY_LABEL}=true")
    assert len(maps.items) == 1
    assert changed.headers["etag"] == f'"{maps.items[0].metadata.resource_version}"'
    cfg = service.controller.targets[("default", "Deployment", "demo")].config
    assert (cfg.policy.min_replicas, cfg.policy.max_replicas) == (2, 20)
    # Stale: the viewer's first ETag no longer matches.
    stale = client.patch(f"{DEMO}/policy", json={"min_replicas": 3},
                         headers={**EDITOR, "If-Match": r.headers["etag"],
                                  "Content-Type": MERGE})
    assert stale.status_code == 412
    history = client.get(f"{DEMO}/policy/history", headers=VIEWER).json()["changes"]
    assert [(h["who"], h["action"]) for h in history] == [("bob", "update")]
    # An Event on the target's workload says who changed what.
    events = core.list_namespaced_event("default").items
    mine = [e for e in events if e.reason and e.reason.startswith("Policy")]
    assert len(mine) == 1, [(e.reason, e.message) for e in events]
    assert mine[0].involved_object.name == "demo" and "bob" in mine[0].message


def test_pause_and_a_new_replica_reads_it_back(client, service, users, make_kube_client,
                                               prometheus_scraping) -> None:
    from tests.kubeserver import CONTROLLER_TOKEN

    assert client.post(f"{DEMO}/pause", headers=EDITOR).json()["paused"] is True
    doc = client.get(f"{DEMO}/policy", headers=VIEWER)
    other = in_cluster(prometheus_scraping.url, make_kube_client(CONTROLLER_TOKEN))
    try:
        with TestClient(create_app(other)) as c2:
            again = c2.get(f"{DEMO}/policy", headers=VIEWER)
            view = c2.get(DEMO, headers=VIEWER).json()
    finally:
        other.api_client = None
        other.shutdown()
    assert again.json() == doc.json() and again.headers["etag"] == doc.headers["etag"]
    assert view["paused"] is True


def test_api_server_down_is_503_never_a_pass(client, users) -> None:
    assert client.get(DEMO, headers=VIEWER).status_code == 200
    users.stop()
    r = client.get(DEMO, headers={"Authorization": "Bearer fresh-token-never-seen"})
    assert r.status_code == 503, r.text
    assert "demo" not in r.text


def test_concurrent_patches_on_the_configmap_exactly_one_wins(service) -> None:

    app = create_app(service)
    with TestClient(app) as c:
        etag = c.get(f"{DEMO}/policy", headers=VIEWER).headers["etag"]
        assert c.patch(f"{DEMO}/policy", json={"min_replicas": 2}, headers={
            **EDITOR, "If-Match": etag, "Content-Type": MERGE}).status_code == 200
        etag = c.get(f"{DEMO}/policy", headers=VIEWER).headers["etag"]
    winner = race_two_patches(app, (30, 40), lambda c, value: c.patch(
        f"{DEMO}/policy", json={"max_replicas": value},
        headers={**EDITOR, "If-Match": etag, "Content-Type": MERGE}).status_code)
    with TestClient(app) as c:
        assert c.get(f"{DEMO}/policy", headers=VIEWER).json()["max_replicas"] == winner
