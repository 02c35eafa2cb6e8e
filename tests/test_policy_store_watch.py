"""The cheap per-tick list(): the ConfigMap store's watched cache (changes by another replica,
server-dropped watches, 410 Gone, deletions, counted at the test API server over real HTTP),
the file store's stat cache, and compact history entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes.client as k8s
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.policy_store import FilePolicyStore, PolicyChange, compact_change
from autoscaler.policy_store_kube import ConfigMapPolicyStore, configmap_name
from tests.kubeserver import ADMIN_TOKEN, CONTROLLER_TOKEN, DEFAULT_RBAC_PATH, KubeServer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POLICY_NS = "predictive-autoscaler"
COLLECTION = f"/api/v1/namespaces/{POLICY_NS}/configmaps"
WAIT_S = 10.0


def change(i: int, old=None, new=None) -> PolicyChange:
    return PolicyChange(at=f"2026-11-29T20:00:{i % 60:02d}.000000Z", who="alice",
                        action="update", old=old, new=new)


def put(store, name: str, quantile: float, etag=None, i: int = 0):
    return store.put("team-a", name, policy={"quantile": quantile}, paused=False,
                     change=change(i), if_match=etag)


class Requests:
    """Every request the test API server handled (method, path, query), thread-safe."""

    def __init__(self, server: KubeServer) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        handle = server.api.handle

        def spy(method, path, query, headers, body):
            with self._lock:
                self.seen.append((method, path, dict(query)))
            return handle(method, path, query, headers, body)

        server.api.handle = spy

    def lists(self) -> int:
        with self._lock:
            return sum(1 for m, p, q in self.seen
                       if m == "GET" and p == COLLECTION and q.get("watch") != "true")

    def watches(self) -> int:
        with self._lock:
            return sum(1 for m, p, q in self.seen
                       if m == "GET" and p == COLLECTION and q.get("watch") == "true")


def eventually(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"not within {timeout_s} s: {what}")


@pytest.fixture
def server_factory() -> Iterator[Callable[..., KubeServer]]:
    started: list[KubeServer] = []
    clients: list[k8s.ApiClient] = []

    def make(**kwargs) -> KubeServer:
        started.append(KubeServer(DEFAULT_RBAC_PATH, **kwargs).start())
        return started[-1]

    make.client = lambda server, token=CONTROLLER_TOKEN: (  # type: ignore[attr-defined]
        clients.append(server.client(token)) or clients[-1])
    yield make
    for client in clients:
        client.close()
    for server in started:
        server.stop()


@pytest.fixture
def stores() -> Iterator[list[ConfigMapPolicyStore]]:
    made: list[ConfigMapPolicyStore] = []
    yield made
    for store in made:
        store.close()


def watched(server_factory, server, stores) -> ConfigMapPolicyStore:
    store = ConfigMapPolicyStore(server_factory.client(server), POLICY_NS)
    stores.append(store)
    store.list()  # LISTs once and starts the watch
    assert store.wait_watching(WAIT_S), "the watch never started"
    return store


# -- ConfigMaps: the watched cache ------------------------------------------------------------

def test_another_replicas_write_shows_without_a_list_per_call(server_factory, stores):
    server = server_factory()
    other = ConfigMapPolicyStore(server_factory.client(server), POLICY_NS, watch=False)
    first = put(other, "llm", 0.9)
    store = watched(server_factory, server, stores)
    requests = Requests(server)
    for _ in range(50):  # idle ticks: no request at all
        assert store.list()[("team-a", "llm")] == first
    assert requests.seen == []
    second = put(other, "llm", 0.8, etag=first.etag, i=1)
    put(other, "vision", 0.7)
    eventually(lambda: store.list().get(("team-a", "llm")) == second
               and ("team-a", "vision") in store.list(), "the other replica's writes")
    assert requests.lists() == 0  # the change came by the watch


def test_own_write_is_in_the_cache_at_once(server_factory, stores):
    server = server_factory()
    store = watched(server_factory, server, stores)
    written = put(store, "llm", 0.9)
    assert store.list()[("team-a", "llm")] == written  # no wait: put fed the cache
    updated = put(store, "llm", 0.8, etag=written.etag, i=1)
    assert store.list()[("team-a", "llm")] == updated
    assert store.get("team-a", "llm") == updated


def test_a_watch_the_server_ends_reconnects_from_where_it_stopped(server_factory, stores):
    server = server_factory(max_watch_s=0.3)
    other = ConfigMapPolicyStore(server_factory.client(server), POLICY_NS, watch=False)
    store = watched(server_factory, server, stores)
    requests = Requests(server)
    eventually(lambda: requests.watches() >= 3, "three more watches after the server ends them")
    written = put(other, "llm", 0.9)
    eventually(lambda: store.list().get(("team-a", "llm")) == written, "a change after drops")
    assert requests.lists() == 0  # resumed from its resourceVersion: no LIST again


def test_a_deleted_configmap_leaves_the_cache(server_factory, stores):
    server = server_factory()
    other = ConfigMapPolicyStore(server_factory.client(server), POLICY_NS, watch=False)
    put(other, "llm", 0.9)
    put(other, "vision", 0.8)
    store = watched(server_factory, server, stores)
    requests = Requests(server)
    admin = k8s.CoreV1Api(server_factory.client(server, ADMIN_TOKEN))
    admin.delete_namespaced_config_map(configmap_name("team-a", "llm"), POLICY_NS)
    eventually(lambda: set(store.list()) == {("team-a", "vision")}, "the deletion")
    assert requests.lists() == 0


def test_410_gone_lists_again_and_catches_up(server_factory, stores):
    # A tiny watch history and short watches: while our watch sees nothing (only decoys
    # change), its resourceVersion falls out of the history, so the next watch gets 410.
    server = server_factory(max_watch_s=0.3, history=3)
    admin = k8s.CoreV1Api(server_factory.client(server, ADMIN_TOKEN))
    other = ConfigMapPolicyStore(server_factory.client(server), POLICY_NS, watch=False)
    put(other, "llm", 0.9)
    store = watched(server_factory, server, stores)
    requests = Requests(server)
    for i in range(6):
        admin.create_namespaced_config_map(POLICY_NS, {"metadata": {"name": f"decoy-{i}"}})
    admin.delete_namespaced_config_map(configmap_name("team-a", "llm"), POLICY_NS)
    written = put(other, "vision", 0.7)
    for i in range(6, 12):
        admin.create_namespaced_config_map(POLICY_NS, {"metadata": {"name": f"decoy-{i}"}})
    eventually(lambda: requests.lists() >= 1, "a LIST after 410 Gone")
    eventually(lambda: store.list() == {("team-a", "vision"): written}, "the state after 410")
    assert store.wait_watching(WAIT_S)


def test_without_a_watch_list_lists_and_close_stops_the_thread(server_factory, stores):
    server = server_factory()
    store = watched(server_factory, server, stores)
    thread = store._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive()
    requests = Requests(server)
    put(store, "llm", 0.9)
    assert set(store.list()) == {("team-a", "llm")}
    assert requests.lists() == 1  # closed: every list() is a LIST again


def test_a_hand_broken_configmap_is_left_out_and_named(server_factory, stores):
    server = server_factory()
    store = watched(server_factory, server, stores)
    written = put(store, "llm", 0.9)
    admin = k8s.CoreV1Api(server_factory.client(server, ADMIN_TOKEN))
    admin.patch_namespaced_config_map(configmap_name("team-a", "llm"), POLICY_NS,
                                      {"data": {"policy.json": "{not json"}})
    eventually(lambda: ("team-a", "llm") not in store.list()
               and ("team-a", "llm") in store.unreadable, "the broken ConfigMap is left out")
    admin.patch_namespaced_config_map(configmap_name("team-a", "llm"), POLICY_NS,
                                      {"data": {"policy.json": json.dumps(written.policy)}})
    eventually(lambda: ("team-a", "llm") in store.list() and not store.unreadable,
               "the repaired ConfigMap")


def _raises(call: Callable[[], object]) -> bool:
    try:
        call()
    except Exception:  # noqa: BLE001 - any error counts here
        return True
    return False


def test_compact_history_is_stored_and_read_back(server_factory, stores):
    server = server_factory()
    store = watched(server_factory, server, stores)
    old = {"quantile": 0.9, "min_replicas": 1, "mode": "floor"}
    new = {"quantile": 0.8, "min_replicas": 1, "mode": "floor"}
    store.put("team-a", "llm", policy=new, paused=False, change=change(0, old, new),
              if_match=None)
    cm = k8s.CoreV1Api(server_factory.client(server, ADMIN_TOKEN)).read_namespaced_config_map(
        configmap_name("team-a", "llm"), POLICY_NS)
    assert json.loads(cm.data["history.json"])[0]["old"] == {"quantile": 0.9}
    assert store.get("team-a", "llm").history[0].new == {"quantile": 0.8}


# -- files: the stat cache ----------------------------------------------------------------

def test_idle_file_list_reuses_parsed_policies(tmp_path):
    store = FilePolicyStore(tmp_path)
    for i, name in enumerate(("a", "b", "c")):
        put(store, name, 0.5 + i / 10)
    before = store.list()
    again = store.list()
    assert all(again[k] is before[k] for k in before)  # nothing read again
    updated = put(store, "b", 0.99, etag=before[("team-a", "b")].etag, i=1)
    after = store.list()
    assert after[("team-a", "b")] == updated
    assert after[("team-a", "a")] is before[("team-a", "a")]
    (store.dir / store.file_name("team-a", "c")).unlink()
    assert set(store.list()) == {("team-a", "a"), ("team-a", "b")}


def test_file_replaced_with_same_size_and_mtime_is_noticed(tmp_path):
    store = FilePolicyStore(tmp_path)
    first = put(store, "llm", 0.91)
    assert store.list()[("team-a", "llm")] == first
    path = store.dir / store.file_name("team-a", "llm")
    stat = path.stat()
    other = tmp_path / "other"
    put(FilePolicyStore(other), "llm", 0.92)  # same length of content, another etag
    replacement = FilePolicyStore(other).dir / store.file_name("team-a", "llm")
    assert replacement.stat().st_size == stat.st_size
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)  # a new inode, same size and mtime
    assert store.list()[("team-a", "llm")].policy == {"quantile": 0.92}


def test_file_written_by_another_process_is_noticed(tmp_path):
    store = FilePolicyStore(tmp_path)
    first = put(store, "llm", 0.9)
    assert store.list()[("team-a", "llm")] == first
    code = textwrap.dedent("""
        import sys
        from autoscaler.policy_store import FilePolicyStore, PolicyChange
        store = FilePolicyStore(sys.argv[1])
        store.put("team-a", "llm", policy={"quantile": 0.5}, paused=True,
                  change=PolicyChange(at="2026-11-29T20:00:00.000000Z", who="bob",
                                      action="pause"), if_match=sys.argv[2])
    """)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), first.etag],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = store.list()[("team-a", "llm")]
    assert got.paused and got.policy == {"quantile": 0.5} and got.history[-1].who == "bob"


# -- compact history entries --------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "want_old", "want_new"), [
    pytest.param({"a": 1, "b": 2}, {"a": 1, "b": 3}, {"b": 2}, {"b": 3}, id="one-field"),
    pytest.param({"a": 1}, {"a": 1, "c": None}, {}, {"c": None}, id="field-added"),
    pytest.param({"a": 1, "c": 5}, {"a": 1}, {"c": 5}, {}, id="field-removed"),
    pytest.param({"a": [1]}, {"a": [1]}, {}, {}, id="no-change"),
    pytest.param(None, {"a": 1}, None, {"a": 1}, id="no-old-kept-whole"),
    pytest.param({"a": 1}, None, {"a": 1}, None, id="no-new-kept-whole"),
])
def test_compact_change_keeps_only_changed_fields(old, new, want_old, want_new):
    got = compact_change(change(0, old, new))
    assert (got.old, got.new) == (want_old, want_new)
    assert (got.at, got.who, got.action) == ("2026-11-29T20:00:00.000000Z", "alice", "update")


DOCS = st.dictionaries(st.sampled_from("abcdef"), st.one_of(st.none(), st.integers(0, 3)))


@given(DOCS, DOCS)
def test_compact_change_rebuilds_the_new_document(old, new):
    got = compact_change(change(0, old, new))
    rebuilt = {k: v for k, v in old.items() if k not in got.old} | got.new
    assert rebuilt == new
    assert set(got.old) | set(got.new) == {k for k in old.keys() | new.keys()
                                            if old.get(k, "absent") != new.get(k, "absent")}
