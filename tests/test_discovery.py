"""Targets discovered by annotation: parsing rules, and reconcile on the project's test API
server with a real Controller (controller's token, so the RBAC manifest applies).

Prometheus is an unused loopback port: every read fails, the policy holds at its minimum,
which is what the floor-mode actuator writes to the HPA (raised above the user's minimum when
the policy's min_replicas is higher). Expected values are written out by hand from the rules
in autoscaler/discovery.py's docstring, never read back from the code under test.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import kubernetes.client as k8s
import pytest

from autoscaler.discovery import (
    ANNOTATION_PREFIX,
    INVALID_REASON,
    Discovery,
    InvalidAnnotation,
    target_from_annotations,
)
from autoscaler.errors import ConfigError
from autoscaler.kube_actuator import USER_MIN_ANNOTATION, KubeActuator
from autoscaler.loop import ClusterReader, Controller
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy_doc import document_of
from autoscaler.policy_store import FilePolicyStore, PolicyChange
from autoscaler.policy_sync import PolicySync
from autoscaler.prometheus_source import PrometheusSource
from autoscaler.service import build_service
from autoscaler.settings import Settings, load_settings
from policies.predictive import PredictiveConfig
from tests.kubeserver.seeding import deployment, hpa, seed

P = ANNOTATION_PREFIX
ON = {P + "enabled": "true"}
NS = "team-a"
NOW_S = 1_800_000_000.0
TICK_S = 30.0


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def disc_settings(targets=(), defaults=None, top=None, **discovery) -> Settings:
    return Settings(tick_s=TICK_S, targets=list(targets), **(top or {}), discovery={
        "enabled": True, "defaults": {"preset": "vllm"} if defaults is None else defaults,
        **discovery})


# -- parsing (pure) ----------------------------------------------------------------------------

DEFAULTS = {"preset": "vllm", "lead_time_default_s": 600,
            "policy": {"capacity_rps_per_replica": 4.0, "max_replicas": 20}}


@pytest.mark.parametrize(("annotations", "kind", "expected"), [
    pytest.param({}, "Deployment",
                 {"preset": "vllm", "mode": "floor", "dry_run": False, "hpa": None,
                  "lead_time_default_s": 600.0, "profile": "small-model",
                  "policy": PredictiveConfig(capacity_rps_per_replica=4.0, max_replicas=20,
                                             tick_s=TICK_S)},
                 id="defaults-only-tick-from-loop"),
    pytest.param({"policy": '{"min_replicas": 2, "max_replicas": 8}'}, "Deployment",
                 {"policy": PredictiveConfig(capacity_rps_per_replica=4.0, min_replicas=2,
                                             max_replicas=8, tick_s=TICK_S)},
                 id="policy-json-over-defaults"),
    pytest.param({"preset": "triton", "mode": "metric", "profile": "llm-7b"}, "Deployment",
                 {"preset": "triton", "mode": "metric", "profile": "llm-7b"},
                 id="preset-mode-profile"),
    pytest.param({"hpa": "my-hpa", "dry-run": "TRUE"}, "StatefulSet",
                 {"hpa": "my-hpa", "dry_run": True, "kind": "StatefulSet"},
                 id="hpa-dry-run-statefulset"),
    pytest.param({"keda-scaled-object": "so-1", "dry-run": "false"}, "Deployment",
                 {"keda_scaled_object": "so-1", "hpa": None, "dry_run": False}, id="keda"),
    pytest.param({"request-rate-query": "sum(rate(x[1m]))"}, "Deployment",
                 {"request_rate_query": "sum(rate(x[1m]))", "preset": "vllm"},
                 id="query-overrides-preset"),
    pytest.param({"mode": "direct"}, "Deployment", {"mode": "direct"}, id="direct"),
    pytest.param({"policy": '{"tick_s": 10}'}, "Deployment",
                 {"policy": PredictiveConfig(capacity_rps_per_replica=4.0, max_replicas=20,
                                             tick_s=10.0)}, id="explicit-tick-wins"),
])
def test_valid_annotations(annotations, kind, expected) -> None:
    s = disc_settings(defaults=DEFAULTS)
    got = target_from_annotations(NS, "llm", kind, {**ON, **{P + k: v for k, v in
                                                             annotations.items()}}, s)
    assert (got.namespace, got.name, got.kind) == (NS, "llm", expected.pop("kind", kind))
    assert {k: getattr(got, k) for k in expected} == expected


@pytest.mark.parametrize(("annotations", "defaults", "field", "annotation"), [
    pytest.param({"preset": "nope"}, DEFAULTS, "preset", "preset", id="unknown-preset"),
    pytest.param({"mode": "sideways"}, DEFAULTS, "mode", "mode", id="bad-mode"),
    pytest.param({"dry-run": "yes"}, DEFAULTS, "dry_run", "dry-run", id="dry-run-not-bool"),
    pytest.param({"policy": "{min_replicas: 2"}, DEFAULTS, "policy", "policy",
                 id="policy-not-json"),
    pytest.param({"policy": "[2]"}, DEFAULTS, "policy", "policy", id="policy-not-object"),
    pytest.param({"policy": '{"min_replica": 2}'}, DEFAULTS, "policy.min_replica", "policy",
                 id="policy-unknown-field"),
    pytest.param({"policy": '{"min_replicas": "two"}'}, DEFAULTS, "policy.min_replicas",
                 "policy", id="policy-wrong-type"),
    pytest.param({"policy": '{"min_replicas": 30}'}, DEFAULTS, "policy", "policy",
                 id="policy-min-above-default-max"),
    pytest.param({"hpa": "Bad_Name"}, DEFAULTS, "hpa", "hpa", id="hpa-not-dns"),
    pytest.param({"hpa": "h", "keda-scaled-object": "k"}, DEFAULTS, "hpa", "hpa",
                 id="hpa-and-keda"),
    pytest.param({"mode": "direct", "hpa": "h"}, DEFAULTS, "mode", "mode",
                 id="direct-with-hpa"),
    pytest.param({"profile": ""}, DEFAULTS, "profile", "profile", id="empty-profile"),
    pytest.param({"min-replicas": "2"}, DEFAULTS, "min-replicas", "min-replicas",
                 id="unknown-annotation"),
    pytest.param({}, {}, "preset", None, id="no-preset-nor-query-in-defaults"),
    pytest.param({"profile": "x"}, {"preset": "vllm",
                                    "policy": {"min_replicas": 5, "max_replicas": 3}},
                 "policy", None, id="bad-defaults-policy"),
])
def test_invalid_annotations_name_the_field(annotations, defaults, field, annotation) -> None:
    s = disc_settings(defaults=defaults)
    with pytest.raises(InvalidAnnotation) as info:
        target_from_annotations(NS, "llm", "Deployment",
                                {**ON, **{P + k: v for k, v in annotations.items()}}, s)
    assert info.value.field == field
    assert info.value.annotation == (None if annotation is None else P + annotation)
    assert str(info.value).startswith(field)


def test_settings_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("AUTOSCALER_DISCOVERY__ENABLED", "true")
    monkeypatch.setenv("AUTOSCALER_DISCOVERY__INTERVAL_S", "120")
    d = load_settings(None).discovery
    assert (d.enabled, d.interval_s) == (True, 120.0)


def test_settings_defaults_and_standalone_refusal(tmp_path) -> None:
    d = Settings().discovery
    assert (d.enabled, d.interval_s, d.annotation) == (
        False, 60.0, "autoscaling.predictive.dev/enabled")
    with pytest.raises(ValueError):
        Settings(discovery={"defaults": {"namespace": "x"}})  # not a default: the workload's
    with pytest.raises(ValueError, match="defaults.preset"):
        Settings(discovery={"defaults": {"preset": "nope"}})  # every target would be invalid
    with pytest.raises(ConfigError) as info:
        build_service(disc_settings(), standalone=True, state_dir=tmp_path,
                      environ={"AUTOSCALER_API_TOKENS": "t0123456789:read"})
    assert "discovery.enabled" in str(info.value) and "\n" not in str(info.value)


# -- reconcile on the test API server ----------------------------------------------------------


class CountingClient(k8s.ApiClient):
    """The official client, counting the requests it sends (real HTTP underneath)."""

    def __init__(self, configuration) -> None:
        super().__init__(configuration)
        self.calls: list[tuple[str, str]] = []

    def call_api(self, method, url, *args, **kwargs):
        self.calls.append((method, urlsplit(url).path))
        return super().call_api(method, url, *args, **kwargs)


def workload(name: str, annotations: dict[str, str], *, kind: str = "Deployment",
             namespace: str = NS) -> dict:
    obj = deployment(name, namespace, 1, kind=kind)
    obj["metadata"]["annotations"] = dict(annotations)
    return obj


def seed_workload(store, name, annotations, *, kind="Deployment", user_min=1, namespace=NS):
    seed(store, workload(name, annotations, kind=kind, namespace=namespace))
    if user_min is not None:
        h = hpa(name, namespace, name, user_min, 10, target_kind=kind)
        h["status"] = {"currentReplicas": 1, "desiredReplicas": 1}
        seed(store, h)


def annotate(admin, name: str, annotations: dict, namespace: str = NS) -> None:
    k8s.AppsV1Api(admin).patch_namespaced_deployment(
        name, namespace, {"metadata": {"annotations": annotations}})


def hpa_min(admin, name: str, namespace: str = NS) -> tuple[int, str | None]:
    h = k8s.AutoscalingV2Api(admin).read_namespaced_horizontal_pod_autoscaler(name, namespace)
    return h.spec.min_replicas, (h.metadata.annotations or {}).get(USER_MIN_ANNOTATION)


def make_controller(s: Settings, kube, is_leader=None) -> Controller:
    source = PrometheusSource(f"http://127.0.0.1:{unused_port()}", timeout_s=2.0)
    return Controller(s.targets_config(), source, actuator=KubeActuator(kube, sleep=lambda x: None),
                      cluster=ClusterReader(kube), metrics=ControllerMetrics(),
                      is_leader=is_leader, tick_s=TICK_S, start_s=NOW_S)


def warnings_for(admin, name: str, namespace: str = NS) -> list:
    return [e for e in k8s.CoreV1Api(admin).list_namespaced_event(namespace).items
            if e.reason == INVALID_REASON and e.involved_object.name == name]


def errors(c: Controller, stage: str = "discovery") -> float:
    return c.metrics.errors.labels(stage)._value.get()


def test_annotated_workload_becomes_a_target_and_its_floor_is_written(
        kube_server, kube_client, kube_admin_client, tmp_path) -> None:
    policy = json.dumps({"min_replicas": 3, "max_replicas": 8})
    seed_workload(kube_server.store, "llm", {**ON, P + "policy": policy})
    seed_workload(kube_server.store, "other", {})  # not opted in
    seed_workload(kube_server.store, "off", {P + "enabled": "false", P + "preset": "tgi"})
    s = disc_settings()
    c = make_controller(s, kube_client)
    store = FilePolicyStore(tmp_path)
    sync = PolicySync(c, store, global_dry_run=False)
    d = Discovery(kube_client, s)

    result = d.reconcile(c, sync, NOW_S)
    key = (NS, "Deployment", "llm")
    assert result.added == (key,) and set(c.targets) == {key}
    assert c.targets[key].config.policy.min_replicas == 3
    assert hpa_min(kube_admin_client, "llm") == (1, None)  # nothing written before a tick

    c.tick(NOW_S)  # metrics down: the policy holds at its minimum, 3 > the user's 1
    assert hpa_min(kube_admin_client, "llm") == (3, "1")
    assert d.reconcile(c, sync, NOW_S + 60).added == ()  # no change, nothing re-added

    # Opted out (annotation removed): target removed, the HPA gets the user's minimum back.
    annotate(kube_admin_client, "llm", {P + "enabled": None})
    result = d.reconcile(c, sync, NOW_S + 120)
    assert result.removed == (key,) and c.targets == {}
    assert hpa_min(kube_admin_client, "llm") == (1, None)
    assert key not in sync._baseline  # the sync keeps no state for it


def test_changed_annotation_changes_the_running_config_and_stored_policy_still_applies(
        kube_server, kube_client, kube_admin_client, tmp_path) -> None:
    seed_workload(kube_server.store, "llm", {**ON, P + "policy": '{"min_replicas": 2}'})
    s = disc_settings()
    c = make_controller(s, kube_client)
    store = FilePolicyStore(tmp_path)
    sync = PolicySync(c, store, global_dry_run=False)
    d = Discovery(kube_client, s)
    key = (NS, "Deployment", "llm")
    d.reconcile(c, sync, NOW_S)
    assert c.targets[key].config.policy.min_replicas == 2

    annotate(kube_admin_client, "llm", {P + "policy": '{"min_replicas": 4}'})
    assert d.reconcile(c, sync, NOW_S + 60).updated == (key,)
    assert c.targets[key].config.policy.min_replicas == 4
    c.tick(NOW_S + 60)
    assert hpa_min(kube_admin_client, "llm") == (4, "1")

    # A policy stored through the API applies on top of the discovered baseline ...
    doc = {**document_of(c.targets[key].config), "max_replicas": 6}
    store.put(NS, "llm", policy=doc, paused=False, if_match=None,
              change=PolicyChange(at="2027-01-15T08:00:00Z", who="alice", action="update"))
    sync.sync(NOW_S + 90)
    assert c.targets[key].config.policy.max_replicas == 6
    # ... and still after the annotations change again (the stored doc wins on its fields).
    annotate(kube_admin_client, "llm", {P + "profile": "llm-7b"})
    d.reconcile(c, sync, NOW_S + 120)
    assert (c.targets[key].config.profile, c.targets[key].config.policy.max_replicas) == \
        ("llm-7b", 6)
    # Removed: the stored policy stays in the store; back again, it applies at once.
    annotate(kube_admin_client, "llm", {P + "enabled": "no"})
    d.reconcile(c, sync, NOW_S + 180)
    assert key not in c.targets and store.get(NS, "llm") is not None
    annotate(kube_admin_client, "llm", {P + "enabled": "true"})
    assert d.reconcile(c, sync, NOW_S + 240).added == (key,)
    assert c.targets[key].config.policy.max_replicas == 6


def test_configured_target_wins_and_is_never_removed(kube_server, kube_client,
                                                     kube_admin_client) -> None:
    seed_workload(kube_server.store, "llm", {**ON, P + "policy": '{"min_replicas": 5}'})
    s = disc_settings(targets=[{"namespace": NS, "name": "llm", "preset": "tgi",
                                "policy": {"min_replicas": 2}}])
    c = make_controller(s, kube_client)
    d = Discovery(kube_client, s)
    key = (NS, "Deployment", "llm")
    result = d.reconcile(c, None, NOW_S)
    assert (result.added, result.updated) == ((), ())
    assert (c.targets[key].config.preset, c.targets[key].config.policy.min_replicas) == \
        ("tgi", 2)
    annotate(kube_admin_client, "llm", {P + "enabled": None})
    assert d.reconcile(c, None, NOW_S + 60).removed == ()
    assert key in c.targets


def test_one_list_per_kind_per_scan(kube_server, kube_server_token_client) -> None:
    for i in range(3):
        seed_workload(kube_server.store, f"dep-{i}", {**ON}, namespace=f"ns-{i}")
        seed_workload(kube_server.store, f"sts-{i}", {**ON}, kind="StatefulSet",
                      namespace=f"ns-{i}")
    client = kube_server_token_client
    s = disc_settings()
    found = Discovery(client, s).scan()
    assert set(found) == {(f"ns-{i}", k, f"{p}-{i}") for i in range(3)
                          for k, p in (("Deployment", "dep"), ("StatefulSet", "sts"))}
    assert sorted(client.calls) == [("GET", "/apis/apps/v1/deployments"),
                                    ("GET", "/apis/apps/v1/statefulsets")]


@pytest.fixture
def kube_server_token_client(kube_server, kube_client):
    client = CountingClient(kube_client.configuration)  # the controller's token: RBAC applies
    yield client
    client.close()


def test_invalid_annotation_warning_event_once_and_nothing_added(
        kube_server, kube_client, kube_admin_client) -> None:
    seed_workload(kube_server.store, "bad", {**ON, P + "mode": "sideways"})
    leading = {"now": False}
    s = disc_settings()
    c = make_controller(s, kube_client, is_leader=lambda now_s: leading["now"])
    d = Discovery(kube_client, s)
    result = d.reconcile(c, None, NOW_S)
    key = (NS, "Deployment", "bad")
    assert result.invalid == (key,) and c.targets == {}
    assert d.invalid[key].error.field == "mode"
    assert errors(c) == 1
    assert warnings_for(kube_admin_client, "bad") == []  # a standby emits no Event

    leading["now"] = True
    d.reconcile(c, None, NOW_S + 60)
    d.reconcile(c, None, NOW_S + 120)
    [event] = warnings_for(kube_admin_client, "bad")  # once per change, not per scan
    assert event.type == "Warning" and "mode" in event.message
    assert (event.involved_object.kind, event.involved_object.namespace) == ("Deployment", NS)
    assert errors(c) == 1, "logged and counted once per change"

    annotate(kube_admin_client, "bad", {P + "mode": "floor", P + "hpa": "Bad_Name"})
    d.reconcile(c, None, NOW_S + 180)
    assert len(warnings_for(kube_admin_client, "bad")) == 2 and errors(c) == 2
    assert c.targets == {}
    annotate(kube_admin_client, "bad", {P + "hpa": None})
    assert d.reconcile(c, None, NOW_S + 240).added == (key,)


def test_service_tick_runs_discovery_on_its_interval(kube_server, kube_client,
                                                     kube_admin_client) -> None:
    now = {"s": NOW_S}
    s = disc_settings(interval_s=60, top={"leader_election": {"enabled": False}})
    service = build_service(s, api_client=kube_client, clock=lambda: now["s"],
                            tick_s=TICK_S)
    try:
        assert service.discovery is not None
        service.tick()  # first tick: discovery runs (nothing annotated yet)
        seed_workload(kube_server.store, "llm", {**ON, P + "policy": '{"min_replicas": 2}'})
        key = (NS, "Deployment", "llm")
        now["s"] = NOW_S + 30
        service.tick()  # within the interval: not listed again
        assert key not in service.controller.targets
        now["s"] = NOW_S + 60
        service.tick()  # interval passed: discovered, and this tick already wrote its floor
        assert key in service.controller.targets
        assert hpa_min(kube_admin_client, "llm") == (2, "1")
    finally:
        service.shutdown()


def test_service_tick_survives_a_failing_discovery(kube_server, kube_client) -> None:
    s = disc_settings(interval_s=60, top={"leader_election": {"enabled": False}})
    service = build_service(s, api_client=kube_client, clock=lambda: NOW_S, tick_s=TICK_S)
    calls: list[float] = []

    class Broken:
        def reconcile(self, controller, sync, now_s):
            raise RuntimeError("API down")

    service.discovery = Broken()
    service.tick_fn = calls.append
    try:
        service.tick()
        assert calls == [NOW_S]  # the tick went on
        assert service.controller.metrics.errors.labels("discovery")._value.get() == 1
    finally:
        service.shutdown()
