"""mode `metric`, end to end: the controller (the real service, in-cluster path on the test
API server) serves its predicted need at /metrics over HTTP; a second real Prometheus
scrapes it; the query of the shipped KEDA example (manifests/examples/metric-mode-keda.yaml,
trigger `predicted-need`) returns the controller's desired floor for the target, and KEDA's
AverageValue arithmetic on it (ceil(value / threshold)) asks for exactly that many replicas.
Nothing is written to Kubernetes in this mode.

The target (inference/vllm-demo, the example's) sees about 45 req/s with a capacity of
1 req/s per replica and max_replicas 3: its need is 3 whatever the rate estimate's noise.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
from pathlib import Path

import kubernetes.client as k8s
import pytest
import uvicorn
import yaml

from autoscaler.app import create_app
from autoscaler.service import build_service
from autoscaler.settings import Settings
from tests.kubeserver import CONTROLLER_TOKEN
from tests.prom_fixtures import RunningPrometheus, ScrapingPrometheus
from tests.test_e2e_support import (
    free_port,
    poll,
    rate_query,
    request_stream,
    seed_workload,
    wait_rate,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = PROJECT_ROOT / "manifests" / "examples" / "metric-mode-keda.yaml"
NS, NAME = "inference", "vllm-demo"
FLOOR = 3


def example_trigger() -> dict:
    if not EXAMPLE.is_file():
        pytest.fail(f"{EXAMPLE} is missing: the metric-mode example must ship")
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["metadata"]["namespace"] == NS
    assert scaled["spec"]["scaleTargetRef"]["name"] == NAME
    return next(t for t in scaled["spec"]["triggers"] if t.get("name") == "predicted-need")


class ServedApp:
    """The controller's API on a real loopback port (uvicorn in a thread)."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="api")
        self.thread.start()
        poll(lambda: self.server.started, bool, 20.0, "the API serving")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_metric_mode_need_reaches_the_keda_query_through_prometheus(
        prometheus_scraping, kube_server, kube_admin_client) -> None:
    trigger = example_trigger()
    seed_workload(kube_server.store, NS, NAME, real_pods=1, with_hpa=False)
    written: list[str] = []
    kube_server.store.add_listener(lambda kind, rtype, obj: written.append(rtype.kind))
    settings = Settings(
        prometheus_url=prometheus_scraping.url, tick_s=1, history={"step_s": 60, "days": 0.05},
        leader_election={"enabled": False},
        targets=[{"namespace": NS, "name": NAME, "mode": "metric",
                  "queries": {"request_rate": rate_query(NS, NAME)}, "lead_time_default_s": 60.0,
                  "policy": {"capacity_rps_per_replica": 1.0, "target_utilization": 1.0,
                             "forecaster": "last", "min_replicas": 1, "max_replicas": FLOOR}}])
    workdir = Path(tempfile.mkdtemp(prefix="prom-e2e-metric-"))
    with request_stream(prometheus_scraping.exporter, NS, NAME, 45.0):
        wait_rate(prometheus_scraping, NS, NAME, 10.0)
        service = build_service(settings, api_client=kube_server.client(CONTROLLER_TOKEN),
                                tick_s=0.5)
        service.start()
        served = ServedApp(create_app(service))
        prometheus = None
        try:
            prometheus = RunningPrometheus(workdir, (
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                "scrape_configs:\n  - job_name: predictive-autoscaler\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{served.port}']\n"),
                retention="1d")
            scraper = ScrapingPrometheus(prometheus.url, prometheus, None, "", 1.0)  # queries
            result = scraper.wait_until(trigger["metadata"]["query"],
                                        lambda r: bool(r) and float(r[0]["value"][1]) == FLOOR,
                                        timeout_s=20.0)
            decision = service.controller.targets[(NS, "Deployment", NAME)].last_decision
        finally:
            served.stop()
            service.shutdown()
            if prometheus is not None:
                prometheus.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    value = float(result[0]["value"][1])
    assert decision is not None and decision.floor == value == FLOOR
    # KEDA's prometheus trigger with metricType AverageValue: replicas = ceil(value / threshold)
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    assert math.ceil(value / float(trigger["metadata"]["threshold"])) == FLOOR
    # mode metric writes nothing to the workload (no HPA to raise, no scale patch)
    assert not {"Deployment", "HorizontalPodAutoscaler", "ScaledObject"} & set(written), written
    deployment = k8s.AppsV1Api(kube_admin_client).read_namespaced_deployment(NAME, NS)
    assert deployment.spec.replicas == 1
