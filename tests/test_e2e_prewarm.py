"""Node pre-warming wired into the loop, end to end: real Prometheus (scraping a live
exporter) + the test API server + Controller.tick at the wall clock.

Each target sees about 45 req/s with a capacity of 1 req/s per replica and max_replicas 6,
so its floor (the need over the lead time) is exactly 6 whatever the rate estimate's noise.
Placeholders wanted = min(floor - live real pods, cap) with cap 3, counted by hand below:
2 real pods -> 3 (capped), 4 -> 2, 6 -> 0. Dry-run and paused targets get none; a paused
one gets its placeholders once resumed, and removing a target deletes them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime

import kubernetes.client as k8s
import pytest

from autoscaler.kube_actuator import KubeActuator
from autoscaler.loop import ClusterReader, Controller
from autoscaler.metrics import ControllerMetrics
from autoscaler.prewarm import PLACEHOLDER_LABEL, live_pods
from autoscaler.prometheus_source import PrometheusSource
from autoscaler.settings import Settings
from tests.test_e2e_support import (
    GPU_REQUESTS,
    NODE_SELECTOR,
    add_pods,
    rate_query,
    request_stream,
    seed_workload,
    wait_rate,
)

PRIORITY_CLASS = "e2e-placeholder"
CAP = 3
NAME = "llm"
LIVE, DRY, PAUSED = "pw-live", "pw-dry", "pw-paused"
RPS = 45.0


def settings() -> Settings:
    def target(ns: str, **extra):
        return {"namespace": ns, "name": NAME, "queries": {"request_rate": rate_query(ns, NAME)},
                "prewarm_nodes": True, "lead_time_default_s": 120.0,
                "policy": {"capacity_rps_per_replica": 1.0, "target_utilization": 1.0,
                           "min_replicas": 1, "max_replicas": 6},
                **extra}
    return Settings(prewarm_priority_class=PRIORITY_CLASS, prewarm_max_placeholders=CAP,
                    history={"step_s": 60, "days": 0.05},
                    targets=[target(LIVE), target(DRY, dry_run=True), target(PAUSED)])


def placeholders(admin, namespace: str) -> list:
    pods = k8s.CoreV1Api(admin).list_namespaced_pod(
        namespace, label_selector=f"{PLACEHOLDER_LABEL}={NAME}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


@pytest.fixture
def streams(prometheus_scraping):
    exporter = prometheus_scraping.exporter
    with request_stream(exporter, LIVE, NAME, RPS), request_stream(exporter, DRY, NAME, RPS), \
            request_stream(exporter, PAUSED, NAME, RPS):
        for ns in (LIVE, DRY, PAUSED):
            wait_rate(prometheus_scraping, ns, NAME, 10.0)
        yield


def test_placeholders_follow_the_need_and_real_pods(prometheus_scraping, streams, kube_server,
                                                    kube_client, kube_admin_client) -> None:
    store = kube_server.store
    for ns in (LIVE, DRY, PAUSED):
        seed_workload(store, ns, NAME, real_pods=2)
    cfg = settings()
    controller = Controller(
        cfg.targets_config(), PrometheusSource(prometheus_scraping.url, step_s=60,
                                               history_points=60),
        actuator=KubeActuator(kube_client, sleep=lambda s: None),
        cluster=ClusterReader(kube_client), metrics=ControllerMetrics(), history_s=3600.0,
        start_s=time.time())
    keys = {ns: (ns, "Deployment", NAME) for ns in (LIVE, DRY, PAUSED)}
    controller.set_paused(keys[PAUSED], True)

    records = controller.tick(time.time())
    assert {records[k].floor for k in keys.values()} == {6}, records
    # 6 needed, 2 real pods: 4 missing, capped at 3.
    made = placeholders(kube_admin_client, LIVE)
    assert len(made) == CAP
    for p in made:
        assert p.spec.priority_class_name == PRIORITY_CLASS
        assert p.spec.containers[0].resources.requests == GPU_REQUESTS
        assert p.spec.node_selector == NODE_SELECTOR
        assert p.spec.tolerations[0].key == "nvidia.com/gpu"
        assert "app" not in (p.metadata.labels or {}), "a placeholder is not a real pod"
    assert records[keys[LIVE]].details["prewarm"]["created"] == CAP
    # Dry run: computed and recorded, nothing created. Paused: nothing at all.
    assert placeholders(kube_admin_client, DRY) == []
    assert records[keys[DRY]].details["prewarm"] == {"wanted": CAP, "dry_run": True}
    assert placeholders(kube_admin_client, PAUSED) == []
    assert "prewarm" not in records[keys[PAUSED]].details

    controller.tick(time.time())  # steady: the same placeholders, none added
    assert {p.metadata.name for p in placeholders(kube_admin_client, LIVE)} == \
        {p.metadata.name for p in made}

    add_pods(store, LIVE, NAME, range(2, 4))  # 4 real pods: 2 placeholders left
    records = controller.tick(time.time())
    assert len(placeholders(kube_admin_client, LIVE)) == 2
    assert len(records[keys[LIVE]].details["prewarm"]["deleted"]) == 1

    add_pods(store, LIVE, NAME, range(4, 6))  # 6 real pods cover the need
    controller.tick(time.time())
    assert placeholders(kube_admin_client, LIVE) == []
    assert placeholders(kube_admin_client, DRY) == []

    controller.set_paused(keys[PAUSED], False)  # resumed: pre-warms like any other target
    controller.tick(time.time())
    assert len(placeholders(kube_admin_client, PAUSED)) == CAP
    config = controller.targets[keys[PAUSED]].config
    controller.update_target(replace(config, prewarm_nodes=False), time.time())
    controller.tick(time.time())  # pre-warming turned off: its placeholders go
    assert placeholders(kube_admin_client, PAUSED) == []
    controller.update_target(config, time.time())
    controller.tick(time.time())
    assert len(placeholders(kube_admin_client, PAUSED)) == CAP
    controller.remove_target(keys[PAUSED], time.time())  # removed: its nodes are given back
    assert placeholders(kube_admin_client, PAUSED) == []


def test_standby_creates_no_placeholders(prometheus_scraping, streams, kube_server,
                                         kube_client, kube_admin_client) -> None:
    seed_workload(kube_server.store, LIVE, NAME, real_pods=2)
    cfg = settings().model_copy(update={"targets": settings().targets[:1]})
    controller = Controller(
        cfg.targets_config(), PrometheusSource(prometheus_scraping.url, step_s=60,
                                               history_points=60),
        actuator=KubeActuator(kube_client, sleep=lambda s: None),
        cluster=ClusterReader(kube_client), is_leader=lambda now_s: False,
        history_s=3600.0, start_s=time.time())
    record = controller.tick(time.time())[(LIVE, "Deployment", NAME)]
    assert record.floor == 6 and not record.acted
    assert placeholders(kube_admin_client, LIVE) == []


def _pod(phase: str, deleting: bool = False) -> k8s.V1Pod:
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(
        name="p", deletion_timestamp=datetime(2026, 1, 1, tzinfo=UTC) if deleting else None),
        status=k8s.V1PodStatus(phase=phase))


@pytest.mark.parametrize(("pods", "live"), [
    pytest.param([_pod("Running"), _pod("Pending")], 2, id="running-and-unscheduled-count"),
    pytest.param([_pod("Running", deleting=True)], 0, id="terminating-does-not"),
    pytest.param([_pod("Succeeded"), _pod("Failed"), _pod("Running")], 1, id="finished-do-not"),
    pytest.param([], 0, id="none"),
])
def test_live_pods(pods, live) -> None:
    assert live_pods(pods) == live


@pytest.mark.parametrize(("target_cap", "expected"), [
    pytest.param(None, CAP, id="global-default"),
    pytest.param(1, 1, id="target-override"),
    pytest.param(0, 0, id="zero-disables"),
])
def test_placeholder_cap_resolution(target_cap, expected) -> None:
    cfg = Settings(prewarm_priority_class=PRIORITY_CLASS, prewarm_max_placeholders=CAP, targets=[
        {"namespace": "a", "name": "b", "queries": {"request_rate": "x"}, "prewarm_nodes": True,
         "prewarm_max_placeholders": target_cap}]).targets_config()[0]
    assert (cfg.prewarm_max_placeholders, cfg.prewarm_priority_class) == (expected,
                                                                          PRIORITY_CLASS)
