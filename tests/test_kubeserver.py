"""The test Kubernetes API server, driven only through the official `kubernetes` client.

Expected values come from the Kubernetes API conventions, RFC 6902 / RFC 7386 and the RBAC
specification of the controller (rules listed in the brief of manifests/base/rbac.yaml),
never from the server's own code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
import kubernetes.client as k8s
import pytest
from hypothesis import given, settings
from kubernetes import watch

from tests.kubeserver import (
    ADMIN_TOKEN,
    CONTROLLER_TOKEN,
    CONTROLLER_USER,
    KubeServer,
    RbacPolicy,
    patching,
    seeding,
)
from tests.kubeserver.rbac import Attributes, UserInfo, service_account_user
from tests.kubeserver.selectors import label_selector

NS = "ml"
OWN_NS = "predictive-autoscaler"


def status_of(error: k8s.ApiException) -> dict:
    body = json.loads(error.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == error.status
    return body


def expect_error(code: int, reason: str, call: Callable[[], object]) -> dict:
    with pytest.raises(k8s.ApiException) as caught:
        call()
    assert caught.value.status == code, caught.value.body
    body = status_of(caught.value)
    assert body["reason"] == reason
    return body


@pytest.fixture
def seeded(kube_server: KubeServer) -> KubeServer:
    """One of each object the controller touches, in `ml` and in its own namespace."""
    store = kube_server.store
    seeding.seed(store, seeding.deployment("web", NS, 2))
    seeding.seed(store, seeding.deployment("db", NS, 3, kind="StatefulSet"))
    seeding.seed(store, seeding.hpa("web", NS, "web", 2, 10))
    seeding.seed(store, seeding.scaled_object("keda-web", NS, "web", 1, 20))
    seeding.seed(store, {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "state", "namespace": OWN_NS}, "data": {"a": "1"}})
    seeding.seed(store, {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "other", "namespace": NS}, "data": {}})
    seeding.seed(store, {"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "creds", "namespace": NS},
                         "stringData": {"token": "x"}})
    seeding.seed(store, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": "leader", "namespace": OWN_NS},
                         "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    seeding.seed(store, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": "leader", "namespace": NS},
                         "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    return kube_server


# ---------------------------------------------------------------- scale subresource
@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_scale_subresource_mirrors_and_writes_replicas(seeded, kube_client, kube_admin_client,
                                                       kind):
    apps, admin = k8s.AppsV1Api(kube_client), k8s.AppsV1Api(kube_admin_client)
    name = "web" if kind == "Deployment" else "db"
    read_scale, patch_scale, read_parent = {
        "Deployment": (apps.read_namespaced_deployment_scale,
                       apps.patch_namespaced_deployment_scale,
                       admin.read_namespaced_deployment),
        "StatefulSet": (apps.read_namespaced_stateful_set_scale,
                        apps.patch_namespaced_stateful_set_scale,
                        admin.read_namespaced_stateful_set),
    }[kind]
    parent = read_parent(name, NS)
    scale = read_scale(name, NS)
    assert isinstance(scale, k8s.V1Scale)
    assert scale.spec.replicas == parent.spec.replicas
    assert scale.status.selector == f"app={name}"
    assert scale.metadata.resource_version == parent.metadata.resource_version
    assert scale.metadata.uid == parent.metadata.uid

    patched = patch_scale(name, NS, {"spec": {"replicas": 7}})
    assert patched.spec.replicas == 7
    after = read_parent(name, NS)
    assert after.spec.replicas == 7
    assert after.metadata.generation == parent.metadata.generation + 1
    assert int(after.metadata.resource_version) > int(parent.metadata.resource_version)

    stale = {"metadata": {"resourceVersion": parent.metadata.resource_version},
             "spec": {"replicas": 9}}
    expect_error(409, "Conflict", lambda: patch_scale(name, NS, stale))
    expect_error(422, "Invalid", lambda: patch_scale(name, NS, {"spec": {"replicas": -1}}))
    assert read_parent(name, NS).spec.replicas == 7


def test_listener_can_play_the_deployment_controller(seeded, kube_client):
    store = seeded.store

    def reconcile(kind, rtype, obj):
        replicas = obj.get("spec", {}).get("replicas")
        if rtype.kind == "Deployment" and kind == "MODIFIED" and \
                obj.get("status", {}).get("replicas") != replicas:
            store.modify(rtype, obj["metadata"]["namespace"], obj["metadata"]["name"],
                         lambda cur: {**cur, "status": {"replicas": replicas}}, status_only=True)

    store.add_listener(reconcile)
    apps = k8s.AppsV1Api(kube_client)
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 6}})
    assert apps.read_namespaced_deployment_scale("web", NS).status.replicas == 6


def test_scale_put_needs_update_permission(seeded, kube_client, kube_admin_client):
    body = {"metadata": {"name": "web", "namespace": NS}, "spec": {"replicas": 4}}
    expect_error(403, "Forbidden", lambda: k8s.AppsV1Api(kube_client)
                 .replace_namespaced_deployment_scale("web", NS, body))
    replaced = k8s.AppsV1Api(kube_admin_client).replace_namespaced_deployment_scale("web", NS, body)
    assert replaced.spec.replicas == 4


# ---------------------------------------------------------------- HPA patches
PATCHES = [
    pytest.param(None, {"spec": {"minReplicas": 5}}, id="strategic-merge"),
    pytest.param("application/merge-patch+json", {"spec": {"minReplicas": 5}}, id="merge"),
    pytest.param("application/json-patch+json",
                 [{"op": "replace", "path": "/spec/minReplicas", "value": 5}], id="json-patch"),
]
BAD_PATCHES = [
    pytest.param(None, {"spec": {"minReplicas": "x"}}, id="strategic-merge"),
    pytest.param("application/merge-patch+json", {"spec": {"minReplicas": "x"}}, id="merge"),
    pytest.param("application/json-patch+json",
                 [{"op": "replace", "path": "/spec/minReplicas", "value": "x"}], id="json-patch"),
]


def _patch_hpa(api_client, body, content_type):
    extra = {"_content_type": content_type} if content_type else {}
    return k8s.AutoscalingV2Api(api_client).patch_namespaced_horizontal_pod_autoscaler(
        "web", NS, body, **extra)


@pytest.mark.parametrize(("content_type", "body"), PATCHES)
def test_hpa_min_replicas_patch(seeded, kube_client, content_type, body):
    before = k8s.AutoscalingV2Api(kube_client).read_namespaced_horizontal_pod_autoscaler("web", NS)
    after = _patch_hpa(kube_client, body, content_type)
    assert after.spec.min_replicas == 5
    assert after.spec.max_replicas == before.spec.max_replicas  # untouched by the patch
    assert after.spec.metrics == before.spec.metrics
    assert int(after.metadata.resource_version) > int(before.metadata.resource_version)


@pytest.mark.parametrize(("content_type", "body"), BAD_PATCHES)
def test_invalid_hpa_patch_is_422_naming_the_field(seeded, kube_client, content_type, body):
    status = expect_error(422, "Invalid", lambda: _patch_hpa(kube_client, body, content_type))
    assert "spec.minReplicas" in status["message"]
    assert status["details"]["causes"][0]["field"] == "spec.minReplicas"
    hpa = k8s.AutoscalingV2Api(kube_client).read_namespaced_horizontal_pod_autoscaler("web", NS)
    assert hpa.spec.min_replicas == 2  # a rejected patch changes nothing


@pytest.mark.parametrize(("body", "field"), [
    pytest.param({"spec": {"minReplicas": 0}}, "spec.minReplicas", id="min-below-1"),
    pytest.param({"spec": {"minReplicas": 11}}, "spec.maxReplicas", id="min-above-max"),
    pytest.param({"spec": {"minReplica": 3}}, "spec.minReplica", id="unknown-field"),
    pytest.param({"spec": {"scaleTargetRef": None}}, "spec", id="required-removed"),
])
def test_whole_object_validated_after_patch(seeded, kube_client, body, field):
    status = expect_error(422, "Invalid", lambda: _patch_hpa(kube_client, body, None))
    assert status["details"]["causes"][0]["field"] == field


def test_stale_update_conflicts(seeded, kube_admin_client):
    api = k8s.AutoscalingV2Api(kube_admin_client)
    old = api.read_namespaced_horizontal_pod_autoscaler("web", NS)
    _patch_hpa(kube_admin_client, {"spec": {"minReplicas": 3}}, None)
    old.spec.min_replicas = 4
    status = expect_error(409, "Conflict",
                          lambda: api.replace_namespaced_horizontal_pod_autoscaler("web", NS, old))
    assert "the object has been modified" in status["message"]
    assert api.read_namespaced_horizontal_pod_autoscaler("web", NS).spec.min_replicas == 3
    stale_patch = {"metadata": {"resourceVersion": old.metadata.resource_version},
                   "spec": {"minReplicas": 6}}
    expect_error(409, "Conflict", lambda: _patch_hpa(kube_admin_client, stale_patch, None))


def test_json_patch_test_op_guards_a_write(seeded, kube_client):
    guarded = [{"op": "test", "path": "/spec/minReplicas", "value": 3},
               {"op": "replace", "path": "/spec/minReplicas", "value": 5}]
    expect_error(422, "Invalid",
                 lambda: _patch_hpa(kube_client, guarded, "application/json-patch+json"))
    guarded[0]["value"] = 2
    assert _patch_hpa(kube_client, guarded, "application/json-patch+json").spec.min_replicas == 5


def test_main_resource_writes_keep_status(seeded, kube_admin_client):
    api = k8s.AutoscalingV2Api(kube_admin_client)
    status = {"status": {"currentReplicas": 4, "desiredReplicas": 6}}
    api.patch_namespaced_horizontal_pod_autoscaler_status("web", NS, status)
    after = _patch_hpa(kube_admin_client, {"spec": {"minReplicas": 3},
                                           "status": {"desiredReplicas": 1}}, None)
    assert after.status.desired_replicas == 6
    assert after.metadata.generation == 2


def test_generation_counts_spec_changes_only(seeded, kube_admin_client):
    api = k8s.AppsV1Api(kube_admin_client)
    labelled = api.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    rescaled = api.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    assert rescaled.metadata.generation == 2


def test_strategic_merge_of_containers_by_name(seeded, kube_admin_client):
    api = k8s.AppsV1Api(kube_admin_client)
    body = {"spec": {"template": {"spec": {"containers": [
        {"name": "server", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
        {"name": "sidecar", "image": "busybox"}]}}}}
    merged = api.patch_namespaced_deployment("web", NS, body).spec.template.spec.containers
    assert [c.name for c in merged] == ["server", "sidecar"]
    assert merged[0].image == seeding.DEFAULT_IMAGE  # kept from the stored container
    assert merged[0].resources.limits == {"nvidia.com/gpu": "1"}
    body = {"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "$patch": "delete"}]}}}}
    left = api.patch_namespaced_deployment("web", NS, body).spec.template.spec.containers
    assert [c.name for c in left] == ["server"]
    selector_change = {"spec": {"selector": {"matchLabels": {"app": "other"}},
                                "template": {"metadata": {"labels": {"app": "other"}}}}}
    expect_error(422, "Invalid", lambda: api.patch_namespaced_deployment("web", NS,
                                                                         selector_change))


# ---------------------------------------------------------------- create, get, delete
def test_not_found_and_already_exists(seeded, kube_client, kube_admin_client):
    autoscaling = k8s.AutoscalingV2Api(kube_client)
    status = expect_error(404, "NotFound",
                          lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler("no", NS))
    assert status["details"]["name"] == "no"
    expect_error(404, "NotFound", lambda: autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "no", NS, {"spec": {"minReplicas": 2}}))
    expect_error(404, "NotFound",
                 lambda: k8s.AppsV1Api(kube_admin_client).delete_namespaced_deployment("no", NS))
    body = seeding.hpa("web", NS, "web", 1, 3)
    expect_error(409, "AlreadyExists", lambda: k8s.AutoscalingV2Api(kube_admin_client)
                 .create_namespaced_horizontal_pod_autoscaler(NS, body))


def test_create_sets_server_fields_and_validates(kube_server, kube_admin_client):
    core = k8s.CoreV1Api(kube_admin_client)
    made = core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert made.metadata.uid and made.metadata.creation_timestamp is not None
    assert made.metadata.generation == 1 and made.metadata.namespace == NS
    second = core.create_namespaced_config_map(NS, {"metadata": {"name": "b"}})
    assert int(second.metadata.resource_version) > int(made.metadata.resource_version)
    status = expect_error(422, "Invalid", lambda: k8s.AutoscalingV2Api(kube_admin_client)
                          .create_namespaced_horizontal_pod_autoscaler(
                              NS, {"metadata": {"name": "h"}, "spec": {  # typed: "x" fails
                                  "minReplicas": 0, "maxReplicas": 3, "scaleTargetRef": {
                                      "kind": "Deployment", "name": "web"}}}))
    assert status["details"]["causes"][0]["field"] == "spec.minReplicas"
    expect_error(422, "Invalid", lambda: core.create_namespaced_config_map(
        NS, {"metadata": {"name": "Not_A_DNS_Name"}}))
    expect_error(400, "BadRequest", lambda: core.create_namespaced_config_map(
        NS, {"metadata": {"name": "c", "namespace": "elsewhere"}}))


def test_delete_answers_and_preconditions(seeded, kube_admin_client):
    core, apps = k8s.CoreV1Api(kube_admin_client), k8s.AppsV1Api(kube_admin_client)
    pod = core.create_namespaced_pod(NS, seeding.pod("p", NS, {"app": "x"}, datetime.now(UTC),
                                                     scheduled_after_s=None, ready_after_s=None))
    assert pod.status.phase == "Pending" and not pod.status.conditions  # status is not created
    expect_error(409, "Conflict", lambda: core.delete_namespaced_pod(
        "p", NS, body={"preconditions": {"uid": "not-the-uid"}}))
    deleted = core.delete_namespaced_pod("p", NS, body={"preconditions": {
        "uid": pod.metadata.uid}})
    assert isinstance(deleted, k8s.V1Pod) and deleted.metadata.name == "p"
    gone = apps.delete_namespaced_deployment("web", NS)
    assert gone["kind"] == "Status" and gone["status"] == "Success"  # typed "object" here
    expect_error(404, "NotFound", lambda: apps.read_namespaced_deployment("web", NS))


def test_list_with_label_selectors(kube_server, kube_client):
    for name, tier in [("a", "web"), ("b", "web"), ("c", "db")]:
        seeding.seed(kube_server.store, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": OWN_NS, "labels": {"tier": tier}}})
    core = k8s.CoreV1Api(kube_client)

    def names(selector):
        return [cm.metadata.name for cm in core.list_namespaced_config_map(
            OWN_NS, label_selector=selector).items]

    assert names("tier=web") == ["a", "b"]
    assert names("tier!=web") == ["c"]
    assert names("tier in (db,cache)") == ["c"]
    assert names("") == ["a", "b", "c"]
    listing = core.list_namespaced_config_map(OWN_NS)
    assert int(listing.metadata.resource_version) == kube_server.store.resource_version


# ---------------------------------------------------------------- custom objects (KEDA)
def test_scaled_object_patches(seeded, kube_client, kube_admin_client):
    custom = k8s.CustomObjectsApi(kube_client)
    args = ("keda.sh", "v1alpha1", NS, "scaledobjects", "keda-web")
    patched = custom.patch_namespaced_custom_object(*args, {"spec": {"minReplicaCount": 4}})
    assert patched["spec"]["minReplicaCount"] == 4 and patched["spec"]["maxReplicaCount"] == 20
    expect_error(415, "UnsupportedMediaType", lambda: custom.patch_namespaced_custom_object(
        *args, {"spec": {"minReplicaCount": 5}},
        _content_type="application/strategic-merge-patch+json"))
    expect_error(422, "Invalid", lambda: custom.patch_namespaced_custom_object(
        *args, {"spec": {"minReplicaCount": 30}}))
    expect_error(422, "Invalid", lambda: custom.patch_namespaced_custom_object(
        *args, {"spec": {"minReplicaCount": "x"}}))
    admin = k8s.CustomObjectsApi(kube_admin_client)
    whole = admin.get_namespaced_custom_object(*args)
    del whole["metadata"]["resourceVersion"]
    expect_error(422, "Invalid", lambda: admin.replace_namespaced_custom_object(*args, whole))


# ---------------------------------------------------------------- RBAC
def _api(kind):
    return {"core": k8s.CoreV1Api, "apps": k8s.AppsV1Api, "hpa": k8s.AutoscalingV2Api,
            "lease": k8s.CoordinationV1Api, "custom": k8s.CustomObjectsApi,
            "authn": k8s.AuthenticationV1Api, "authz": k8s.AuthorizationV1Api}[kind]


SAR = {"spec": {"user": "alice", "resourceAttributes": {
    "group": "autoscaling.predictive.dev", "resource": "policies", "verb": "get"}}}
LEASE = {"metadata": {"name": "new"}, "spec": {"holderIdentity": "b"}}
EVENT = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Deployment", "name": "web"},
         "reason": "ScaleUp", "message": "m", "type": "Normal"}
BALLOON = seeding.pod("balloon", NS, {"app": "balloon"}, datetime(2024, 1, 1, tzinfo=UTC),
                      scheduled_after_s=None, ready_after_s=None)
KEDA = ("keda.sh", "v1alpha1", NS, "scaledobjects", "keda-web")

# (what, api, method, args, allowed?) -- straight from the RBAC specification.
RBAC_CASES = [
    ("pods get", "core", "list_namespaced_pod", (NS,), True),
    ("pods list all namespaces", "core", "list_pod_for_all_namespaces", (), True),
    ("pods create", "core", "create_namespaced_pod", (NS, BALLOON), True),
    ("pods patch", "core", "patch_namespaced_pod", ("x", NS, {}), False),
    ("events create", "core", "create_namespaced_event", (NS, EVENT), True),
    ("events list", "core", "list_namespaced_event", (NS,), False),
    ("deployments get", "apps", "read_namespaced_deployment", ("web", NS), True),
    ("deployments list", "apps", "list_namespaced_deployment", (NS,), True),
    ("deployments patch", "apps", "patch_namespaced_deployment",
     ("web", NS, {"spec": {"replicas": 1}}), False),
    ("deployments delete", "apps", "delete_namespaced_deployment", ("web", NS), False),
    ("deployments/scale get", "apps", "read_namespaced_deployment_scale", ("web", NS), True),
    ("deployments/scale patch", "apps", "patch_namespaced_deployment_scale",
     ("web", NS, {"spec": {"replicas": 3}}), True),
    ("statefulsets get", "apps", "read_namespaced_stateful_set", ("db", NS), True),
    ("statefulsets/scale patch", "apps", "patch_namespaced_stateful_set_scale",
     ("db", NS, {"spec": {"replicas": 4}}), True),
    ("statefulsets delete", "apps", "delete_namespaced_stateful_set", ("db", NS), False),
    ("hpa get", "hpa", "read_namespaced_horizontal_pod_autoscaler", ("web", NS), True),
    ("hpa patch", "hpa", "patch_namespaced_horizontal_pod_autoscaler",
     ("web", NS, {"spec": {"minReplicas": 3}}), True),
    ("hpa delete", "hpa", "delete_namespaced_horizontal_pod_autoscaler", ("web", NS), False),
    ("hpa create", "hpa", "create_namespaced_horizontal_pod_autoscaler",
     (NS, seeding.hpa("n", NS, "web", 1, 2)), False),
    ("scaledobjects patch", "custom", "patch_namespaced_custom_object",
     (*KEDA, {"spec": {"minReplicaCount": 2}}), True),
    ("scaledobjects delete", "custom", "delete_namespaced_custom_object", KEDA, False),
    ("leases get own ns", "lease", "read_namespaced_lease", ("leader", OWN_NS), True),
    ("leases create own ns", "lease", "create_namespaced_lease", (OWN_NS, LEASE), True),
    ("leases get other ns", "lease", "read_namespaced_lease", ("leader", NS), False),
    ("leases delete own ns", "lease", "delete_namespaced_lease", ("leader", OWN_NS), False),
    ("configmaps patch own ns", "core", "patch_namespaced_config_map",
     ("state", OWN_NS, {"data": {"b": "2"}}), True),
    ("configmaps get other ns", "core", "read_namespaced_config_map", ("other", NS), False),
    ("configmaps delete own ns", "core", "delete_namespaced_config_map", ("state", OWN_NS),
     False),
    ("secrets get", "core", "read_namespaced_secret", ("creds", NS), False),
    ("secrets list", "core", "list_namespaced_secret", (NS,), False),
    ("tokenreviews create", "authn", "create_token_review", ({"spec": {"token": "t"}},), True),
    ("subjectaccessreviews create", "authz", "create_subject_access_review", (SAR,), True),
]


@pytest.mark.parametrize(("api", "method", "args", "allowed"),
                         [pytest.param(*case[1:], id=case[0]) for case in RBAC_CASES])
def test_controller_rbac(seeded, kube_client, api, method, args, allowed):
    call = getattr(_api(api)(kube_client), method)
    if allowed:
        call(*args)  # succeeds: the objects are seeded, so no 404 hides a 403
    else:
        status = expect_error(403, "Forbidden", lambda: call(*args))
        assert CONTROLLER_USER in status["message"]


def test_admin_may_do_what_the_controller_may_not(seeded, kube_admin_client):
    assert k8s.CoreV1Api(kube_admin_client).read_namespaced_secret("creds", NS).metadata.uid
    k8s.AppsV1Api(kube_admin_client).delete_namespaced_deployment("web", NS)


def test_missing_or_unknown_token_is_401(seeded, make_kube_client):
    expect_error(401, "Unauthorized", lambda: k8s.CoreV1Api(make_kube_client("nope"))
                 .list_namespaced_pod(NS))


RULES_YAML = """
kind: Role
metadata: {name: r, namespace: team}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get], resourceNames: [only-this]}
- {apiGroups: [apps], resources: ["*/scale"], verbs: [patch]}
---
kind: RoleBinding
metadata: {name: b, namespace: team}
roleRef: {kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: bot}]
---
kind: ClusterRole
metadata: {name: wide}
rules: [{apiGroups: ["*"], resources: [leases], verbs: ["*"]}]
---
kind: RoleBinding
metadata: {name: c, namespace: team}
roleRef: {kind: ClusterRole, name: wide}
subjects: [{kind: Group, name: ops}]
"""


@pytest.mark.parametrize(("user", "verb", "group", "resource", "sub", "ns", "name", "allowed"), [
    pytest.param("bot", "get", "", "configmaps", "", "team", "only-this", True, id="named"),
    pytest.param("bot", "get", "", "configmaps", "", "team", "other", False, id="other-name"),
    pytest.param("bot", "list", "", "configmaps", "", "team", "", False, id="names-never-list"),
    pytest.param("bot", "get", "", "configmaps", "", "else", "only-this", False,
                 id="role-only-in-its-namespace"),
    pytest.param("bot", "patch", "apps", "deployments", "scale", "team", "w", True,
                 id="star-subresource"),
    pytest.param("bot", "patch", "apps", "deployments", "", "team", "w", False,
                 id="subresource-is-not-parent"),
    pytest.param("ops", "delete", "coordination.k8s.io", "leases", "", "team", "l", True,
                 id="clusterrole-via-rolebinding"),
    pytest.param("ops", "delete", "coordination.k8s.io", "leases", "", "else", "l", False,
                 id="rolebinding-scope"),
])
def test_rbac_matching_rules(tmp_path, user, verb, group, resource, sub, ns, name, allowed):
    path = tmp_path / "rbac.yaml"
    path.write_text(RULES_YAML)
    policy = RbacPolicy.from_manifest(path)
    who = (service_account_user("team", "bot") if user == "bot"
           else UserInfo("carol", ("ops", "system:authenticated")))
    assert policy.authorize(Attributes(who, verb, group, resource, sub, ns, name))[0] is allowed


# ---------------------------------------------------------------- reviews
def test_token_review(seeded, kube_client):
    authn = k8s.AuthenticationV1Api(kube_client)
    known = authn.create_token_review({"spec": {"token": ADMIN_TOKEN}})
    assert known.status.authenticated is True
    assert known.status.user.username == "kubernetes-admin"
    assert "system:masters" in known.status.user.groups
    seeded.add_token("alice-token", UserInfo("alice", ("devs",)))
    assert authn.create_token_review(
        {"spec": {"token": "alice-token"}}).status.user.username == "alice"
    assert authn.create_token_review({"spec": {"token": "bogus"}}).status.authenticated is False


@pytest.mark.parametrize(("user", "groups", "verb", "allowed"), [
    pytest.param("alice", [], "get", True, id="viewer-reads"),
    pytest.param("alice", [], "update", False, id="viewer-cannot-write"),
    pytest.param("bob", [], "update", True, id="editor-writes"),
    pytest.param("dave", ["editors"], "update", True, id="group-binding"),
    pytest.param("erin", [], "get", False, id="unbound"),
    pytest.param("tuple-user", [], "get", True, id="allowed-table"),
])
def test_subject_access_review(seeded, kube_client, user, groups, verb, allowed):
    seeded.policy.bind("ClusterRole", "predictive-autoscaler-viewer", user="alice")
    seeded.policy.bind("ClusterRole", "predictive-autoscaler-editor", user="bob")
    seeded.policy.bind("ClusterRole", "predictive-autoscaler-editor", group="editors")
    seeded.policy.allow([("tuple-user", "get", "autoscaling.predictive.dev", "policies")])
    review = k8s.AuthorizationV1Api(kube_client).create_subject_access_review({"spec": {
        "user": user, "groups": groups, "resourceAttributes": {
            "group": "autoscaling.predictive.dev", "resource": "policies", "verb": verb,
            "namespace": NS, "name": "web"}}})
    assert review.status.allowed is allowed


# ---------------------------------------------------------------- leases
def test_lease_cycle_with_conflicts(kube_server, make_kube_client):
    a = k8s.CoordinationV1Api(make_kube_client(CONTROLLER_TOKEN))
    b = k8s.CoordinationV1Api(make_kube_client(CONTROLLER_TOKEN))
    lease = {"metadata": {"name": "leader"},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}}
    first = a.create_namespaced_lease(OWN_NS, lease)
    expect_error(409, "AlreadyExists", lambda: b.create_namespaced_lease(OWN_NS, lease))
    seen_by_b = b.read_namespaced_lease("leader", OWN_NS)
    first.spec.renew_time = datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC)
    renewed = a.replace_namespaced_lease("leader", OWN_NS, first)  # a renews
    assert renewed.metadata.resource_version != first.metadata.resource_version
    seen_by_b.spec.holder_identity = "b"  # b tries to take over from a stale read
    expect_error(409, "Conflict", lambda: b.replace_namespaced_lease("leader", OWN_NS, seen_by_b))
    current = b.read_namespaced_lease("leader", OWN_NS)
    current.spec.holder_identity, current.spec.lease_transitions = "b", 1
    taken = b.replace_namespaced_lease("leader", OWN_NS, current)
    assert (taken.spec.holder_identity, taken.spec.lease_transitions) == ("b", 1)
    expect_error(409, "Conflict", lambda: a.replace_namespaced_lease("leader", OWN_NS, renewed))
    bad = b.read_namespaced_lease("leader", OWN_NS)
    bad.spec.lease_duration_seconds = 0
    expect_error(422, "Invalid", lambda: b.replace_namespaced_lease("leader", OWN_NS, bad))


# ---------------------------------------------------------------- pods and watch
def test_seeded_pods_carry_their_conditions(kube_server, kube_client):
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    seeding.seed_deployment_with_pods(kube_server.store, "llm", NS, 3, created_at=created,
                                      scheduled_after_s=[2, 4, None],
                                      ready_after_s=[90, 120, None], spacing_s=10)
    pods = k8s.CoreV1Api(kube_client).list_namespaced_pod(NS, label_selector="app=llm").items
    assert len(pods) == 3
    by_type = [{c.type: c for c in p.status.conditions} for p in pods]
    assert pods[1].metadata.creation_timestamp == created + timedelta(seconds=10)
    assert by_type[1]["PodScheduled"].last_transition_time == created + timedelta(seconds=14)
    assert by_type[1]["Ready"].last_transition_time == created + timedelta(seconds=130)
    assert by_type[2]["PodScheduled"].status == "False" and pods[2].status.phase == "Pending"
    deployment = k8s.AppsV1Api(kube_client).read_namespaced_deployment("llm", NS)
    assert deployment.status.ready_replicas == 2


def _pod(name, labels=None):
    return seeding.pod(name, NS, labels or {"app": "w"}, datetime(2024, 1, 1, tzinfo=UTC),
                       scheduled_after_s=None, ready_after_s=None)


def test_watch_replays_changes_after_a_resource_version(kube_server, kube_admin_client):
    core = k8s.CoreV1Api(kube_admin_client)
    core.create_namespaced_pod(NS, _pod("before"))
    since = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, _pod("p1"))
    core.patch_namespaced_pod("p1", NS, {"metadata": {"labels": {"v": "2"}}})
    core.delete_namespaced_pod("p1", NS)
    core.create_namespaced_pod("other-ns", {**_pod("elsewhere"),
                                            "metadata": {"name": "elsewhere"}})
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_pod, NS, resource_version=since, timeout_seconds=1)]
    assert events == [("ADDED", "p1"), ("MODIFIED", "p1"), ("DELETED", "p1")]


def test_watch_streams_live_and_ends_at_timeout(kube_server, kube_admin_client, kube_client):
    core = k8s.CoreV1Api(kube_admin_client)
    since = core.list_namespaced_pod(NS).metadata.resource_version
    received: list[tuple[str, str, str]] = []
    done = threading.Event()

    def watch_pods():
        for event in watch.Watch().stream(k8s.CoreV1Api(kube_client).list_namespaced_pod, NS,
                                          resource_version=since, timeout_seconds=2,
                                          label_selector="app=w"):
            received.append((event["type"], event["object"].metadata.name,
                             event["object"].metadata.resource_version))
        done.set()

    watcher = threading.Thread(target=watch_pods, daemon=True)
    watcher.start()
    while kube_server.api.active_watches == 0 and watcher.is_alive():
        done.wait(0.01)
    core.create_namespaced_pod(NS, _pod("live"))
    core.create_namespaced_pod(NS, _pod("unselected", {"app": "other"}))
    modified = core.patch_namespaced_pod("live", NS, {"metadata": {"annotations": {"a": "b"}}})
    core.patch_namespaced_pod("live", NS, {"metadata": {"labels": {"app": "gone"}}})
    assert done.wait(15), "the watch did not end at its timeoutSeconds"
    assert [(t, n) for t, n, _ in received] == [
        ("ADDED", "live"), ("MODIFIED", "live"), ("DELETED", "live")]  # left the selection
    assert received[1][2] == modified.metadata.resource_version


def test_watch_from_expired_version_is_410():
    server = KubeServer(history=2)
    server.start()
    try:
        api_client = server.admin_client()
        core = k8s.CoreV1Api(api_client)
        for i in range(4):
            core.create_namespaced_pod(NS, _pod(f"p{i}"))
        with pytest.raises(k8s.ApiException) as caught:
            list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version="1",
                                      timeout_seconds=1))
        assert caught.value.status == 410
        api_client.close()
    finally:
        server.stop()


def test_stop_ends_open_watches_and_connections():
    server = KubeServer(max_watch_s=60).start()
    api_client = server.admin_client()
    ended = threading.Event()

    def watch_forever():
        try:
            list(watch.Watch().stream(k8s.CoreV1Api(api_client).list_namespaced_pod, NS,
                                      timeout_seconds=60))
        finally:
            ended.set()

    threading.Thread(target=watch_forever, daemon=True).start()
    while server.api.active_watches == 0:
        ended.wait(0.01)
    server.stop()
    assert ended.wait(10), "stop() left a watch running"
    api_client.close()


# ---------------------------------------------------------------- patch formats, pure
@pytest.mark.parametrize(("target", "patch", "expected"), [
    # RFC 7386 appendix A test vectors
    pytest.param({"a": "b"}, {"a": "c"}, {"a": "c"}, id="replace"),
    pytest.param({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}, id="add"),
    pytest.param({"a": "b"}, {"a": None}, {}, id="delete"),
    pytest.param({"a": ["b"]}, {"a": "c"}, {"a": "c"}, id="list-replaced"),
    pytest.param({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}},
                 id="nested"),
    pytest.param({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}, id="list-of-maps"),
    pytest.param(["a", "b"], ["c", "d"], ["c", "d"], id="arrays"),
    pytest.param({"a": "foo"}, "bar", "bar", id="scalar-patch"),
    pytest.param({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}, id="null-in-new"),
])
def test_merge_patch_rfc7386_vectors(target, patch, expected):
    assert patching.merge_patch(target, patch) == expected


@pytest.mark.parametrize(("doc", "ops", "expected"), [
    # RFC 6902 appendix A
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}],
                 {"foo": "bar", "baz": "qux"}, id="A1-add-member"),
    pytest.param({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
                 {"foo": ["bar", "qux", "baz"]}, id="A2-add-element"),
    pytest.param({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}],
                 {"foo": "bar"}, id="A3-remove"),
    pytest.param({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
                 [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
                 {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
                 id="A6-move"),
    pytest.param({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
                 {"foo": ["bar", ["abc", "def"]]}, id="A16-append"),
    pytest.param({"/": 9, "~1": 10}, [{"op": "replace", "path": "/~01", "value": 1}],
                 {"/": 9, "~1": 1}, id="A14-escaping"),
    pytest.param({"a": 1}, [{"op": "copy", "from": "/a", "path": "/b"}], {"a": 1, "b": 1},
                 id="copy"),
])
def test_json_patch_rfc6902_examples(doc, ops, expected):
    assert patching.json_patch(doc, ops) == expected


@pytest.mark.parametrize("ops", [
    pytest.param([{"op": "remove", "path": "/missing"}], id="remove-missing"),
    pytest.param([{"op": "replace", "path": "/missing", "value": 1}], id="replace-missing"),
    pytest.param([{"op": "add", "path": "/a/5", "value": 1}], id="index-out-of-range"),
    pytest.param([{"op": "test", "path": "/a/0", "value": 2}], id="test-fails"),  # A9
])
def test_json_patch_errors(ops):
    with pytest.raises(patching.PatchError):
        patching.json_patch({"a": [1]}, ops)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(target=json_values, patch=json_values)
def test_merge_patch_is_idempotent(target, patch):
    once = patching.merge_patch(target, patch)
    assert patching.merge_patch(once, patch) == once


@settings(max_examples=150, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=4), json_values, max_size=4),
       key=st.text(max_size=4), value=json_values)
def test_json_patch_add_then_remove_restores(doc, key, value):
    doc = {k: v for k, v in doc.items() if k != key}
    pointer = "/" + key.replace("~", "~0").replace("/", "~1")
    added = patching.json_patch(doc, [{"op": "add", "path": pointer, "value": value}])
    assert added[key] == value
    assert patching.json_patch(added, [{"op": "remove", "path": pointer}]) == doc


def test_strategic_merge_lists_and_directives():
    target = {"metadata": {"finalizers": ["a"]},
              "conditions": [{"type": "Ready", "status": "False"}], "args": ["x", "y"],
              "selector": {"app": "a", "tier": "t"}}
    patch = {"metadata": {"finalizers": ["b", "a"]},
             "conditions": [{"type": "Ready", "status": "True"}, {"type": "New"}],
             "args": ["z"], "selector": {"$patch": "replace", "app": "b"}}
    assert patching.strategic_merge_patch(target, patch) == {
        "metadata": {"finalizers": ["a", "b"]},
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "New"}],
        "args": ["z"], "selector": {"app": "b"}}


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    pytest.param("a=1", {"a": "1"}, True, id="eq"),
    pytest.param("a==1", {"a": "2"}, False, id="double-eq"),
    pytest.param("a!=1", {}, True, id="neq-absent"),
    pytest.param("a in (1, 2),b", {"a": "2", "b": "x"}, True, id="in-and-exists"),
    pytest.param("a notin (1,2)", {"a": "1"}, False, id="notin"),
    pytest.param("!a", {"a": "1"}, False, id="not-exists"),
    pytest.param("app.kubernetes.io/name=x", {"app.kubernetes.io/name": "x"}, True,
                 id="prefixed-key"),
])
def test_label_selector_grammar(selector, labels, matches):
    assert label_selector(selector)({"metadata": {"labels": labels}}) is matches
