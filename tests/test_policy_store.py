"""Policy persistence: ETag compare-and-swap, atomic files, bounded history, restarts, and
concurrent writers (threads and processes) on files; the same on ConfigMaps of the project's
test API server, with the controller's own token so its RBAC applies."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import kubernetes.client as k8s
import pytest

from autoscaler.errors import ActuationError
from autoscaler.policy_doc import validate_document
from autoscaler.policy_store import (
    HISTORY_LIMIT,
    FilePolicyStore,
    PolicyChange,
    PreconditionFailed,
    StoredPolicy,
    policy_store_for,
)
from autoscaler.policy_store_kube import ConfigMapPolicyStore, configmap_name
from autoscaler.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POLICY_NS = "predictive-autoscaler"  # the controller's namespace: its Role grants configmaps
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def doc(**fields):
    return validate_document(fields)


def change(i: int = 0, who: str = "alice", action: str = "update", old=None, new=None):
    return PolicyChange(at=f"2026-11-29T20:{i // 60 % 60:02d}:{i % 60:02d}.000000Z", who=who,
                        action=action, old=old, new=new)


def put(store, *, etag, policy=None, paused=False, i=0, ns="team-a", name="llm", who="alice"):
    policy = policy if policy is not None else doc(quantile=0.9)
    return store.put(ns, name, policy=policy, paused=paused, change=change(i, who=who),
                     if_match=etag)


@pytest.fixture(params=["file", "configmap"])
def any_store(request, tmp_path):
    """Both stores must honour the same contract."""
    if request.param == "file":
        return FilePolicyStore(tmp_path)
    client = request.getfixturevalue("kube_client")
    return ConfigMapPolicyStore(client, POLICY_NS)


# -- the shared contract ------------------------------------------------------------------

def test_create_then_read_back(any_store):
    assert any_store.get("team-a", "llm") is None
    created = put(any_store, etag=None, policy=doc(quantile=0.99, min_replicas=2))
    got = any_store.get("team-a", "llm")
    assert got == created
    assert got.policy["quantile"] == 0.99 and got.policy["min_replicas"] == 2
    assert got.paused is False
    assert [c.who for c in got.history] == ["alice"]
    assert got.etag and got.etag.startswith('"') and got.etag.endswith('"')


def test_etag_changes_on_every_write_and_is_stable_across_reads(any_store):
    etags = [put(any_store, etag=None).etag]
    for i in range(1, 4):  # the SAME policy each time: the ETag must still change
        etags.append(put(any_store, etag=etags[-1], i=i).etag)
        assert any_store.get("team-a", "llm").etag == etags[-1]
        assert any_store.get("team-a", "llm").etag == etags[-1]
        assert any_store.list()[("team-a", "llm")].etag == etags[-1]
    assert len(set(etags)) == 4


def test_stale_if_match_fails_and_leaves_the_policy_unchanged(any_store):
    first = put(any_store, etag=None, policy=doc(quantile=0.9))
    second = put(any_store, etag=first.etag, policy=doc(quantile=0.8), i=1)
    with pytest.raises(PreconditionFailed):
        put(any_store, etag=first.etag, policy=doc(quantile=0.7), i=2, who="mallory")
    assert any_store.get("team-a", "llm") == second
    with pytest.raises(PreconditionFailed):  # an ETag that never existed
        put(any_store, etag='"sha256:0000000000000000"', i=3)
    assert any_store.get("team-a", "llm") == second


def test_create_fails_when_one_exists_and_update_when_none_does(any_store):
    with pytest.raises(PreconditionFailed):
        put(any_store, etag='"1"', ns="team-b")
    assert any_store.get("team-b", "llm") is None
    created = put(any_store, etag=None)
    with pytest.raises(PreconditionFailed):
        put(any_store, etag=None, policy=doc(quantile=0.6))
    assert any_store.get("team-a", "llm") == created


def test_list_returns_every_target(any_store):
    put(any_store, etag=None, ns="team-a", name="llm")
    put(any_store, etag=None, ns="team-b", name="llm", paused=True)
    put(any_store, etag=None, ns="team-a", name="llm.v2")
    listed = any_store.list()
    assert set(listed) == {("team-a", "llm"), ("team-b", "llm"), ("team-a", "llm.v2")}
    assert listed[("team-b", "llm")].paused is True
    for (ns, name), stored in listed.items():
        assert (stored.namespace, stored.name) == (ns, name)
        assert any_store.get(ns, name) == stored


def test_history_is_bounded_newest_last(any_store):
    etag = None
    total = HISTORY_LIMIT + 5
    for i in range(total):
        # tiny docs: the point is the count, not the size
        etag = any_store.put("team-a", "llm", policy={"i": i}, paused=False,
                             change=change(i, who=f"user-{i}", new={"i": i}),
                             if_match=etag).etag
    history = any_store.get("team-a", "llm").history
    assert len(history) == 200
    assert history[0].who == f"user-{total - 200}"
    assert history[-1].who == f"user-{total - 1}" and history[-1].new == {"i": total - 1}


def test_every_accepted_change_is_one_json_audit_line(any_store, caplog):
    caplog.set_level(logging.INFO, logger="autoscaler.policy_audit")
    created = put(any_store, etag=None, policy=doc(quantile=0.9))
    with pytest.raises(PreconditionFailed):
        put(any_store, etag='"stale"')
    lines = [r for r in caplog.records if r.name == "autoscaler.policy_audit"]
    assert len(lines) == 1  # the refused write is not a change
    record = json.loads(lines[0].getMessage())
    assert record["who"] == "alice" and record["action"] == "update"
    assert (record["namespace"], record["name"], record["etag"]) == ("team-a", "llm",
                                                                     created.etag)


def test_concurrent_writers_with_one_etag_exactly_one_wins(any_store, tmp_path):
    base = put(any_store, etag=None)
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()
    stores = [any_store] * n
    if isinstance(any_store, ConfigMapPolicyStore):  # separate clients: separate connections
        stores = [ConfigMapPolicyStore(any_store._core.api_client, POLICY_NS) for _ in range(n)]

    def write(i: int) -> None:
        barrier.wait()
        try:
            put(stores[i], etag=base.etag, policy=doc(min_replicas=i), i=i + 1, who=f"w{i}")
            result = f"won:{i}"
        except PreconditionFailed:
            result = "lost"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(outcomes) == n and len(winners) == 1
    i = int(winners[0].split(":")[1])
    stored = any_store.get("team-a", "llm")
    assert stored.policy["min_replicas"] == i and stored.history[-1].who == f"w{i}"
    assert len(stored.history) == 2


def test_data_survives_a_new_store_object(any_store, tmp_path):
    created = put(any_store, etag=None, policy=doc(forecaster="stl"), paused=True)
    if isinstance(any_store, FilePolicyStore):
        fresh = FilePolicyStore(tmp_path)
    else:
        fresh = ConfigMapPolicyStore(any_store._core.api_client, POLICY_NS)
    assert fresh.get("team-a", "llm") == created
    assert fresh.list() == {("team-a", "llm"): created}


# -- files ---------------------------------------------------------------------------------

def policy_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "policies").iterdir() if p.name != ".lock")


def test_file_writes_leave_no_temp_files(tmp_path):
    store = FilePolicyStore(tmp_path)
    etag = put(store, etag=None).etag
    put(store, etag=etag, i=1)
    assert policy_files(tmp_path) == ["team-a_llm.json"]


def test_a_stray_temp_file_from_a_crash_is_ignored_and_cleaned(tmp_path):
    store = FilePolicyStore(tmp_path)
    old = put(store, etag=None, policy=doc(quantile=0.9))
    # What a writer killed between write and rename leaves: a half-written temp file.
    stray = tmp_path / "policies" / ".team-a_llm.json.k3j2h1.tmp"
    stray.write_text('{"namespace": "team-a", "name": "llm", "poli')
    assert store.get("team-a", "llm") == old
    assert store.list() == {("team-a", "llm"): old}
    new = put(store, etag=old.etag, policy=doc(quantile=0.8), i=1)
    assert not stray.exists()
    assert store.get("team-a", "llm") == new


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_process_killed_before_the_rename_leaves_the_old_policy(tmp_path):
    store = FilePolicyStore(tmp_path)
    old = put(store, etag=None, policy=doc(quantile=0.9))
    code = """
        import os, signal, sys
        from autoscaler.policy_store import FilePolicyStore, PolicyChange
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die at the rename
        store = FilePolicyStore(sys.argv[1])
        store.put("team-a", "llm", policy={"quantile": 0.5}, paused=True,
                  change=PolicyChange("2026-11-29T20:00:00Z", "bob", "update"),
                  if_match=sys.argv[2])
    """
    result = run_python(code, str(tmp_path), old.etag)
    assert result.returncode == -9, result.stderr
    assert any(n.endswith(".tmp") for n in policy_files(tmp_path))  # it died mid-write
    assert store.get("team-a", "llm") == old
    # the lock died with the process: the next writer goes on
    assert put(store, etag=old.etag, policy=doc(quantile=0.8), i=1).policy["quantile"] == 0.8
    assert policy_files(tmp_path) == ["team-a_llm.json"]


def test_a_new_process_reads_back_the_same_policy_and_etag(tmp_path):
    store = FilePolicyStore(tmp_path)
    etag = put(store, etag=None).etag
    written = put(store, etag=etag, policy=doc(quantile=0.97, lead_time_s=420.0), paused=True,
                  i=1, who="bob")
    code = """
        import json, sys
        from autoscaler.policy_store import FilePolicyStore
        got = FilePolicyStore(sys.argv[1]).get("team-a", "llm")
        print(json.dumps({"policy": got.policy, "paused": got.paused, "etag": got.etag,
                          "who": [c.who for c in got.history]}))
    """
    result = run_python(code, str(tmp_path))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"policy": written.policy, "paused": True, "etag": written.etag,
                    "who": ["alice", "bob"]}


def test_two_processes_with_one_etag_exactly_one_wins(tmp_path):
    store = FilePolicyStore(tmp_path)
    base = put(store, etag=None)
    go = tmp_path / "go"
    code = """
        import os, sys, time
        from autoscaler.policy_store import FilePolicyStore, PolicyChange, PreconditionFailed
        store, go, who = FilePolicyStore(sys.argv[1]), sys.argv[2], sys.argv[4]
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.001)
        try:
            store.put("team-a", "llm", policy={"who": who}, paused=False,
                      change=PolicyChange("2026-11-29T20:00:00Z", who, "update"),
                      if_match=sys.argv[3])
            print("won")
        except PreconditionFailed:
            print("lost")
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(tmp_path),
                               str(go), base.etag, who], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("p1", "p2")]
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert sorted(outs) == ["lost", "won"]
    winner = ("p1", "p2")[outs.index("won")]
    stored = store.get("team-a", "llm")
    assert stored.policy == {"who": winner} and [c.who for c in stored.history] == [
        "alice", winner]


@pytest.mark.parametrize("ns, name", [
    pytest.param("../etc", "llm", id="traversal-namespace"),
    pytest.param("team-a", "../../x", id="traversal-name"),
    pytest.param("Team", "llm", id="uppercase"),
    pytest.param("team-a", "", id="empty-name"),
])
def test_names_that_are_not_kubernetes_names_are_refused(tmp_path, ns, name):
    store = FilePolicyStore(tmp_path)
    with pytest.raises(ValueError):
        store.get(ns, name)
    with pytest.raises(ValueError):
        put(store, etag=None, ns=ns, name=name)


# -- ConfigMaps ----------------------------------------------------------------------------

def admin_configmap(admin, name):
    return k8s.CoreV1Api(admin).read_namespaced_config_map(name, POLICY_NS)


def test_configmap_layout_and_etag_is_the_resource_version(kube_client, kube_admin_client):
    store = ConfigMapPolicyStore(kube_client, POLICY_NS)
    stored = put(store, etag=None, policy=doc(quantile=0.9), paused=True)
    cm = admin_configmap(kube_admin_client, configmap_name("team-a", "llm"))
    assert stored.etag == f'"{cm.metadata.resource_version}"'
    assert cm.metadata.labels == {"app.kubernetes.io/managed-by": "predictive-autoscaler",
                                  "autoscaling.predictive.dev/policy": "true"}
    assert set(cm.metadata.annotations.values()) >= {"team-a", "llm"}
    assert set(cm.data) == {"policy.json", "history.json", "paused"}
    assert json.loads(cm.data["policy.json"]) == stored.policy
    assert cm.data["paused"] == "true"
    assert json.loads(cm.data["history.json"])[0]["who"] == "alice"


def test_an_edit_behind_our_back_makes_the_etag_stale(kube_client, kube_admin_client):
    store = ConfigMapPolicyStore(kube_client, POLICY_NS)
    stored = put(store, etag=None)
    core = k8s.CoreV1Api(kube_admin_client)
    core.patch_namespaced_config_map(configmap_name("team-a", "llm"), POLICY_NS,
                                     {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(PreconditionFailed):
        put(store, etag=stored.etag, policy=doc(quantile=0.6), i=1)
    assert store.get("team-a", "llm").policy == stored.policy


def test_list_is_one_list_call_with_a_label_selector(kube_server, kube_client,
                                                     kube_admin_client):
    store = ConfigMapPolicyStore(kube_client, POLICY_NS)
    for i in range(3):
        put(store, etag=None, name=f"model-{i}")
    core = k8s.CoreV1Api(kube_admin_client)  # decoys: not ours
    core.create_namespaced_config_map(POLICY_NS, {"metadata": {"name": "other"},
                                                  "data": {"a": "b"}})
    seen = []
    handle = kube_server.api.handle

    def spy(method, path, query, headers, body):
        seen.append((method, path, dict(query)))
        return handle(method, path, query, headers, body)

    kube_server.api.handle = spy
    try:
        listed = store.list()
    finally:
        kube_server.api.handle = handle
    store.close()  # the first list() also starts a watch (tests/test_policy_store_watch.py)
    assert set(listed) == {("team-a", f"model-{i}") for i in range(3)}
    lists = [s for s in seen if s[2].get("watch") != "true"]
    assert len(lists) == 1
    method, path, query = lists[0]
    assert (method, path) == ("GET", f"/api/v1/namespaces/{POLICY_NS}/configmaps")
    assert query.get("labelSelector") == "autoscaling.predictive.dev/policy=true"
    for _, _, watch in [s for s in seen if s[2].get("watch") == "true"]:
        assert watch.get("labelSelector") == "autoscaling.predictive.dev/policy=true"


def test_a_name_long_enough_to_need_hashing(kube_client):
    store = ConfigMapPolicyStore(kube_client, POLICY_NS)
    ns = "n" * 63
    long_a = ("a" * 60 + ".") * 4 + "x"  # 245 characters, a valid DNS subdomain
    long_b = long_a[:-1] + "y"  # differs only past the cut
    assert len(long_a) <= 253 and DNS_SUBDOMAIN.match(long_a)
    name_a, name_b = configmap_name(ns, long_a), configmap_name(ns, long_b)
    assert name_a != name_b
    for name in (name_a, name_b):
        assert len(name) <= 253 and DNS_SUBDOMAIN.match(name)
    a = put(store, etag=None, ns=ns, name=long_a, policy=doc(quantile=0.9))
    b = put(store, etag=None, ns=ns, name=long_b, policy=doc(quantile=0.8))
    fresh = ConfigMapPolicyStore(kube_client, POLICY_NS)
    assert fresh.get(ns, long_a) == a and fresh.get(ns, long_b) == b
    assert fresh.list() == {(ns, long_a): a, (ns, long_b): b}


def test_short_names_are_readable_and_one_to_one():
    assert configmap_name("team-a", "llm") == "policy-team-a.llm"
    # "-" may appear in both parts; the dot (never in a namespace) keeps these apart
    assert configmap_name("a-b", "c") != configmap_name("a", "b-c")


def test_rbac_applies_outside_the_controllers_namespace(kube_client):
    store = ConfigMapPolicyStore(kube_client, "default")  # the Role grants nothing here
    with pytest.raises(ActuationError, match="403"):
        put(store, etag=None)


def test_policy_store_for_picks_by_mode(tmp_path, kube_client):
    settings = Settings(policy_namespace="ops")
    files = policy_store_for(settings, standalone=True, state_dir=tmp_path, api_client=None)
    assert isinstance(files, FilePolicyStore) and files.dir == tmp_path / "policies"
    cms = policy_store_for(settings, standalone=False, state_dir=None, api_client=kube_client)
    assert isinstance(cms, ConfigMapPolicyStore) and cms.namespace == "ops"
    with_dir = Settings(state_dir=tmp_path / "s")
    assert policy_store_for(with_dir, standalone=True, state_dir=None,
                            api_client=None).dir == tmp_path / "s" / "policies"


def test_stored_policy_history_round_trips_through_json():
    c = change(3, who="carol", action="pause", old={"a": 1}, new=None)
    assert PolicyChange.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert isinstance(StoredPolicy("a", "b", {}, False, None).history, tuple)
    assert os.sep not in FilePolicyStore.file_name("team-a", "llm.v2")
