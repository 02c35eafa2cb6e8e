"""The thread-safe object store: resourceVersions, preconditions, and the watch history.

Not pure (a lock, a clock).  One global counter gives every write a new
`metadata.resourceVersion`, as etcd's revision does.  Every read-modify-write runs under the
store's lock, so a request either sees the current version or fails with 409 Conflict; the
last `history` changes are kept for watches, and a watch from before them gets 410 Expired.
Objects are deep-copied in and out: callers never share a dict with the store.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType
from .status import ApiError, already_exists, conflict, not_found
from .validation import validate

Clock = Callable[[], datetime]
Listener = Callable[[str, ResourceType, dict], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Change:
    """One committed write, as a watch replays it."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    namespace: str
    obj: dict
    old: dict | None


def _defaults(rtype: ResourceType, obj: dict) -> None:
    """The few server-side defaults our code reads back (real servers default many more)."""
    spec = obj.get("spec")
    if rtype.kind in ("Deployment", "StatefulSet") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
    if rtype.kind == "HorizontalPodAutoscaler" and isinstance(spec, dict):
        spec.setdefault("minReplicas", 1)
    if rtype.kind == "Pod":
        obj.setdefault("status", {}).setdefault("phase", "Pending")


def _rv_of(obj: dict) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Store:
    """All objects of all served types, keyed by (group, plural) then (namespace, name)."""

    def __init__(self, clock: Clock = utc_now, history: int = 10_000) -> None:
        self.clock = clock
        self._cond = threading.Condition()
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self._rv = 0
        self._changes: deque[Change] = deque(maxlen=history)
        self._expired_through = 0  # changes up to this rv are gone from the history
        self._listeners: list[Listener] = []
        self.closed = False

    # ------------------------------------------------------------ reads
    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict:
        with self._cond:
            obj = self._objects.get(rtype.key, {}).get((namespace, name))
            if obj is None:
                raise not_found(rtype.plural, rtype.group, name)
            return copy.deepcopy(obj)

    def list(self, rtype: ResourceType, namespace: str | None,
             match: Callable[[dict], bool] = lambda obj: True) -> tuple[list[dict], int]:
        """Matching objects in (namespace, name) order, and the list's resourceVersion."""
        with self._cond:
            items = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._objects.get(rtype.key, {}).items())
                if (namespace is None or ns == namespace) and match(obj)
            ]
            return items, self._rv

    # ------------------------------------------------------------ writes
    def create(self, rtype: ResourceType, obj: dict, *, seed: bool = False) -> dict:
        """Store a new object; `seed=True` keeps a given uid and creationTimestamp."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        _defaults(rtype, obj)
        with self._cond:
            key = (meta.get("namespace", ""), meta.get("name", ""))
            if key in self._objects.get(rtype.key, {}):
                raise already_exists(rtype.plural, rtype.group, key[1])
            meta.pop("resourceVersion", None)
            meta["uid"] = meta.get("uid") if seed and meta.get("uid") else str(uuid.uuid4())
            if not (seed and meta.get("creationTimestamp")):
                meta["creationTimestamp"] = rfc3339(self.clock())
            meta["generation"] = 1
            meta["resourceVersion"] = str(self._rv + 1)  # validated as it will be stored
            validate(rtype, obj)
            self._rv += 1
            self._objects.setdefault(rtype.key, {})[key] = obj
            self._record("ADDED", rtype, obj, None)
        self._notify("ADDED", rtype, obj)
        return copy.deepcopy(obj)

    def modify(self, rtype: ResourceType, namespace: str, name: str,
               change: Callable[[dict], dict], *, status_only: bool = False,
               require_rv: bool = False) -> dict:
        """Read-modify-write under the lock: `change` gets a copy and returns the new object.

        A resourceVersion left in the result must equal the stored one (else 409 Conflict);
        uid and creationTimestamp cannot change; with a status subresource, a write to the
        main resource keeps the stored status and `status_only` keeps everything but status.
        """
        with self._cond:
            old = self._objects.get(rtype.key, {}).get((namespace, name))
            if old is None:
                raise not_found(rtype.plural, rtype.group, name)
            new = change(copy.deepcopy(old))
            meta = new.get("metadata")
            if not isinstance(meta, dict):
                raise ApiError("BadRequest", "metadata must be an object")
            if meta.get("name") != name or meta.get("namespace", namespace) != namespace:
                raise ApiError(
                    "BadRequest",
                    f"the name/namespace of the object ({meta.get('namespace')}/"
                    f"{meta.get('name')}) does not match the request ({namespace}/{name})")
            sent_rv = _rv_of(new)
            if require_rv and not sent_rv:
                raise ApiError("Invalid", f'{rtype.kind}.{rtype.group} "{name}" is invalid: '
                               "metadata.resourceVersion: Invalid value: 0x0: must be "
                               "specified for an update", name=name, group=rtype.group,
                               kind=rtype.kind)
            if sent_rv and sent_rv != _rv_of(old):
                raise conflict(rtype.plural, rtype.group, name)
            new = self._carry_over(rtype, old, new, status_only)
            if rtype.kind in ("Deployment", "StatefulSet") and (
                    (new.get("spec") or {}).get("selector")
                    != (old.get("spec") or {}).get("selector")):
                raise ApiError("Invalid", f'{rtype.kind}.{rtype.group} "{name}" is invalid: '
                               "spec.selector: Invalid value: field is immutable",
                               name=name, group=rtype.group, kind=rtype.kind)
            new["metadata"]["resourceVersion"] = str(self._rv + 1)
            validate(rtype, new)
            self._rv += 1
            self._objects[rtype.key][(namespace, name)] = new
            self._record("MODIFIED", rtype, new, old)
        self._notify("MODIFIED", rtype, new)
        return copy.deepcopy(new)

    @staticmethod
    def _carry_over(rtype: ResourceType, old: dict, new: dict, status_only: bool) -> dict:
        meta = new["metadata"]
        for field in ("uid", "creationTimestamp", "namespace", "generation"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        if status_only:
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return merged
        if rtype.has_status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        body = {k: v for k, v in new.items() if k not in ("metadata", "status")}
        if body != {k: v for k, v in old.items() if k not in ("metadata", "status")}:
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        return new

    def delete(self, rtype: ResourceType, namespace: str, name: str,
               preconditions: dict | None = None) -> dict:
        preconditions = preconditions or {}
        with self._cond:
            old = self._objects.get(rtype.key, {}).get((namespace, name))
            if old is None:
                raise not_found(rtype.plural, rtype.group, name)
            for field in ("uid", "resourceVersion"):
                want = preconditions.get(field)
                if want and want != old["metadata"].get(field):
                    raise conflict(rtype.plural, rtype.group, name,
                                   f"Precondition failed: {field} in precondition: {want}, "
                                   f"{field} in object meta: {old['metadata'].get(field)}")
            del self._objects[rtype.key][(namespace, name)]
            self._rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record("DELETED", rtype, gone, old)
        self._notify("DELETED", rtype, gone)
        return copy.deepcopy(gone)

    # ------------------------------------------------------------ watch support
    def _record(self, kind: str, rtype: ResourceType, obj: dict, old: dict | None) -> None:
        if len(self._changes) == self._changes.maxlen:
            self._expired_through = self._changes[0].rv
        self._changes.append(Change(self._rv, kind, rtype, obj["metadata"].get("namespace", ""),
                                    copy.deepcopy(obj), copy.deepcopy(old)))
        self._cond.notify_all()

    def changes(self, rtype: ResourceType, since_rv: int, until: Callable[[], bool],
                poll_s: float = 0.2) -> Iterator[Change]:
        """Changes of one type after `since_rv`, blocking for new ones until `until()`.

        Raises 410 Expired when `since_rv` is older than the kept history.
        """
        last = since_rv
        while True:
            with self._cond:
                if last < self._expired_through:
                    raise ApiError("Expired", f"too old resource version: {last} "
                                   f"({self._expired_through + 1})")
                batch = [c for c in self._changes if c.rv > last and c.rtype.key == rtype.key]
                if not batch:
                    if until() or self.closed:
                        return
                    self._cond.wait(timeout=poll_s)
                    continue
            for change in batch:
                last = change.rv
                yield change

    def close(self) -> None:
        """Wake every watcher so it can end."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------ reactors
    def add_listener(self, listener: Listener) -> None:
        """Call `listener(type, rtype, obj)` after each committed write (outside the lock).

        For tests that play a controller (e.g. set a Deployment's status when it scales).
        """
        self._listeners.append(listener)

    def _notify(self, kind: str, rtype: ResourceType, obj: dict) -> None:
        for listener in list(self._listeners):
            listener(kind, rtype, copy.deepcopy(obj))


def ensure_dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ApiError("BadRequest", f"{what} must be a JSON object")
    return value
