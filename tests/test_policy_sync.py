"""The Controller follows the store: PolicySync on a real Controller, and the Controller's own
update_target / set_paused. Prometheus is an unused loopback port (every read fails, so the
policy holds, as in production when metrics are down); Kubernetes is the project's test API
server with the controller's token."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import kubernetes.client as k8s
import numpy as np
import pytest

from autoscaler.kube_actuator import USER_MIN_ANNOTATION, KubeActuator
from autoscaler.loop import ClusterReader, Controller
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy_doc import document_of, validate_document
from autoscaler.policy_store import FilePolicyStore, PolicyChange
from autoscaler.policy_store_kube import ConfigMapPolicyStore
from autoscaler.policy_sync import KubePolicyEvents, PolicySync, effective
from autoscaler.prometheus_source import PrometheusSource
from autoscaler.settings import Settings
from forecasting.registry import make_forecaster
from forecasting.types import Series
from tests.kubeserver.seeding import hpa, seed, seed_deployment_with_pods

NS, NAME = "team-a", "llm"
KEY = (NS, "Deployment", NAME)
TICK_S = 30.0
NOW_S = 1_800_000_000.0


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings(**policy) -> Settings:
    return Settings(tick_s=TICK_S, targets=[
        {"namespace": NS, "name": NAME, "queries": {"request_rate": "up"},
         "policy": {"forecaster": "seasonal-naive-daily", **policy}}])


def controller(s: Settings | None = None, kube=None) -> Controller:
    source = PrometheusSource(f"http://127.0.0.1:{unused_port()}", timeout_s=2.0)
    extra = {}
    if kube is not None:
        extra = {"actuator": KubeActuator(kube, sleep=lambda s: None),
                 "cluster": ClusterReader(kube)}
    return Controller((s or settings()).targets_config(), source, metrics=ControllerMetrics(),
                      tick_s=TICK_S, start_s=NOW_S, **extra)


def api_errors(c: Controller) -> float:
    return c.metrics.errors.labels("api")._value.get()


def write(store, *, policy=None, paused=False, etag=None, who="alice", action="update"):
    current = store.get(NS, NAME)
    return store.put(NS, NAME, policy=validate_document(policy or {}), paused=paused,
                     change=PolicyChange("2026-11-29T20:00:00Z", who, action),
                     if_match=current.etag if current else None)


@pytest.fixture
def store(tmp_path):
    return FilePolicyStore(tmp_path)


# -- applying stored changes --------------------------------------------------------------

def test_nothing_stored_changes_nothing(store):
    c = controller()
    before = c.targets[KEY].config
    assert PolicySync(c, store, global_dry_run=False).sync(NOW_S) == []
    assert c.targets[KEY].config is before


def test_a_stored_change_is_applied_by_the_next_sync(store):
    c = controller()
    sync = PolicySync(c, store, global_dry_run=False)
    sync.sync(NOW_S)
    state = c.targets[KEY]
    forecaster = state.forecaster
    write(store, policy={"quantile": 0.9, "min_replicas": 2, "forecaster":
                         "seasonal-naive-daily", "mode": "metric"})
    assert sync.sync(NOW_S + TICK_S) == [KEY]
    cfg = state.config
    assert cfg.policy.quantile == 0.9 and cfg.policy.min_replicas == 2 and cfg.mode == "metric"
    assert cfg.policy.tick_s == TICK_S  # the loop's tick survives the document
    assert state.policy.config == cfg.policy  # the running rule, not only the config
    assert state.actuator_target.mode == "metric"
    assert state.forecaster is forecaster  # same forecaster name: the model is kept
    # a second sync has nothing to do
    policy = state.policy
    assert sync.sync(NOW_S + 2 * TICK_S) == []
    assert state.policy is policy


def test_a_forecaster_change_makes_a_new_model(store):
    c = controller()
    sync = PolicySync(c, store, global_dry_run=False)
    state = c.targets[KEY]
    old = state.forecaster
    state.next_refit_s = NOW_S + 3600
    write(store, policy={"forecaster": "last"})
    assert sync.sync(NOW_S) == [KEY]
    assert state.config.policy.forecaster == "last"
    assert state.forecaster is not old
    assert state.next_refit_s == NOW_S  # fitted at once


def test_pause_is_applied_and_a_removed_policy_falls_back_to_the_baseline(store):
    c = controller(settings(min_replicas=2))
    baseline = c.targets[KEY].config
    sync = PolicySync(c, store, global_dry_run=False)
    write(store, policy={"min_replicas": 4}, paused=True)
    assert sync.sync(NOW_S) == [KEY]
    assert c.targets[KEY].paused is True and c.targets[KEY].config.policy.min_replicas == 4
    write(store, policy={"min_replicas": 4}, paused=False, action="resume")
    assert sync.sync(NOW_S) == [KEY] and c.targets[KEY].paused is False
    (store.dir / FilePolicyStore.file_name(NS, NAME)).unlink()
    assert sync.sync(NOW_S) == [KEY]
    assert c.targets[KEY].config == baseline


def test_global_dry_run_wins_over_the_document(store):
    c = controller()
    sync = PolicySync(c, store, global_dry_run=True)
    write(store, policy={"dry_run": False, "quantile": 0.9})
    sync.sync(NOW_S)
    assert c.targets[KEY].config.dry_run is True
    assert c.targets[KEY].actuator_target.dry_run is True


# -- failures keep the running policy -----------------------------------------------------

def test_a_store_failure_keeps_the_running_policy(store):
    c = controller()
    sync = PolicySync(c, store, global_dry_run=False)
    write(store, policy={"quantile": 0.9})
    sync.sync(NOW_S)
    running = c.targets[KEY].config
    errors = api_errors(c)
    (store.dir / FilePolicyStore.file_name(NS, NAME)).write_text('{"trunc')  # unreadable
    errors = api_errors(c)
    assert sync.sync(NOW_S + TICK_S) == []
    assert c.targets[KEY].config is running  # not applied: the next sync tries again
    assert api_errors(c) == errors + 1
    assert api_errors(c) == errors + 1


def test_one_unreadable_policy_file_leaves_the_other_targets_on_theirs(tmp_path):
    """A hand-broken file of one target must not make every target drop its stored policy."""
    store = FilePolicyStore(tmp_path)
    two = Settings(tick_s=TICK_S, targets=[
        {"namespace": NS, "name": name, "queries": {"request_rate": "up"},
         "policy": {"forecaster": "seasonal-naive-daily"}} for name in (NAME, "other")])
    c = controller(two)
    sync = PolicySync(c, store, global_dry_run=False)
    write(store, policy={"quantile": 0.9})
    store.put(NS, "other", policy=validate_document({"quantile": 0.8}), paused=True,
              change=PolicyChange("2026-11-29T20:00:00Z", "bob", "update"), if_match=None)
    sync.sync(NOW_S)
    other_key = (NS, "Deployment", "other")
    assert c.targets[other_key].config.policy.quantile == 0.8 and c.targets[other_key].paused
    running = c.targets[KEY].config
    (store.dir / FilePolicyStore.file_name(NS, NAME)).write_text('{"trunc')
    errors = api_errors(c)
    sync.sync(NOW_S + TICK_S)
    assert c.targets[KEY].config is running  # the broken one keeps what it ran
    assert c.targets[other_key].config.policy.quantile == 0.8  # the others keep theirs
    assert c.targets[other_key].paused
    assert (NS, NAME) in store.unreadable and api_errors(c) == errors + 1


def test_an_unreachable_configmap_store_keeps_the_running_policy(kube_server, kube_client):
    c = controller()
    store = ConfigMapPolicyStore(kube_client, "predictive-autoscaler")
    sync = PolicySync(c, store, global_dry_run=False)
    write(store, policy={"quantile": 0.8})
    assert sync.sync(NOW_S) == [KEY]
    kube_server.stop()
    assert sync.sync(NOW_S + TICK_S) == []
    assert c.targets[KEY].config.policy.quantile == 0.8
    assert api_errors(c) == 1


def test_an_invalid_stored_document_is_not_applied(store):
    c = controller()
    sync = PolicySync(c, store, global_dry_run=False)
    write(store, policy={"quantile": 0.9})
    sync.sync(NOW_S)
    current = store.get(NS, NAME)
    # hand-edited: a percent where a fraction belongs
    store.put(NS, NAME, policy={**current.policy, "quantile": 95}, paused=False,
              change=PolicyChange("2026-11-29T20:01:00Z", "vi", "update"),
              if_match=current.etag)
    assert sync.sync(NOW_S + TICK_S) == []
    assert c.targets[KEY].config.policy.quantile == 0.9
    assert api_errors(c) == 1


def test_a_tick_still_runs_after_a_failed_sync(store):
    c = controller()
    sync = PolicySync(c, store, global_dry_run=False)
    (store.dir / "team-a_llm.json").write_text("not json")
    assert sync.sync(NOW_S) == []
    records = c.tick(NOW_S)
    assert records[KEY].reason.startswith("hold")


# -- effective ----------------------------------------------------------------------------

def test_effective_is_the_running_defaults_until_something_is_stored(store):
    c = controller(settings(min_replicas=3))
    got = effective(c, store, KEY)
    assert got.etag is None and got.paused is False and got.history == ()
    assert got.policy == document_of(c.targets[KEY].config)
    assert got.policy["min_replicas"] == 3
    stored = write(store, policy={"quantile": 0.9}, paused=True)
    assert effective(c, store, KEY) == stored


# -- pause stops writes (real actuator, test API server) ------------------------------------

@pytest.fixture
def cluster(kube_server, kube_client, kube_admin_client):
    """A Deployment with an HPA whose user minimum is 1."""
    seed_deployment_with_pods(kube_server.store, NAME, NS, 1, created_at=datetime.now(UTC),
                              ready_after_s=60.0)
    seed(kube_server.store, hpa(NAME, NS, NAME, 1, 10))

    def hpa_min() -> tuple[int, str | None]:
        h = k8s.AutoscalingV2Api(kube_admin_client).read_namespaced_horizontal_pod_autoscaler(
            NAME, NS)
        return h.spec.min_replicas, (h.metadata.annotations or {}).get(USER_MIN_ANNOTATION)

    return kube_client, hpa_min


def test_a_pause_stops_writes_and_a_resume_restarts_them(store, cluster):
    kube, hpa_min = cluster
    c = controller(kube=kube)
    sync = PolicySync(c, store, global_dry_run=False)
    # Metrics are down, so the rule holds at its minimum: 3 is what it would write.
    write(store, policy={"min_replicas": 3}, paused=True, action="pause")
    sync.sync(NOW_S)
    record = c.tick(NOW_S)[KEY]
    assert record.paused is True and record.acted is False and record.written is False
    assert record.floor == 3  # still decided and logged
    assert hpa_min() == (1, None)
    write(store, policy={"min_replicas": 3}, paused=False, action="resume")
    sync.sync(NOW_S + TICK_S)
    record = c.tick(NOW_S + TICK_S)[KEY]
    assert record.paused is False and record.written is True
    assert hpa_min() == (3, "1")


def test_policy_events_are_emitted_once_per_new_change_by_the_leader(store, cluster,
                                                                     kube_admin_client):
    kube, _ = cluster
    c = controller(kube=kube)
    write(store, policy={"quantile": 0.9}, who="before-start")  # not re-announced
    sync = PolicySync(c, store, global_dry_run=False, events=KubePolicyEvents(kube))
    sync.sync(NOW_S)
    write(store, policy={"quantile": 0.8}, who="alice")
    write(store, policy={"quantile": 0.8}, paused=True, who="bob", action="pause")
    sync.sync(NOW_S + TICK_S)
    sync.sync(NOW_S + 2 * TICK_S)  # nothing new: no more Events
    events = k8s.CoreV1Api(kube_admin_client).list_namespaced_event(NS).items
    mine = sorted((e.reason, e.message.split(" at ")[0]) for e in events
                  if e.reason.startswith("Policy"))
    assert mine == [("PolicyPaused", "policy pause by bob"),
                    ("PolicyUpdated", "policy update by alice")]
    assert all(e.involved_object.name == NAME for e in events if e.reason.startswith("Policy"))


def test_a_standby_emits_no_policy_events(store, cluster, kube_admin_client):
    kube, _ = cluster
    c = controller(kube=kube)
    c.is_leader = lambda now_s: False
    sync = PolicySync(c, store, global_dry_run=False, events=KubePolicyEvents(kube))
    sync.sync(NOW_S)
    write(store, policy={"quantile": 0.8})
    assert sync.sync(NOW_S + TICK_S) == [KEY]  # a standby still applies (its reads are right)
    events = k8s.CoreV1Api(kube_admin_client).list_namespaced_event(NS).items
    assert not [e for e in events if e.reason.startswith("Policy")]


# -- Controller.update_target / set_paused directly ---------------------------------------

def test_update_target_with_the_same_config_is_a_no_op():
    c = controller()
    state = c.targets[KEY]
    policy, forecaster = state.policy, state.forecaster
    assert c.update_target(state.config, NOW_S) is state
    assert state.policy is policy and state.forecaster is forecaster


def test_update_target_keeps_what_the_target_learned():
    c = controller()
    state = c.targets[KEY]
    state.history = Series(np.full(120, 50.0), 60.0, NOW_S - 7200)
    lead, policy_state = state.lead_time, state.policy_state
    new = c.update_target(_with_policy(state.config, quantile=0.8), NOW_S)
    assert new.lead_time is lead and new.policy_state is policy_state
    assert new.history.values.size == 120


def test_update_target_with_a_new_forecaster_feeds_it_the_cached_history():
    c = controller()
    state = c.targets[KEY]
    state.history = Series(np.full(120, 50.0), 60.0, NOW_S - 7200)
    c.update_target(_with_policy(state.config, forecaster="last"), NOW_S)
    assert state.fed_until_s == NOW_S  # 120 one-minute samples ending now
    assert KEY in c.refit_due(NOW_S)
    assert c.refit(KEY, NOW_S) is True
    assert state.forecaster.metadata["model"] == make_forecaster("last").name


def test_a_mode_change_hands_the_hpa_back_to_the_users_minimum(store, cluster):
    kube, hpa_min = cluster
    c = controller(settings(min_replicas=3), kube=kube)
    c.tick(NOW_S)
    assert hpa_min() == (3, "1")
    c.update_target(_with(c.targets[KEY].config, mode="metric"), NOW_S + TICK_S)
    assert hpa_min() == (1, None)
    assert c.targets[KEY].actuator_target.mode == "metric"


def test_set_paused_is_decided_and_logged_but_never_written(cluster):
    kube, hpa_min = cluster
    c = controller(settings(min_replicas=3), kube=kube)
    c.set_paused(KEY, True)
    assert c.targets[KEY].paused is True
    record = c.tick(NOW_S)[KEY]
    assert (record.paused, record.acted, record.floor) == (True, False, 3)
    assert hpa_min() == (1, None)
    c.set_paused(KEY, False)
    assert c.tick(NOW_S + TICK_S)[KEY].written is True
    assert hpa_min() == (3, "1")


def test_a_mode_change_while_paused_is_handed_back_on_resume(cluster):
    kube, hpa_min = cluster
    c = controller(settings(min_replicas=3), kube=kube)
    c.tick(NOW_S)
    assert hpa_min() == (3, "1")
    c.set_paused(KEY, True)
    c.update_target(_with(c.targets[KEY].config, mode="metric"), NOW_S + TICK_S)
    c.set_paused(KEY, False)
    c.tick(NOW_S + 2 * TICK_S)
    assert hpa_min() == (1, None)


def _with(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def _with_policy(config, **changes):
    import dataclasses

    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, **changes))


def test_a_failed_hand_back_never_escapes_the_sync_and_stays_owed(store, kube_server, cluster):
    kube, _ = cluster
    c = controller(settings(min_replicas=3), kube=kube)
    c.tick(NOW_S)
    floor_target = c.targets[KEY].actuator_target
    sync = PolicySync(c, store, global_dry_run=False)
    write(store, policy={"min_replicas": 3, "mode": "metric",
                         "forecaster": "seasonal-naive-daily"})
    kube_server.stop()  # the hand-back of the floor mode cannot be written
    errors = api_errors(c)
    assert sync.sync(NOW_S + TICK_S) == [KEY]  # the new policy runs at once
    assert c.targets[KEY].config.mode == "metric"
    assert api_errors(c) == errors + 1  # the failed write is counted...
    assert c.targets[KEY].pending_restore == floor_target  # ...and retried on later ticks
