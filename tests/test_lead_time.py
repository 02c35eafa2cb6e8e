"""Lead time measured from pods' conditions: seeded in the test API server, read through the
official client with the controller's token, quantiles checked against hand counts and against
numpy's inverted-CDF quantile (the nearest-rank definition), never against the tracker itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
import kubernetes.client as k8s
import numpy as np
import pytest
from hypothesis import given

from autoscaler.lead_time import (
    LeadTimeTracker,
    label_selector,
    nearest_rank,
    pod_start,
)
from tests.kubeserver import seeding

NS = "ml"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def target_pods(api_client, name="llm"):
    apps, core = k8s.AppsV1Api(api_client), k8s.CoreV1Api(api_client)
    selector = label_selector(
        api_client.sanitize_for_serialization(apps.read_namespaced_deployment(name, NS).spec)[
            "selector"])
    return core.list_namespaced_pod(NS, label_selector=selector).items


@pytest.mark.parametrize(("ready_after_s", "quantile", "want_s"), [
    # ten pods ready 60..150 s after creation: nearest rank ceil(q*10)
    pytest.param([60, 70, 80, 90, 100, 110, 120, 130, 140, 150], 0.95, 150, id="p95-of-10"),
    pytest.param([60, 70, 80, 90, 100, 110, 120, 130, 140, 150], 0.5, 100, id="p50-of-10"),
    pytest.param([60, 70, 80, 90, 100, 110, 120, 130, 140, 150], 0.8, 130, id="p80-of-10"),
    pytest.param([300, 45, 50, 55, 60], 0.95, 300, id="one-slow-gpu-node"),
    pytest.param([300, 45, 50, 55, 60], 0.6, 55, id="p60-ignores-the-slow-one"),
])
def test_quantile_of_seeded_pods(kube_server, kube_client, ready_after_s, quantile, want_s):
    seeding.seed_deployment_with_pods(kube_server.store, "llm", NS, len(ready_after_s),
                                      created_at=T0, scheduled_after_s=5.0,
                                      ready_after_s=ready_after_s, spacing_s=30.0)
    tracker = LeadTimeTracker(default_s=999.0, window=20, min_pods=3, quantile=quantile)
    assert tracker.observe(target_pods(kube_client)) == len(ready_after_s)
    estimate = tracker.estimate()
    assert (estimate.lead_time_s, estimate.source, estimate.pods) == (want_s, "measured",
                                                                       len(ready_after_s))
    assert estimate.scheduling_s == 5.0


def test_default_until_enough_pods_and_pending_pods_ignored(kube_server, kube_client):
    # 4 pods: 3 Ready, 1 still Pending (not counted), min_pods 4 -> the default
    seeding.seed_deployment_with_pods(kube_server.store, "llm", NS, 4, created_at=T0,
                                      ready_after_s=[90, 100, 110, None])
    tracker = LeadTimeTracker(default_s=240.0, window=10, min_pods=4)
    tracker.observe(target_pods(kube_client))
    assert tracker.estimate().lead_time_s == 240.0 and tracker.estimate().source == "default"
    # the pending pod turns Ready at 400 s: now 4 pods, p95 = the largest
    pod = target_pods(kube_client)[3]
    ready_at = (pod.metadata.creation_timestamp + timedelta(seconds=400)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    k8s.CoreV1Api(kube_server.admin_client()).patch_namespaced_pod_status(
        pod.metadata.name, NS, {"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": ready_at}]}})
    assert tracker.observe(target_pods(kube_client)) == 1
    assert tracker.estimate().lead_time_s == 400.0 and tracker.estimate().source == "measured"


def test_each_pod_counted_once_and_window_bounded(kube_server, kube_client):
    seeding.seed_deployment_with_pods(kube_server.store, "llm", NS, 6, created_at=T0,
                                      ready_after_s=[10, 20, 30, 40, 50, 60], spacing_s=100.0)
    tracker = LeadTimeTracker(default_s=0.0, window=3, min_pods=1, quantile=1.0)
    pods = target_pods(kube_client)
    assert tracker.observe(pods) == 6
    assert tracker.observe(pods) == 0  # same uids: nothing new
    # the window keeps the 3 most recently Ready pods: lead times 40, 50, 60
    assert sorted(s.lead_time_s for s in tracker.starts) == [40.0, 50.0, 60.0]
    assert tracker.lead_time_s() == 60.0


def pod_dict(uid: str, ready_after_s: float | None, deleting: bool = False) -> dict:
    pod = seeding.pod(uid, NS, {"app": "x"}, T0, scheduled_after_s=1.0,
                      ready_after_s=ready_after_s)
    pod["metadata"]["uid"] = uid
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-03-02T09:00:00Z"
    return pod


@pytest.mark.parametrize(("pod", "want"), [
    pytest.param(pod_dict("a", 42.0), 42.0, id="ready"),
    pytest.param(pod_dict("b", None), None, id="pending"),
    pytest.param(pod_dict("c", 42.0, deleting=True), None, id="terminating"),
])
def test_pod_start_from_json(pod, want):
    start = pod_start(pod)
    assert (start.lead_time_s if start else None) == want


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=60),
       st.floats(0.01, 1.0))
def test_nearest_rank_is_numpys_inverted_cdf(values, quantile):
    assert nearest_rank(values, quantile) == pytest.approx(
        float(np.quantile(values, quantile, method="inverted_cdf")))


@given(st.lists(st.integers(1, 900), min_size=0, max_size=40), st.integers(1, 10))
def test_window_never_exceeds_and_uids_not_recounted(lead_times, window):
    tracker = LeadTimeTracker(default_s=7.0, window=window, min_pods=1)
    pods = [pod_dict(f"p{i}", float(s)) for i, s in enumerate(lead_times)]
    for cut in range(0, len(pods) + 1, 7):  # pods appear a few at a time, lists grow
        tracker.observe(pods[:cut])
    tracker.observe(pods)
    assert len(tracker.starts) == min(window, len(pods))
    assert len({s.uid for s in tracker.starts}) == len(tracker.starts)
    if not pods:
        assert tracker.lead_time_s() == 7.0


@pytest.mark.parametrize(("selector", "want"), [
    pytest.param({"matchLabels": {"app": "llm", "tier": "gpu"}}, "app=llm,tier=gpu", id="labels"),
    pytest.param({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]},
                                       {"key": "canary", "operator": "DoesNotExist"}]},
                 "app in (a,b),!canary", id="expressions"),
])
def test_label_selector(selector, want):
    assert label_selector(selector) == want


@pytest.mark.parametrize(("measured", "expected"), [
    pytest.param([], 300.0, id="none measured: the default"),
    pytest.param([10.0, 20.0, 30.0, 40.0], 300.0, id="four of five needed: the default"),
    pytest.param([50.0, 10.0, 40.0, 20.0, 30.0], 50.0, id="five: nearest-rank p95 = max"),
    pytest.param([float(v) for v in range(1, 101)], 98.0,
                 id="window keeps the latest 50 (51..100): rank ceil(47.5)=48 -> 98"),
])
def test_simulator_and_controller_plan_the_same_lead_time(measured, expected) -> None:
    """The simulator's replay and the live tracker share one rule (policies/lead_time.py):
    the same measurements give the same planned lead time, counted by hand."""
    from policies.lead_time import LeadTimeRule

    rule = LeadTimeRule(300.0, window=50, min_samples=5, quantile=0.95)
    assert rule.lead_time_s(measured) == expected
    tracker = LeadTimeTracker(300.0, window=50, min_pods=5, quantile=0.95)
    pods = []
    for i, lead in enumerate(measured):  # ready in this order, a pod every 1,000 s
        pod = seeding.pod(f"p{i}", NS, {"app": "x"}, T0 + timedelta(seconds=1000 * i),
                          scheduled_after_s=1.0, ready_after_s=lead)
        pod["metadata"]["uid"] = f"uid-{i}"
        pods.append(pod)
    tracker.observe(pods)
    assert tracker.lead_time_s() == expected
