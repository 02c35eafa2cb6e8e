"""Where policies persist, with ETag compare-and-swap: the shared types and rules, and the
directory store (standalone). The ConfigMap store is autoscaler/policy_store_kube.py.

Not pure (disk). The store is the source of truth; the Controller follows it
(autoscaler/policy_sync.py). Rules, for every store:
- A write names the ETag it read (`if_match`); a stale one raises PreconditionFailed and
  changes nothing. `if_match=None` means "create" and fails the same way when one exists.
- Every accepted write appends its PolicyChange to a bounded history (newest last, at most
  HISTORY_LIMIT) kept beside the policy, and logs it as one JSON line on the logger
  "autoscaler.policy_audit" (the complete record: the history keeps only the last ones).
  A change whose old and new are both documents is stored compactly (`compact_change`): only
  the fields that differ, with their old and new values (a field absent on one side is
  absent from that side), so 200 entries stay small.
- list() is what every tick calls, so it is cheap when nothing changed: the file store
  re-reads only files whose (inode, size, mtime_ns, ctime_ns) changed since its last list
  (one directory scan otherwise); the ConfigMap store answers from a cache fed by a WATCH.
  get() and put() always read and write the source.
- Files: one JSON file per target, written to a temp file in the same directory, fsynced, then
  renamed over the old one (a crash leaves the old file whole); writers across threads AND
  processes serialize on an fcntl.flock. The ETag hashes the content, which carries a
  revision counter, so every write changes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from autoscaler.errors import AutoscalerError

log = logging.getLogger(__name__)
audit_log = logging.getLogger("autoscaler.policy_audit")

HISTORY_LIMIT = 200
DEFAULT_STATE_DIR = Path(".autoscaler-state")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class PreconditionFailed(AutoscalerError):
    """The ETag given is not the stored one (or a create found one): re-read and retry."""


def utc_stamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC with seconds and microseconds, e.g. 2026-11-29T20:15:00.123456Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class PolicyChange:
    """One accepted change: when (RFC 3339 UTC), who, what (update|pause|resume), old/new doc."""

    at: str
    who: str
    action: str
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "who": self.who, "action": self.action, "old": self.old,
                "new": self.new}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicyChange:
        return cls(at=str(data["at"]), who=str(data["who"]), action=str(data["action"]),
                   old=data.get("old"), new=data.get("new"))


@dataclass(frozen=True)
class StoredPolicy:
    """A target's stored policy document, pause flag, ETag and recent history (newest last)."""

    namespace: str
    name: str
    policy: dict[str, Any]
    paused: bool
    etag: str | None
    history: tuple[PolicyChange, ...] = field(default_factory=tuple)


class PolicyStore(Protocol):
    def get(self, namespace: str, name: str) -> StoredPolicy | None: ...

    def list(self) -> dict[tuple[str, str], StoredPolicy]: ...

    def put(self, namespace: str, name: str, *, policy: dict[str, Any], paused: bool,
            change: PolicyChange, if_match: str | None) -> StoredPolicy: ...


def check_target(namespace: str, name: str) -> None:
    # Names reach file paths and object names: only what Kubernetes itself allows.
    if not _DNS_LABEL.match(namespace):
        raise ValueError(f"invalid namespace {namespace!r}")
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise ValueError(f"invalid name {name!r}")


def differing_fields(old: Mapping[str, Any], new: Mapping[str, Any],
                     defaults: Mapping[str, Any] | None = None) -> list[str]:
    """The fields whose value differs between two policy documents, in `new`'s order and then
    `old`'s; a field missing from a document has its value in `defaults` (None: it differs
    from any value). The one rule of "what changed" for the history, Events and the CLI."""
    missing = object()
    fallback = defaults or {}
    keys = [*new, *(k for k in old if k not in new)]
    return [k for k in keys
            if old.get(k, fallback.get(k, missing)) != new.get(k, fallback.get(k, missing))]


def compact_change(change: PolicyChange) -> PolicyChange:
    """The change with only the fields that differ in `old` and `new` (when both are
    documents); anything else unchanged."""
    old, new = change.old, change.new
    if not isinstance(old, dict) or not isinstance(new, dict):
        return change
    keys = differing_fields(old, new)
    return PolicyChange(at=change.at, who=change.who, action=change.action,
                        old={k: old[k] for k in keys if k in old},
                        new={k: new[k] for k in keys if k in new})


def bounded_history(history: tuple[PolicyChange, ...], change: PolicyChange
                    ) -> tuple[PolicyChange, ...]:
    """The history with `change` appended, only the last HISTORY_LIMIT kept."""
    return (*history, change)[-HISTORY_LIMIT:]


def audit_change(namespace: str, name: str, change: PolicyChange, etag: str | None) -> None:
    """One accepted change as one JSON line on the audit logger."""
    audit_log.info(json.dumps({"event": "policy_change", "namespace": namespace,
                               "name": name, **change.to_json(), "etag": etag},
                              sort_keys=True, separators=(",", ":")))



def check_precondition(current: StoredPolicy | None, if_match: str | None, what: str) -> None:
    """PreconditionFailed unless `if_match` is `current`'s ETag (None: there must be none)."""
    if if_match is None and current is not None:
        raise PreconditionFailed(f"{what}: a policy exists already; send its ETag in If-Match")
    if if_match is not None and (current is None or current.etag != if_match):
        raise PreconditionFailed(f"{what}: the policy changed since it was read (ETag "
                                 f"{current.etag if current else 'none'}, If-Match {if_match})")



def report_unreadable(before: dict[tuple[str, str], str],
                       now: dict[tuple[str, str], str]) -> None:
    """Log each unreadable policy once per new problem (every tick lists the store)."""
    for (namespace, name), why in now.items():
        if before.get((namespace, name)) != why:
            log.error("%s/%s: the stored policy cannot be read, the target keeps running what "
                      "it ran: %s", namespace, name, why)



# -- files --------------------------------------------------------------------------------

class FilePolicyStore:
    """One JSON file per target under state_dir/policies/ (see the module docstring)."""

    def __init__(self, state_dir: Path | str) -> None:
        self.dir = Path(state_dir) / "policies"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.dir / ".lock"
        self._thread_lock = threading.Lock()  # flock is per open file, not per thread
        # file name -> ((inode, size, mtime_ns, ctime_ns), parsed policy) of the last list
        self._cache: dict[str, tuple[tuple[int, int, int, int], StoredPolicy]] = {}
        self._cache_lock = threading.Lock()
        # targets whose stored policy cannot be read (left out of list(): PolicySync keeps
        # what they run; the others are unaffected)
        self.unreadable: dict[tuple[str, str], str] = {}

    @staticmethod
    def file_name(namespace: str, name: str) -> str:
        # "_" appears in neither a namespace nor a name, so the mapping is one-to-one.
        check_target(namespace, name)
        return f"{namespace}_{name}.json"

    def get(self, namespace: str, name: str) -> StoredPolicy | None:
        return self._read(self.dir / self.file_name(namespace, name))

    def list(self) -> dict[tuple[str, str], StoredPolicy]:
        """Every stored policy; only files changed since the last list are read again."""
        with self._cache_lock:
            seen: dict[str, tuple[tuple[int, int, int, int], StoredPolicy]] = {}
            unreadable: dict[tuple[str, str], str] = {}
            for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
                if entry.name.startswith(".") or not entry.name.endswith(".json"):
                    continue  # temp files and the lock start with "."
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed since the scan
                # A writer renames a new file over the old one: a new inode, so a change
                # shows even when size and mtime (coarse on some filesystems) look the same.
                key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                cached = self._cache.get(entry.name)
                if cached is not None and cached[0] == key:
                    seen[entry.name] = cached
                    continue
                try:
                    stored = self._read(Path(entry.path))
                except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
                    target = tuple(entry.name[:-len(".json")].split("_", 1))
                    if len(target) == 2:
                        unreadable[target] = f"{entry.name}: {type(exc).__name__}: {exc}"
                    continue
                if stored is not None:
                    seen[entry.name] = (key, stored)
            self._cache = seen  # files gone since the last list drop out
            report_unreadable(self.unreadable, unreadable)
            self.unreadable = unreadable
        return {(s.namespace, s.name): s for _, s in seen.values()}

    def put(self, namespace: str, name: str, *, policy: dict[str, Any], paused: bool,
            change: PolicyChange, if_match: str | None) -> StoredPolicy:
        path = self.dir / self.file_name(namespace, name)
        with self._locked():
            current = self._read(path)
            check_precondition(current, if_match, f"{namespace}/{name}")
            revision = (self._revision(path) if current is not None else 0) + 1
            change = compact_change(change)
            history = bounded_history(current.history if current else (), change)
            content = _encode({"namespace": namespace, "name": name, "revision": revision,
                               "policy": policy, "paused": paused,
                               "history": [c.to_json() for c in history]})
            self._clean_temps(path)
            _atomic_write(path, content)
        stored = StoredPolicy(namespace, name, policy, paused, _etag_of(content), history)
        audit_change(namespace, name, change, stored.etag)
        return stored

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _clean_temps(self, path: Path) -> None:
        """Temp files of this target left by a writer that crashed before its rename (we
        hold the lock, so no live writer owns one)."""
        for stray in self.dir.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stray.unlink()

    @staticmethod
    def _revision(path: Path) -> int:
        try:
            return int(json.loads(path.read_bytes()).get("revision", 0))
        except (OSError, ValueError, AttributeError):
            return 0

    @staticmethod
    def _read(path: Path) -> StoredPolicy | None:
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            return None
        data = json.loads(content)
        return StoredPolicy(
            namespace=data["namespace"], name=data["name"], policy=data["policy"],
            paused=bool(data["paused"]), etag=_etag_of(content),
            history=tuple(PolicyChange.from_json(c) for c in data.get("history", ())))


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, indent=1).encode() + b"\n"


def _etag_of(content: bytes) -> str:
    return f'"sha256:{hashlib.sha256(content).hexdigest()[:16]}"'


def _atomic_write(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)



# -- choice -------------------------------------------------------------------------------

def policy_store_for(service_settings: Any, *, standalone: bool, state_dir: Path | None,
                     api_client: Any) -> PolicyStore:
    """Standalone: files under state_dir (else settings.state_dir, else ./.autoscaler-state);
    in-cluster: ConfigMaps in settings.policy_namespace."""
    if standalone:
        return FilePolicyStore(state_dir or service_settings.state_dir or DEFAULT_STATE_DIR)
    if api_client is None:
        raise ValueError("an in-cluster policy store needs a Kubernetes API client")
    # Imported here: policy_store_kube builds on this module's types.
    from autoscaler.policy_store_kube import ConfigMapPolicyStore

    return ConfigMapPolicyStore(api_client, service_settings.policy_namespace)
