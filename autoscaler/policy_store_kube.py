"""The ConfigMap policy store (in-cluster): one ConfigMap per target, list() from a watched
cache. The shared rules (ETag compare-and-swap, bounded history, audit log) are in
autoscaler/policy_store.py.

Not pure (Kubernetes API, a watch thread). Rules:
- The ETag is the ConfigMap's resourceVersion and the API server does the compare-and-swap
  (409 -> PreconditionFailed). Only get, list, watch, create and update are used.
- list() answers from a cache fed by a WATCH, and only while a watch stream is open (see
  ConfigMapPolicyStore); get() and put() always read and write the API server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import weakref
from typing import Any

from autoscaler.errors import AutoscalerError, WriteConflict
from autoscaler.policy_store import (
    PolicyChange,
    PreconditionFailed,
    StoredPolicy,
    audit_change,
    bounded_history,
    check_precondition,
    check_target,
    compact_change,
    report_unreadable,
)

# The logger name from before the split, so log filters and alerts keep matching.
log = logging.getLogger("autoscaler.policy_store")

MANAGED_BY = "predictive-autoscaler"
POLICY_LABEL = "autoscaling.predictive.dev/policy"
TARGET_NAMESPACE_ANNOTATION = "autoscaling.predictive.dev/target-namespace"
TARGET_NAME_ANNOTATION = "autoscaling.predictive.dev/target-name"
CONFIGMAP_NAME_MAX = 253


def configmap_name(namespace: str, name: str) -> str:
    """"policy-<namespace>.<name>": a namespace has no dot, so the split is one-to-one. Over
    253 characters, the tail is cut and a hash of both names keeps it unique."""
    check_target(namespace, name)
    full = f"policy-{namespace}.{name}"
    if len(full) <= CONFIGMAP_NAME_MAX:
        return full
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:16]
    head = full[:CONFIGMAP_NAME_MAX - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}"


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): the cache must be LISTed again."""


_Entry = tuple[str, StoredPolicy | None | Exception]  # resourceVersion, parsed ConfigMap


class ConfigMapPolicyStore:
    """One ConfigMap per target in `namespace` (the controller's); ETag = resourceVersion.

    list() answers from a cache kept current by a WATCH: the first list() LISTs (and
    answers from that), then a daemon thread watches from the LIST's resourceVersion. A
    stream the server ends (its timeout) is opened again from the last resourceVersion seen;
    410 Gone or any error -> LIST again, after a bounded exponential backoff when failures
    repeat. Whenever the watch is not established (not started, reconnecting after an
    error, LISTing again) list() LISTs itself: a tick never answers from a cache that may
    have missed a change (so the cache answers only while a watch stream is open).
    get() and put() always read and write the API server; put() also updates the cache.
    close() stops the watch (Service.shutdown calls it). Watches ask for bookmarks, so a
    resourceVersion stays recent while only other ConfigMaps change (fewer 410s), and last
    `watch_timeout_s`: a dead connection that no error reveals is noticed within that
    plus 15 s (the read timeout), the one case where the cache may lag longer than a tick.
    """

    def __init__(self, api_client: Any, namespace: str, *, watch: bool = True,
                 watch_timeout_s: float = 60.0, backoff_max_s: float = 30.0) -> None:
        # Imported here: the file store (standalone, and its tests' subprocesses) must not pay
        # for the Kubernetes client and the forecasting stack behind kube_actuator.
        import kubernetes.client as k8s

        from autoscaler.kube_actuator import call_api

        self._core = k8s.CoreV1Api(api_client)
        self._call = call_api
        self.namespace = namespace
        self.watch = watch
        self.watch_timeout_s = watch_timeout_s
        self.backoff_max_s = backoff_max_s
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}  # ConfigMap name -> entry
        self.unreadable: dict[tuple[str, str], str] = {}  # as FilePolicyStore.unreadable
        self._rv: str | None = None  # where the next watch resumes; None: LIST first
        self._watching = False  # a watch stream is open: the cache answers list()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None  # the open watch stream, shut down by close()

    def get(self, namespace: str, name: str) -> StoredPolicy | None:
        cm_name = configmap_name(namespace, name)
        try:
            cm = self._call(f"get ConfigMap {self.namespace}/{cm_name}",
                          lambda: self._core.read_namespaced_config_map(cm_name, self.namespace))
        except AutoscalerError as e:
            if _status(e) == 404:
                return None
            raise
        return _from_configmap(cm)

    def list(self) -> dict[tuple[str, str], StoredPolicy]:
        if self.watch:
            with self._lock:
                entries = list(self._cache.values()) if self._watching else None
            if entries is not None:
                return self._collect(entries)
        cache, rv = self._list_once()
        if self.watch:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._cache, self._rv = dict(cache), rv  # the watch resumes from here
                    self._thread = threading.Thread(
                        target=_watch_loop, args=(weakref.ref(self), self._stop), daemon=True,
                        name=f"policy-watch-{self.namespace}")
                    self._thread.start()
        return self._collect(cache.values())

    def _collect(self, entries: Any) -> dict[tuple[str, str], StoredPolicy]:
        out, unreadable = _collect(entries)
        report_unreadable(self.unreadable, unreadable)
        self.unreadable = unreadable
        return out

    def wait_watching(self, timeout_s: float) -> bool:
        """True once list() answers from the watched cache (False after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._watching:
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        """Stop the watch thread (idempotent); list() LISTs again afterwards."""
        self._stop.set()
        with self._lock:
            self._watching = False
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # unblocks the thread's read at once
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    # -- the watch ----------------------------------------------------------------------

    def _list_once(self) -> tuple[dict[str, _Entry], str]:
        # Raw JSON, parsed once: the client's model deserialization of 1,000 ConfigMaps
        # would cost more than the LIST itself.
        def read() -> Any:
            response = self._core.list_namespaced_config_map(
                self.namespace, label_selector=f"{POLICY_LABEL}=true", _preload_content=False)
            try:
                return response.data  # read inside call_api: a cut body is an API error too
            finally:
                response.release_conn()

        body = json.loads(self._call(f"list policy ConfigMaps in {self.namespace}", read))
        cache = {}
        for obj in body.get("items") or ():
            meta = obj.get("metadata") or {}
            cache[meta.get("name", "")] = (str(meta.get("resourceVersion", "")), _parse(obj))
        return cache, str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _step(self, failures: int) -> tuple[int, float]:
        """One LIST-if-needed and one watch; (failures so far, seconds to wait next)."""
        try:
            if self._rv is None:
                cache, rv = self._list_once()
                with self._lock:
                    self._cache, self._rv = cache, rv
            started = time.monotonic()
            self._watch_once()
            # Ended by the server's timeout: the next watch resumes where it stopped.
            return 0, 0.1 if time.monotonic() - started < 0.1 else 0.0  # never spin
        except Exception as exc:  # noqa: BLE001 - the watch must outlive any failure
            with self._lock:
                self._watching, self._rv, self._response = False, None, None
            if self._stop.is_set():
                return failures, 0.0
            failures += 1
            delay_s = 0.0 if isinstance(exc, _Gone) and failures == 1 else min(
                self.backoff_max_s, 0.2 * 2 ** (failures - 1))
            log.warning("policy watch in %s: %s; LIST again in %.1f s", self.namespace,
                        exc, delay_s)
            return failures, delay_s

    def _watch_once(self) -> None:
        response = self._call(
            f"watch policy ConfigMaps in {self.namespace}",
            lambda: self._core.list_namespaced_config_map(
                self.namespace, label_selector=f"{POLICY_LABEL}=true", watch=True,
                resource_version=self._rv, allow_watch_bookmarks=True,
                timeout_seconds=max(1, int(self.watch_timeout_s)), _preload_content=False,
                # A silently dead connection shows as a read timeout (then a LIST again):
                # it bounds how long the cache can lag, with the server's timeout short.
                _request_timeout=(10.0, self.watch_timeout_s + 15.0)))
        with self._lock:
            self._response = response
            if self._stop.is_set():
                return
            self._watching = True
        try:
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._apply_event(json.loads(line))
                if self._stop.is_set():
                    return
        finally:
            with self._lock:
                self._response, self._watching = None, False
            with contextlib.suppress(Exception):
                response.release_conn()

    def _apply_event(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone(obj.get("message", "resourceVersion too old"))
            raise AutoscalerError(f"watch error: {obj.get('message', obj)}")
        meta = obj.get("metadata") or {}
        rv = str(meta.get("resourceVersion", ""))
        with self._lock:
            if kind in ("ADDED", "MODIFIED"):
                self._cache[meta.get("name", "")] = (rv, _parse(obj))
            elif kind == "DELETED":
                self._cache.pop(meta.get("name", ""), None)
            if rv:  # BOOKMARK too: only the resourceVersion moves
                self._rv = rv

    def _cache_put(self, cm_name: str, replaced_rv: str | None, rv: str,
                   stored: StoredPolicy) -> None:
        """Our write into the cache, unless the watch already brought something else (the
        write replaced `replaced_rv`; the watch brings the same object again later)."""
        with self._lock:
            entry = self._cache.get(cm_name)
            if (entry[0] if entry else None) == replaced_rv:
                self._cache[cm_name] = (rv, stored)

    # -- writes -------------------------------------------------------------------------

    def put(self, namespace: str, name: str, *, policy: dict[str, Any], paused: bool,
            change: PolicyChange, if_match: str | None) -> StoredPolicy:
        cm_name = configmap_name(namespace, name)
        where = f"ConfigMap {self.namespace}/{cm_name}"
        current = self.get(namespace, name)
        check_precondition(current, if_match, f"{namespace}/{name}")
        change = compact_change(change)
        history = bounded_history(current.history if current else (), change)
        body: Any = {  # plain JSON: the client sends dicts as they are
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm_name, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/managed-by": MANAGED_BY,
                                    POLICY_LABEL: "true"},
                         "annotations": {TARGET_NAMESPACE_ANNOTATION: namespace,
                                         TARGET_NAME_ANNOTATION: name}},
            "data": {"policy.json": json.dumps(policy, sort_keys=True),
                     "history.json": json.dumps([c.to_json() for c in history],
                                                separators=(",", ":")),
                     "paused": "true" if paused else "false"}}
        try:
            if current is None:
                cm = self._call(f"create {where}", lambda: self._core.create_namespaced_config_map(
                    self.namespace, body))
            else:
                # The resourceVersion read above makes the API server do the compare-and-swap.
                body["metadata"]["resourceVersion"] = _rv_of(if_match)
                cm = self._call(f"update {where}", lambda: self._core.replace_namespaced_config_map(
                    cm_name, self.namespace, body))
        except WriteConflict as e:
            raise PreconditionFailed(f"{namespace}/{name}: the policy changed since it was "
                                     f"read: {e}") from None
        except AutoscalerError as e:
            if _status(e) == 409:  # AlreadyExists: another writer created it first
                raise PreconditionFailed(f"{namespace}/{name}: a policy exists already: "
                                         f"{e}") from None
            raise
        stored = StoredPolicy(namespace, name, policy, paused,
                              f'"{cm.metadata.resource_version}"', history)
        self._cache_put(cm_name, _rv_of(current.etag) if current else None,
                        cm.metadata.resource_version, stored)
        audit_change(namespace, name, change, stored.etag)
        return stored


def _watch_loop(ref: weakref.ref[ConfigMapPolicyStore], stop: threading.Event) -> None:
    """The watch thread. It holds its store only during a step, so a store dropped without
    close() (a test, a replaced store) ends its thread too."""
    failures = 0
    while not stop.is_set():
        store = ref()
        if store is None:
            return
        failures, delay_s = store._step(failures)
        del store
        if delay_s:
            stop.wait(delay_s)


def _rv_of(etag: str | None) -> str:
    return (etag or "").strip('"')


def _status(error: Exception) -> int | None:
    cause = error.__cause__
    return getattr(cause, "status", None)


def _collect(entries: Any) -> tuple[dict[tuple[str, str], StoredPolicy],
                                    dict[tuple[str, str], str]]:
    """The readable policies, and the targets whose ConfigMap is hand-broken (with why)."""
    out, unreadable = {}, {}
    for _, stored in entries:
        if isinstance(stored, Exception):
            target = getattr(stored, "target", None)
            if target is not None:  # no target annotations: not one of ours
                unreadable[target] = str(stored)
        elif stored is not None:
            out[(stored.namespace, stored.name)] = stored
    return out, unreadable


def _parse(obj: dict[str, Any]) -> StoredPolicy | None | Exception:
    """A ConfigMap's JSON as the cache keeps it (an unreadable one: its error)."""
    meta = obj.get("metadata") or {}
    try:
        return _stored_of(meta.get("annotations") or {}, obj.get("data") or {},
                          str(meta.get("resourceVersion", "")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        error = AutoscalerError(f"ConfigMap {meta.get('name')}: unreadable policy: {exc}")
        annotations = meta.get("annotations") or {}
        namespace = annotations.get(TARGET_NAMESPACE_ANNOTATION)
        name = annotations.get(TARGET_NAME_ANNOTATION)
        error.target = (namespace, name) if namespace and name else None  # type: ignore[attr-defined]
        return error


def _from_configmap(cm: Any) -> StoredPolicy | None:
    return _stored_of(cm.metadata.annotations or {}, cm.data or {},
                      cm.metadata.resource_version)


def _stored_of(annotations: dict[str, str], data: dict[str, str], rv: str
               ) -> StoredPolicy | None:
    namespace = annotations.get(TARGET_NAMESPACE_ANNOTATION)
    name = annotations.get(TARGET_NAME_ANNOTATION)
    if not namespace or not name or "policy.json" not in data:
        return None  # not one of ours, or hand-made without the keys: ignored
    history = json.loads(data.get("history.json") or "[]")
    return StoredPolicy(
        namespace=namespace, name=name, policy=json.loads(data["policy.json"]),
        paused=data.get("paused", "false") == "true", etag=f'"{rv}"',
        history=tuple(PolicyChange.from_json(c) for c in history))
