"""Shared helpers of the end-to-end tests (tests/test_e2e_*.py; this module has no tests):
a steady request stream into the scraping Prometheus' exporter, seeded workloads on the test
API server, a kubeconfig for the controller's ServiceAccount, bounded polling.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.kubeserver import CONTROLLER_TOKEN
from tests.kubeserver.seeding import deployment, hpa, pod, seed

T = TypeVar("T")
GPU_REQUESTS = {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
NODE_SELECTOR = {"pool": "gpu-a100"}
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rate_query(namespace: str, deployment_name: str) -> str:
    """The target's request rate: a short window, so a fresh counter has a rate in seconds."""
    return (f'sum(rate(demo_requests_total{{namespace="{namespace}",'
            f'deployment="{deployment_name}"}}[5s]))')


@contextmanager
def request_stream(exporter: Any, namespace: str, deployment_name: str,
                   rps: float) -> Iterator[None]:
    """Count `rps` requests per second into the exporter's counter until the block ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.1):
            exporter.inc(namespace, deployment_name, rps * 0.1)

    thread = threading.Thread(target=run, daemon=True, name=f"requests-{namespace}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def wait_rate(prometheus: Any, namespace: str, deployment_name: str, at_least: float) -> None:
    """Until Prometheus reports a rate of at least `at_least` req/s for the series."""
    prometheus.wait_until(rate_query(namespace, deployment_name),
                          lambda r: bool(r) and float(r[0]["value"][1]) >= at_least, 20.0)


def seed_workload(store: Any, namespace: str, name: str, *, real_pods: int,
                  with_hpa: bool = True, user_min: int = 1, hpa_max: int = 10) -> dict:
    """A GPU Deployment `name` (requests, node selector and tolerations set) with
    `real_pods` Running pods and, if asked, its HPA (minReplicas user_min)."""
    workload = deployment(name, namespace, real_pods, requests=GPU_REQUESTS)
    spec = workload["spec"]["template"]["spec"]
    spec["nodeSelector"] = dict(NODE_SELECTOR)
    spec["tolerations"] = [dict(t) for t in TOLERATIONS]
    stored = seed(store, workload)
    add_pods(store, namespace, name, range(real_pods))
    if with_hpa:
        autoscaler = hpa(name, namespace, name, user_min, hpa_max)
        autoscaler["status"] = {"currentReplicas": real_pods, "desiredReplicas": real_pods}
        seed(store, autoscaler)
    return stored


def add_pods(store: Any, namespace: str, name: str, indices: range) -> None:
    """Real pods of the workload (label app=<name>), created a minute ago and Ready."""
    created = datetime.fromtimestamp(time.time() - 60.0, UTC)
    for i in indices:
        seed(store, pod(f"{name}-real-{i}", namespace, {"app": name}, created,
                        scheduled_after_s=2.0, ready_after_s=30.0))


def write_kubeconfig(path: Path, server_url: str, token: str = CONTROLLER_TOKEN) -> Path:
    """A kubeconfig pointing at the test API server, authenticating as the controller."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server_url}}],
        "users": [{"name": "controller", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "controller"}}],
    }))
    return path


def poll(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float,
         what: str, interval_s: float = 0.1) -> T:
    """read() until done(value); AssertionError naming `what` and the last value after
    timeout_s."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; "
                                 f"last: {value!r}")
        time.sleep(interval_s)
        value = read()
    return value
