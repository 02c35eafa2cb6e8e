"""The Kubernetes actuator against the project's test API server, through the official client.

The actuator always uses the controller's ServiceAccount token (`kube_client`), so any verb
missing from manifests/base/rbac.yaml fails these tests with 403.  Expected values are the
floor rule stated in the issue (max(need, user minimum), capped at the scaler's maximum), by
hand, never read back from the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime

import kubernetes.client as k8s
import pytest

from autoscaler.errors import ActuationError, ConfigError, KubernetesUnavailable, WriteConflict
from autoscaler.kube_actuator import (
    USER_MIN_ANNOTATION,
    ActuatorTarget,
    ConflictRetry,
    KubeActuator,
    floor_change,
)
from autoscaler.prewarm import PLACEHOLDER_LABEL, Prewarmer, balloons_needed
from policies.types import Decision
from tests.kubeserver import BY_KIND, seeding

NS = "ml"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
HPA = BY_KIND["HorizontalPodAutoscaler"]


def floor(n: int, reason: str = "lead-time-scale-up") -> Decision:
    return Decision(replicas=n, reason=reason, floor=n)


@pytest.fixture
def cluster(kube_server):
    """web: Deployment + HPA (min 2, max 10); queue: Deployment + KEDA ScaledObject (min 1,
    max 20) and the HPA KEDA made for it; batch: Deployment, db: StatefulSet, no scaler."""
    store = kube_server.store
    seeding.seed(store, seeding.deployment("web", NS, 2))
    seeding.seed(store, seeding.hpa("web", NS, "web", 2, 10))
    seeding.seed(store, seeding.deployment("queue", NS, 1))
    seeding.seed(store, seeding.scaled_object("queue-so", NS, "queue", 1, 20))
    keda_hpa = seeding.hpa("keda-hpa-queue-so", NS, "queue", 1, 20)
    keda_hpa["metadata"]["labels"] = {"scaledobject.keda.sh/name": "queue-so"}
    seeding.seed(store, keda_hpa)
    seeding.seed(store, seeding.deployment("batch", NS, 3))
    seeding.seed(store, seeding.deployment("db", NS, 2, kind="StatefulSet"))
    return kube_server


@pytest.fixture
def slept():
    return []


@pytest.fixture
def actuator(kube_client, slept):
    return KubeActuator(kube_client, retry=ConflictRetry(3, (0.5, 2.0)), sleep=slept.append)


def read_hpa(admin, name="web"):
    return k8s.AutoscalingV2Api(admin).read_namespaced_horizontal_pod_autoscaler(name, NS)


def read_so(admin, name="queue-so"):
    return k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
        "keda.sh", "v1alpha1", NS, "scaledobjects", name)


def events_on(admin, name):
    return [e for e in k8s.CoreV1Api(admin).list_namespaced_event(NS).items
            if e.involved_object.name == name]


# ---------------------------------------------------------------- the pure floor rule
@pytest.mark.parametrize(("spec_min", "annotation", "max_r", "need", "want"), [
    pytest.param(2, None, 10, 6, (2, 6, "2"), id="first-raise-remembers-user-min"),
    pytest.param(6, "2", 10, 4, (2, 4, "2"), id="lower-but-above-user-min-keeps-annotation"),
    pytest.param(4, "2", 10, 1, (2, 2, None), id="falls-to-user-min-restores"),
    pytest.param(4, "2", 10, 2, (2, 2, None), id="equal-to-user-min-restores"),
    pytest.param(2, None, 10, 50, (2, 10, "2"), id="capped-at-max"),
    pytest.param(3, None, 10, 1, (3, 3, None), id="below-user-min-no-change"),
    pytest.param(0, None, 20, 0, (0, 0, None), id="keda-zero-min"),
])
def test_floor_rule(spec_min, annotation, max_r, need, want):
    change = floor_change(spec_min, annotation, max_r, need)
    assert (change.user_min, change.new_min, change.annotation) == want


def test_floor_rule_refuses_a_garbled_annotation():
    with pytest.raises(ConfigError, match=USER_MIN_ANNOTATION):
        floor_change(5, "five", 10, 6)


# ---------------------------------------------------------------- floor mode, HPA
def test_floor_raises_then_falls_back_to_user_min(cluster, actuator, kube_admin_client):
    target = ActuatorTarget(NS, "web")
    raised = actuator.apply(target, floor(6), NOW)
    hpa = read_hpa(kube_admin_client)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (6, 10)
    assert hpa.metadata.annotations[USER_MIN_ANNOTATION] == "2"
    assert raised.written and (raised.before, raised.after, raised.user_min) == (2, 6, 2)

    actuator.apply(target, floor(4), NOW)  # lower, still above the user's 2
    hpa = read_hpa(kube_admin_client)
    assert hpa.spec.min_replicas == 4
    assert hpa.metadata.annotations[USER_MIN_ANNOTATION] == "2"  # written once, not 6

    actuator.apply(target, floor(1, "hold: back to hpa"), NOW)
    hpa = read_hpa(kube_admin_client)
    assert hpa.spec.min_replicas == 2
    assert USER_MIN_ANNOTATION not in (hpa.metadata.annotations or {})

    events = events_on(kube_admin_client, "web")
    assert [e.reason for e in events].count("lead-time-scale-up") == 2
    last = [e for e in events if e.reason == "hold: back to hpa"]
    assert len(last) == 1 and last[0].involved_object.kind == "HorizontalPodAutoscaler"
    assert "minReplicas=2" in last[0].message and "hold: back to hpa" in last[0].message


def test_floor_never_above_hpa_max(cluster, actuator, kube_admin_client):
    action = actuator.apply(ActuatorTarget(NS, "web"), floor(50), NOW)
    assert action.after == 10 and read_hpa(kube_admin_client).spec.min_replicas == 10


def test_unchanged_floor_writes_nothing(cluster, actuator, kube_admin_client):
    rv = cluster.store.resource_version
    action = actuator.apply(ActuatorTarget(NS, "web"), floor(1), NOW)
    assert not action.written and action.patch is None and action.event is None
    assert cluster.store.resource_version == rv


def test_restore_on_removal_gives_back_user_min(cluster, actuator, kube_admin_client):
    target = ActuatorTarget(NS, "web")
    actuator.apply(target, floor(7), NOW)
    restored = actuator.restore(target, NOW)
    hpa = read_hpa(kube_admin_client)
    assert restored.written and hpa.spec.min_replicas == 2
    assert USER_MIN_ANNOTATION not in (hpa.metadata.annotations or {})
    reasons = sorted(e.reason for e in events_on(kube_admin_client, "web"))
    assert reasons == ["lead-time-scale-up", "target-removed"]  # listed by name, not time


def test_floor_needs_a_scaler(cluster, actuator):
    with pytest.raises(ConfigError, match="mode floor needs an HPA"):
        actuator.apply(ActuatorTarget(NS, "batch"), floor(3), NOW)


# ---------------------------------------------------------------- floor mode, KEDA
def test_keda_scaled_object_gets_the_floor_not_its_hpa(cluster, actuator, kube_admin_client):
    keda_hpa_rv = read_hpa(kube_admin_client, "keda-hpa-queue-so").metadata.resource_version
    target = ActuatorTarget(NS, "queue")
    action = actuator.apply(target, floor(5), NOW)
    so = read_so(kube_admin_client)
    assert so["spec"]["minReplicaCount"] == 5 and so["spec"]["maxReplicaCount"] == 20
    assert so["metadata"]["annotations"][USER_MIN_ANNOTATION] == "1"
    assert (action.object_kind, action.field_path) == ("ScaledObject", "spec.minReplicaCount")
    assert read_hpa(kube_admin_client, "keda-hpa-queue-so").metadata.resource_version \
        == keda_hpa_rv  # KEDA's HPA untouched
    assert events_on(kube_admin_client, "queue-so")[0].involved_object.kind == "ScaledObject"

    actuator.restore(target, NOW)
    so = read_so(kube_admin_client)
    assert so["spec"]["minReplicaCount"] == 1
    assert USER_MIN_ANNOTATION not in (so["metadata"].get("annotations") or {})


# ---------------------------------------------------------------- direct mode
@pytest.mark.parametrize(("name", "kind"), [
    pytest.param("batch", "Deployment", id="deployment"),
    pytest.param("db", "StatefulSet", id="statefulset"),
])
def test_direct_patches_the_scale_subresource(cluster, actuator, kube_admin_client, name, kind):
    action = actuator.apply(ActuatorTarget(NS, name, kind=kind, mode="direct"),
                            Decision(replicas=7, reason="lead-time-scale-up"), NOW)
    apps = k8s.AppsV1Api(kube_admin_client)
    read = (apps.read_namespaced_deployment_scale if kind == "Deployment"
            else apps.read_namespaced_stateful_set_scale)
    assert read(name, NS).spec.replicas == 7
    assert action.written and action.field_path == "spec.replicas"
    event = events_on(kube_admin_client, name)[0]
    assert event.involved_object.kind == kind and "spec.replicas=7" in event.message


def test_direct_takes_the_floor_when_above_replicas(cluster, actuator, kube_admin_client):
    actuator.apply(ActuatorTarget(NS, "batch", mode="direct"),
                   Decision(replicas=2, reason="r", floor=5), NOW)
    assert k8s.AppsV1Api(kube_admin_client).read_namespaced_deployment_scale(
        "batch", NS).spec.replicas == 5


def test_direct_refused_beside_an_hpa(cluster, actuator):
    rv = cluster.store.resource_version
    with pytest.raises(ConfigError, match="HorizontalPodAutoscaler web scales it"):
        actuator.apply(ActuatorTarget(NS, "web", mode="direct"), floor(5), NOW)
    assert cluster.store.resource_version == rv


# ---------------------------------------------------------------- dry run and metric mode
@pytest.mark.parametrize(("target", "global_dry"), [
    pytest.param(ActuatorTarget(NS, "web", dry_run=True), False, id="floor-per-target"),
    pytest.param(ActuatorTarget(NS, "web"), True, id="floor-global"),
    pytest.param(ActuatorTarget(NS, "queue", dry_run=True), False, id="keda-per-target"),
    pytest.param(ActuatorTarget(NS, "batch", mode="direct"), True, id="direct-global"),
    pytest.param(ActuatorTarget(NS, "web", mode="metric"), False, id="metric-mode"),
])
def test_dry_run_and_metric_write_nothing(cluster, kube_client, target, global_dry):
    rv = cluster.store.resource_version
    actuator = KubeActuator(kube_client, dry_run=global_dry)
    action = actuator.apply(target, floor(6), NOW)
    assert cluster.store.resource_version == rv  # no object (and no Event) written
    assert not action.written and action.event is None
    if target.mode != "metric":  # what would have been written is reported
        assert action.after == 6 and action.dry_run
        assert 6 in action.patch["spec"].values()


# ---------------------------------------------------------------- optimistic concurrency
def interleave_on_hpa_list(store, times: int):
    """After the next `times` HPA lists, another writer changes the HPA (max 10 -> 12, a
    label), so the version the actuator read is stale when it patches."""
    original = store.list
    left = [times]

    def list_then_write(rtype, namespace, match=lambda obj: True):
        result = original(rtype, namespace, match)
        if rtype.kind == "HorizontalPodAutoscaler" and left[0] > 0:
            left[0] -= 1
            store.modify(HPA, NS, "web", lambda obj: {
                **obj, "metadata": {**obj["metadata"],
                                    "labels": {"edited-by": "user", "n": str(left[0])}},
                "spec": {**obj["spec"], "maxReplicas": 12}})
        return result

    store.list = list_then_write


def test_conflict_is_retried_and_keeps_both_changes(cluster, actuator, slept,
                                                    kube_admin_client):
    interleave_on_hpa_list(cluster.store, times=1)
    action = actuator.apply(ActuatorTarget(NS, "web"), floor(6), NOW)
    hpa = read_hpa(kube_admin_client)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (6, 12)  # ours and theirs
    assert hpa.metadata.labels["edited-by"] == "user"
    assert hpa.metadata.annotations[USER_MIN_ANNOTATION] == "2"
    assert slept == [0.5] and action.retries_s == (0.5,)


def test_persistent_conflict_raises_write_conflict(cluster, actuator, slept,
                                                   kube_admin_client):
    interleave_on_hpa_list(cluster.store, times=99)
    with pytest.raises(WriteConflict) as caught:
        actuator.apply(ActuatorTarget(NS, "web"), floor(6), NOW)
    assert caught.value.temporary
    assert slept == [0.5, 2.0]  # 3 attempts: two waits, from the schedule
    assert read_hpa(kube_admin_client).spec.min_replicas == 2  # never clobbered
    assert events_on(kube_admin_client, "web") == []


# ---------------------------------------------------------------- errors at the boundary
def test_missing_workload_is_a_permanent_actuation_error(cluster, actuator):
    with pytest.raises(ActuationError, match="404") as caught:
        actuator.apply(ActuatorTarget(NS, "ghost", mode="direct"), floor(2), NOW)
    assert not caught.value.temporary and not isinstance(caught.value, WriteConflict)


def test_unreachable_server_is_temporary(kube_server, kube_client):
    actuator = KubeActuator(kube_client)
    kube_server.stop()
    with pytest.raises(KubernetesUnavailable) as caught:
        actuator.apply(ActuatorTarget(NS, "web"), floor(3), NOW)
    assert caught.value.temporary


# ---------------------------------------------------------------- node pre-warming
GPU_REQUESTS = {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}


@pytest.fixture
def gpu_workload(kube_server):
    llm = seeding.deployment("llm", NS, 2, requests=GPU_REQUESTS)
    llm["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "gpu-a100"}
    seeding.seed(kube_server.store, llm)
    return kube_server


def placeholders(admin):
    return k8s.CoreV1Api(admin).list_namespaced_pod(
        NS, label_selector=f"{PLACEHOLDER_LABEL}=llm").items


@pytest.mark.parametrize(("predicted", "current", "cap", "want"), [
    pytest.param(5, 2, 10, 3, id="ahead-of-need"),
    pytest.param(5, 5, 10, 0, id="real-pods-took-their-place"),
    pytest.param(3, 6, 10, 0, id="scaling-down"),
    pytest.param(20, 2, 4, 4, id="capped"),
])
def test_balloons_needed(predicted, current, cap, want):
    assert balloons_needed(predicted, current, cap) == want


def test_placeholders_sized_like_the_inference_pod(gpu_workload, kube_client,
                                                   kube_admin_client):
    prewarmer = Prewarmer(kube_client, priority_class="placeholder")
    target = ActuatorTarget(NS, "llm")
    done = prewarmer.reconcile(target, balloons_needed(5, 2, 10))
    pods = placeholders(kube_admin_client)
    assert done.created == 3 and len(pods) == 3
    for pod in pods:
        assert pod.spec.priority_class_name == "placeholder"
        assert pod.spec.node_selector == {"pool": "gpu-a100"}
        assert pod.spec.containers[0].resources.requests == GPU_REQUESTS

    done = prewarmer.reconcile(target, balloons_needed(5, 4, 10))  # 2 real pods came
    assert done.existing == 3 and len(done.deleted) == 2
    assert len(placeholders(kube_admin_client)) == 1
    prewarmer.reconcile(target, 0)
    assert placeholders(kube_admin_client) == []


def test_placeholder_dry_run_writes_nothing(gpu_workload, kube_client):
    rv = gpu_workload.store.resource_version
    done = Prewarmer(kube_client, priority_class="placeholder", dry_run=True).reconcile(
        ActuatorTarget(NS, "llm"), 3)
    assert done.created == 3 and done.dry_run
    assert gpu_workload.store.resource_version == rv
