"""The Controller follows the policy store: at the start of every tick, apply what changed.

Not pure (reads the store, drives the Controller). Rules:
- One `store.list()` per sync. For each controller target, the wanted config is its baseline
  (the config it started with, from the settings) with the stored document applied, and the
  wanted pause flag the stored one; a target without a stored policy runs its baseline,
  unpaused. Only what differs is applied (`update_target`, `set_paused`), so a sync with no
  change costs one list and nothing else (a document is validated again only when its ETag
  or the target's baseline changed).
- Leader and standbys sync alike, so any replica's reads show what runs.
- Failure keeps what runs: a store error, or a stored document that no longer validates (hand
  edited, a forecaster since removed), is logged and counted as errors{kind="api"}; the target
  keeps its running policy and the tick goes on.
- Events: with `events`, the leader reports each change newly seen in a target's history
  (`events(config, change)`; see KubePolicyEvents), so every accepted change becomes an Event
  once; history present at the first sync is not re-announced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from autoscaler.errors import AutoscalerError
from autoscaler.kube_actuator import call_api, event_body
from autoscaler.loop import Controller
from autoscaler.policy_doc import PolicyInvalid, apply_document, document_of
from autoscaler.policy_store import PolicyChange, PolicyStore, StoredPolicy, differing_fields
from autoscaler.settings import TargetConfig
from autoscaler.target_state import TargetKey

log = logging.getLogger(__name__)

PolicyEvents = Callable[[TargetConfig, PolicyChange], None]


class PolicySync:
    """Applies stored policies to a Controller (see the module docstring)."""

    def __init__(self, controller: Controller, store: PolicyStore, *, global_dry_run: bool,
                 events: PolicyEvents | None = None) -> None:
        self.controller = controller
        self.store = store
        self.global_dry_run = global_dry_run
        self.events = events
        self._baseline: dict[TargetKey, TargetConfig] = {}
        self._seen: dict[TargetKey, PolicyChange | None] = {}  # newest change announced
        # key -> (stored ETag, baseline, config it gives): an unchanged policy is not
        # validated again every tick (1,000 targets x 15 s)
        self._wanted: dict[TargetKey, tuple[str | None, TargetConfig, TargetConfig]] = {}

    def baseline(self, key: TargetKey) -> TargetConfig:
        """The config the target started with (what runs when nothing is stored)."""
        if key not in self._baseline:
            self._baseline[key] = self.controller.targets[key].config
        return self._baseline[key]

    def set_baseline(self, key: TargetKey, config: TargetConfig) -> None:
        """What the target runs when nothing is stored, from now on (a discovered target's
        annotations changed, or it was just added); the next sync applies the stored
        policy on top of it."""
        self._baseline[key] = config

    def forget(self, key: TargetKey) -> None:
        """Drop a removed target's state; its stored policy stays in the store (and applies
        again if the target comes back)."""
        self._baseline.pop(key, None)
        self._seen.pop(key, None)
        self._wanted.pop(key, None)

    def sync(self, now_s: float) -> list[TargetKey]:
        """Apply stored changes; returns the targets whose config or pause flag changed."""
        try:
            stored = self.store.list()
        except Exception as exc:  # noqa: BLE001 - a store failure must never stop a tick
            log.warning("policy store unavailable, keeping the running policies: %s", exc)
            self.controller.metrics.errors.labels("api").inc()
            return []
        changed = []
        unreadable = getattr(self.store, "unreadable", {})
        for key in list(self.controller.targets):
            namespace, _, name = key
            if (namespace, name) in unreadable:  # the store logged why; keep what runs
                self.controller.metrics.errors.labels("api").inc()
                continue
            try:
                if self._apply(key, stored.get((namespace, name)), now_s):
                    changed.append(key)
            except (PolicyInvalid, ValueError) as exc:
                log.warning("%s/%s: stored policy not applied, keeping the running one: %s",
                            namespace, name, exc)
                self.controller.metrics.errors.labels("api").inc()
            except Exception as exc:  # noqa: BLE001 - e.g. the hand-back of an old mode failed
                log.warning("%s/%s: policy change not applied yet, retried next tick: %s",
                            namespace, name, exc)
                self.controller.metrics.errors.labels("api").inc()
        return changed

    def _apply(self, key: TargetKey, stored: StoredPolicy | None, now_s: float) -> bool:
        base = self.baseline(key)
        memo = self._wanted.get(key)
        if stored is None:
            wanted = base
        elif (memo is not None and stored.etag is not None and memo[0] == stored.etag
              and memo[1] is base):
            wanted = memo[2]
        else:
            wanted = apply_document(base, stored.policy, global_dry_run=self.global_dry_run)
            self._wanted[key] = (stored.etag, base, wanted)
        paused = stored.paused if stored is not None else False
        state = self.controller.targets[key]
        changed = False
        if wanted != state.config:
            self.controller.update_target(wanted, now_s)
            changed = True
        if paused != state.paused:
            self.controller.set_paused(key, paused)
            changed = True
        if changed:
            log.info("%s/%s: applied the stored policy (paused=%s)", key[0], key[2], paused)
        self._announce(key, wanted, stored, now_s)
        return changed

    def _announce(self, key: TargetKey, config: TargetConfig, stored: StoredPolicy | None,
                  now_s: float) -> None:
        history = stored.history if stored is not None else ()
        newest = history[-1] if history else None
        first = key not in self._seen
        last_seen = self._seen.get(key)
        self._seen[key] = newest
        if first or self.events is None or newest == last_seen:
            return
        if not self.controller.is_leader(now_s):
            return
        fresh = history
        if last_seen is not None and last_seen in history:
            idx = len(history) - 1 - history[::-1].index(last_seen)
            fresh = history[idx + 1:]
        for change in fresh:
            try:
                self.events(config, change)
            except Exception as exc:  # noqa: BLE001 - an Event is a report, never fatal
                log.warning("%s/%s: policy event not emitted: %s", key[0], key[2], exc)


def effective(controller: Controller, store: PolicyStore, key: TargetKey) -> StoredPolicy:
    """The target's stored policy, else its running defaults (unpaused, no ETag yet).
    Store errors propagate: the API reports them rather than guessing."""
    namespace, _, name = key
    stored = store.get(namespace, name)
    if stored is not None:
        return stored
    return StoredPolicy(namespace=namespace, name=name,
                        policy=document_of(controller.targets[key].config), paused=False,
                        etag=None, history=())


class KubePolicyEvents:
    """A Normal Event "PolicyUpdated"/"PolicyPaused"/"PolicyResumed" on the target's
    workload for each accepted change (who and what, never a token)."""

    REASONS = {"update": "PolicyUpdated", "pause": "PolicyPaused", "resume": "PolicyResumed"}

    def __init__(self, api_client: Any, *, component: str = "predictive-autoscaler") -> None:
        import kubernetes.client as k8s

        self._core = k8s.CoreV1Api(api_client)
        self.component = component

    def __call__(self, config: TargetConfig, change: PolicyChange) -> None:
        body = event_body(
            {"apiVersion": "apps/v1", "kind": config.kind, "name": config.name,
             "namespace": config.namespace},
            self.REASONS.get(change.action, "PolicyChanged"),
            f"policy {change.action} by {change.who} at {change.at}" + _diff_text(change),
            component=self.component, now=datetime.now(UTC))
        try:
            call_api(f"create Event for {config.namespace}/{config.name}",
                     lambda: self._core.create_namespaced_event(config.namespace, body))
        except AutoscalerError as exc:
            log.warning("policy event not emitted: %s", exc)


def _diff_text(change: PolicyChange) -> str:
    if not change.old or not change.new:
        return ""
    diff = [f"{k}: {change.old.get(k)!r} -> {change.new.get(k)!r}"
            for k in differing_fields(change.old, change.new)]
    return ("; " + ", ".join(diff))[:900] if diff else ""
