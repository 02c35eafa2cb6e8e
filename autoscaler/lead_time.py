"""Measured lead time per target: how long its pods take from creation to Ready. Pure.

A pod's lead time is Ready.lastTransitionTime - metadata.creationTimestamp; it splits into
scheduling (creation -> PodScheduled, where a cluster autoscaler adding a GPU node shows up)
and start-up (PodScheduled -> Ready: image pull, weight loading, readiness probe).  A
`LeadTimeTracker` keeps the last `window` pods of one target, each counted once (by uid), and
reports a high quantile of them by the rule the simulator uses too (policies/lead_time.py);
until `min_pods` pods were seen it reports the configured default.

Pure bookkeeping: fed the pod list the caller read (`list_namespaced_pod` with the target's
selector, see `label_selector`); no clock, no I/O.  Timestamps come from the pods themselves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from policies.lead_time import LeadTimeRule, nearest_rank


@dataclass(frozen=True)
class PodStart:
    """One pod's start, as epoch seconds (UTC).

    created_s: metadata.creationTimestamp.
    scheduled_s: PodScheduled turned True (None when the pod carries no such condition).
    ready_s: Ready turned True.
    """

    uid: str
    created_s: float
    scheduled_s: float | None
    ready_s: float

    @property
    def lead_time_s(self) -> float:
        return self.ready_s - self.created_s

    @property
    def scheduling_s(self) -> float | None:
        return None if self.scheduled_s is None else self.scheduled_s - self.created_s


@dataclass(frozen=True)
class LeadTimeEstimate:
    """What the policy plans with, and where it came from.

    lead_time_s: the quantile of the measured lead times, or the default.
    source: "measured" or "default" (fewer than min_pods pods seen).
    pods: how many pods the window holds.
    quantile: the quantile reported (0..1).
    scheduling_s: the same quantile of creation -> PodScheduled (None with no data).
    """

    lead_time_s: float
    source: str
    pods: int
    quantile: float
    scheduling_s: float | None = None


def _get(obj: Any, *path: str) -> Any:
    """Read a field from a client model (snake_case attributes) or a JSON dict (camelCase)."""
    for key in path:
        if obj is None:
            return None
        if isinstance(obj, Mapping):
            obj = obj.get(key)
        else:
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
            obj = getattr(obj, snake, None)
    return obj


def _epoch_s(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:  # the API server speaks UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _condition_true_at(pod: Any, kind: str) -> float | None:
    for condition in _get(pod, "status", "conditions") or ():
        if _get(condition, "type") == kind and _get(condition, "status") == "True":
            return _epoch_s(_get(condition, "lastTransitionTime"))
    return None


def pod_start(pod: Any) -> PodStart | None:
    """The start of a pod that is Ready and not terminating, else None.

    Accepts a `V1Pod` from the official client or the pod's JSON as a dict.
    """
    if _get(pod, "metadata", "deletionTimestamp") is not None:
        return None
    created_s = _epoch_s(_get(pod, "metadata", "creationTimestamp"))
    ready_s = _condition_true_at(pod, "Ready")
    uid = _get(pod, "metadata", "uid")
    if created_s is None or ready_s is None or not uid:
        return None
    return PodStart(str(uid), created_s, _condition_true_at(pod, "PodScheduled"), ready_s)


class LeadTimeTracker:
    """Rolling lead-time distribution of one target's pods.

    default_s: lead time reported until `min_pods` pods were seen, seconds.
    window: how many of the most recent pods (by Ready time) are kept.
    min_pods: pods needed before measured values replace the default.
    quantile: the quantile reported, 0..1 (0.95: plan for the slow starts too).
    """

    def __init__(self, default_s: float, *, window: int = 50, min_pods: int = 5,
                 quantile: float = 0.95) -> None:
        self.rule = LeadTimeRule(default_s, window, min_pods, quantile)  # checks the values
        self.default_s = default_s
        self.window = window
        self.min_pods = min_pods
        self.quantile = quantile
        self._starts: deque[PodStart] = deque(maxlen=window)
        # uids already counted that may still be listed; pruned to the current listing so the
        # set stays as small as the target's pods plus the window.
        self._seen: set[str] = set()

    def observe(self, pods: Iterable[Any]) -> int:
        """Count the Ready pods not counted before; returns how many were new.

        `pods` is the target's full current listing: uids absent from it are forgotten (a
        deleted pod never comes back under the same uid).
        """
        listed: set[str] = set()
        fresh: list[PodStart] = []
        for pod in pods:
            uid = _get(pod, "metadata", "uid")
            if uid:
                listed.add(str(uid))
            start = pod_start(pod)
            if start is not None and start.uid not in self._seen:
                fresh.append(start)
        fresh.sort(key=lambda s: (s.ready_s, s.uid))  # the window keeps the newest starts
        self._starts.extend(fresh)
        self._seen = (self._seen & listed) | {s.uid for s in fresh}
        return len(fresh)

    @property
    def starts(self) -> tuple[PodStart, ...]:
        return tuple(self._starts)

    def estimate(self) -> LeadTimeEstimate:
        lead_times = [s.lead_time_s for s in self._starts]
        if not self.rule.measured(lead_times):
            return LeadTimeEstimate(self.default_s, "default", len(self._starts), self.quantile)
        scheduling = [s.scheduling_s for s in self._starts if s.scheduling_s is not None]
        return LeadTimeEstimate(
            self.rule.lead_time_s(lead_times), "measured",
            len(self._starts), self.quantile,
            nearest_rank(scheduling, self.quantile) if scheduling else None)

    def lead_time_s(self) -> float:
        return self.estimate().lead_time_s


def label_selector(selector: Any) -> str:
    """A workload's spec.selector (matchLabels and matchExpressions) as a list selector string."""
    terms = [f"{k}={v}" for k, v in sorted((_get(selector, "matchLabels") or {}).items())]
    for expr in _get(selector, "matchExpressions") or ():
        key, op = _get(expr, "key"), _get(expr, "operator")
        values = ",".join(_get(expr, "values") or ())
        if op == "In":
            terms.append(f"{key} in ({values})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({values})")
        elif op == "Exists":
            terms.append(str(key))
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise ValueError(f"unknown selector operator {op!r}")
    return ",".join(terms)
