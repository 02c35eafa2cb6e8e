"""The in-cluster path of `autoscaler run`, end to end: real Prometheus (scraping a live
exporter) + the test API server reached through a kubeconfig with the controller's token
(so the project's RBAC applies) + the real APScheduler service.

The target sees about 45 req/s with a capacity of 1 req/s per replica and max_replicas 4:
whatever the rate estimate's noise or the forecast, the need is 4 replicas, so the HPA's
minReplicas must become 4 with the user's own minimum (1) kept in the annotation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import kubernetes.client as k8s
import yaml
from fastapi.testclient import TestClient

from autoscaler.app import create_app
from autoscaler.kube_actuator import USER_MIN_ANNOTATION
from autoscaler.service import build_service
from autoscaler.settings import Settings
from tests.process_support import reaped, stop
from tests.test_e2e_support import (
    free_port,
    poll,
    rate_query,
    request_stream,
    seed_workload,
    wait_rate,
    write_kubeconfig,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NAME = "demo"
FLOOR = 4
LEASE = {"lease_duration_s": 3, "renew_deadline_s": 2.0, "retry_period_s": 0.5}


def config(prometheus_url: str, namespace: str, identity: str, **extra) -> dict:
    return {
        "prometheus_url": prometheus_url, "tick_s": 1, "refit_interval_s": 3600,
        "history": {"step_s": 60, "days": 0.05},
        "leader_election": {"identity": identity, **LEASE},
        "targets": [{"namespace": namespace, "name": NAME,
                     "queries": {"request_rate": rate_query(namespace, NAME)},
                     "lead_time_default_s": 60.0,
                     "policy": {"capacity_rps_per_replica": 1.0, "target_utilization": 1.0,
                                "forecaster": "last", "min_replicas": 1,
                                "max_replicas": FLOOR}}],
        **extra,
    }


def hpa_of(admin, namespace: str):
    return k8s.AutoscalingV2Api(admin).read_namespaced_horizontal_pod_autoscaler(NAME, namespace)


def floor_written(h) -> bool:
    return h.spec.min_replicas == FLOOR


def test_build_service_with_kubeconfig_writes_the_floor_and_serves_metrics(
        prometheus_scraping, kube_server, kube_admin_client, tmp_path) -> None:
    ns = "e2e-run"
    seed_workload(kube_server.store, ns, NAME, real_pods=1)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url)
    with request_stream(prometheus_scraping.exporter, ns, NAME, 45.0):
        wait_rate(prometheus_scraping, ns, NAME, 10.0)
        service = build_service(Settings(**config(prometheus_scraping.url, ns, "replica-0")),
                                kubeconfig=kubeconfig, tick_s=0.5)
        service.start()
        try:
            h = poll(lambda: hpa_of(kube_admin_client, ns), floor_written, 15.0,
                     "the floor on the HPA")
            with TestClient(create_app(service)) as client:
                metrics = client.get("/metrics").text
        finally:
            service.shutdown()
    assert (h.metadata.annotations or {}).get(USER_MIN_ANNOTATION) == "1"
    assert (f'predictive_autoscaler_desired_floor_replicas{{namespace="{ns}",target="{NAME}"}} '
            f'{float(FLOOR)}') in metrics
    assert "predictive_autoscaler_is_leader 1.0" in metrics
    lease = k8s.CoordinationV1Api(kube_admin_client).read_namespaced_lease(
        "predictive-autoscaler", "predictive-autoscaler")
    assert not lease.spec.holder_identity, "shutdown gives the Lease up"


def test_readyz_in_cluster_checks_prometheus_and_the_api_server(
        prometheus_scraping, kube_server, tmp_path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url)
    service = build_service(Settings(**config(prometheus_scraping.url, "e2e-ready", "r-0")),
                            kubeconfig=kubeconfig, tick_s=3600.0)
    service.start()
    try:
        with TestClient(create_app(service)) as client:
            ready = client.get("/readyz")
    finally:
        service.shutdown()
    assert ready.status_code == 200, ready.text


def test_autoscaler_run_with_kubeconfig_writes_the_floor_and_stops_on_sigterm(
        prometheus_scraping, kube_server, kube_admin_client, tmp_path) -> None:
    ns = "e2e-cli"
    seed_workload(kube_server.store, ns, NAME, real_pods=1)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_server.url)
    port = free_port()
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config(prometheus_scraping.url, ns, "replica-cli",
                                                 api_host="127.0.0.1", api_port=port)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    with request_stream(prometheus_scraping.exporter, ns, NAME, 45.0):
        wait_rate(prometheus_scraping, ns, NAME, 10.0)
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config_path),
             "--kubeconfig", str(kubeconfig)],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        with reaped(proc):
            def state():
                if proc.poll() is not None:
                    raise AssertionError(f"autoscaler run exited {proc.returncode}: "
                                         f"{proc.communicate()[0][-2000:]}")
                return hpa_of(kube_admin_client, ns)

            h = poll(state, floor_written, 30.0, "the floor written by `autoscaler run`")
            def status(probe: str) -> int | str:
                # the tick may write the floor before uvicorn listens: retry, bounded
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{probe}",
                                                timeout=10) as r:
                        return r.status
                except OSError as e:
                    return f"{type(e).__name__}: {e}"

            for probe in ("healthz", "readyz"):  # alive, and Prometheus + API server reachable
                poll(lambda p=probe: status(p), lambda s: s == 200, 20.0, f"/{probe} 200")
            out = stop(proc, 15)
    assert proc.returncode == 0, out[-2000:]
    assert (h.metadata.annotations or {}).get(USER_MIN_ANNOTATION) == "1"
