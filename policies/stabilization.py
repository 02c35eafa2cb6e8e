"""Time-window stabilization and per-period step limits for replica counts. Pure.

The rules are those of the Kubernetes HPA controller
(kubernetes/kubernetes ``pkg/controller/podautoscaler/horizontal.go``), written without any
controller state so that the HPA model and the predictive policy can share them:

- a scale-up takes the MIN of the recommendations inside its (short) window and a scale-down the
  MAX of those inside its (long) window, and the result never crosses the current count
  (``stabilizeRecommendationWithBehaviors``);
- a change is limited by policies "at most N pods / P % per period", where the budget of a period
  is what is left after the scale events that happened inside it
  (``calculateScaleUpLimitWithScalingRules``, ``calculateScaleDownLimitWithBehaviors``,
  ``getReplicasChangePerPeriod``).

Histories are tuples of ``(t_s, value)`` pairs, oldest first (times non-decreasing: the scans
rely on it); every function returns new tuples.
Time comparisons follow Go's ``After``/``Before`` exactly (strict), because at a 15 s tick a
sample exactly one window old is a common case and the controller excludes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal

History = tuple[tuple[float, int], ...]

SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class ScalingPolicy:
    """One rate limit: at most ``value`` pods (kind "Pods") or ``value`` % (kind "Percent") of the
    count at the start of the period may be added (or removed) per ``period_s`` seconds."""

    kind: Literal["Pods", "Percent"]
    value: int
    period_s: float

    def __post_init__(self) -> None:
        if self.kind not in ("Pods", "Percent"):
            raise ValueError(f"policy kind must be 'Pods' or 'Percent', got {self.kind!r}")
        if self.value <= 0 or self.period_s <= 0:
            raise ValueError("policy value and period_s must be positive")


def _first_after(history: History, cutoff: float, inclusive: bool) -> int:
    """Index of the oldest sample inside the window (histories are pruned, so this is ~0)."""
    i, n = 0, len(history)
    while i < n and (history[i][0] < cutoff or (history[i][0] == cutoff and not inclusive)):
        i += 1
    return i


def window_min(history: History, now_s: float, window_s: float, initial: int) -> int:
    """Min of ``initial`` and every value recorded strictly after ``now_s - window_s``."""
    i = _first_after(history, now_s - window_s, False)
    if i == len(history):
        return initial
    return min(initial, min(map(itemgetter(1), history[i:])))


def window_max(
    history: History, now_s: float, window_s: float, initial: int, inclusive: bool = False
) -> int:
    """Max of ``initial`` and every value recorded strictly after ``now_s - window_s``.

    ``inclusive`` also counts a sample exactly at the cutoff: the legacy (no ``behavior``) path,
    ``stabilizeRecommendation``, drops only samples ``Before(cutoff)``.
    """
    i = _first_after(history, now_s - window_s, inclusive)
    if i == len(history):
        return initial
    return max(initial, max(map(itemgetter(1), history[i:])))


def stabilize(
    current: int,
    desired: int,
    history: History,
    now_s: float,
    up_window_s: float,
    down_window_s: float,
) -> int:
    """The stabilized count: ``current`` raised to the scale-up bound, lowered to the scale-down bound.

    Mirrors ``stabilizeRecommendationWithBehaviors``: the up bound is the min of ``desired`` and the
    recommendations in the up window, the down bound the max of ``desired`` and those in the down
    window. A rise therefore needs every recent recommendation to agree (flapping up is damped) and
    a fall happens only to the highest recent recommendation. ``history`` must not yet hold
    ``desired``; record it afterwards with :func:`record`.
    """
    up = window_min(history, now_s, up_window_s, desired)
    down = window_max(history, now_s, down_window_s, desired)
    out = current
    if out < up:
        out = up
    if out > down:
        out = down
    return out


def record(history: History, now_s: float, value: int, keep_s: float) -> History:
    """Append ``(now_s, value)`` and drop samples no later window can count.

    A sample at ``t <= now_s - keep_s`` is outside every window of length <= ``keep_s`` from the
    next tick on, so dropping it changes no result and bounds the tuple to keep_s / tick entries.
    ``now_s`` must not decrease from call to call (histories stay sorted).
    """
    cutoff = now_s - keep_s
    i, n = 0, len(history)
    while i < n and history[i][0] <= cutoff:
        i += 1
    return (*history[i:], (now_s, value))


def change_in_period(events: History, now_s: float, period_s: float) -> int:
    """Sum of the replica changes recorded strictly after ``now_s - period_s``
    (``getReplicasChangePerPeriod``)."""
    cutoff = now_s - period_s
    total = 0
    for t, v in reversed(events):
        if t <= cutoff:
            break
        total += v
    return total


def _period_start(
    current: int, up_events: History, down_events: History, now_s: float, period_s: float
) -> int:
    return (
        current
        - change_in_period(up_events, now_s, period_s)
        + change_in_period(down_events, now_s, period_s)
    )


def scale_up_limit(
    current: int,
    up_events: History,
    down_events: History,
    policies: tuple[ScalingPolicy, ...],
    select: SelectPolicy,
    now_s: float,
) -> int:
    """The highest count the policies allow now (``calculateScaleUpLimitWithScalingRules``).

    For each policy the period's start count is reconstructed from the events inside the period;
    "Pods" adds ``value``, "Percent" multiplies by 1 + value/100 rounded UP (otherwise a small
    deployment could never grow). ``select`` "Max" takes the most permissive policy, "Min" the
    strictest, "Disabled" forbids scaling up. May return less than ``current``; the caller clamps.
    """
    if select == "Disabled":
        return current
    result: int | None = None
    for p in policies:
        start = _period_start(current, up_events, down_events, now_s, p.period_s)
        # a percentage rounds up, or a small deployment could never grow
        proposed = start + p.value if p.kind == "Pods" else math.ceil(start * (1 + p.value / 100))
        if result is None:
            result = proposed
        elif select == "Min":
            result = min(result, proposed)
        else:
            result = max(result, proposed)
    # no policy at all: Go starts from MinInt32 and the caller clamps to current
    return current if result is None else result


def scale_down_limit(
    current: int,
    up_events: History,
    down_events: History,
    policies: tuple[ScalingPolicy, ...],
    select: SelectPolicy,
    now_s: float,
) -> int:
    """The lowest count the policies allow now (``calculateScaleDownLimitWithBehaviors``).

    "Pods" removes ``value``; "Percent" keeps ``start * (1 - value/100)`` truncated toward zero
    (Go's int32 conversion). ``select`` "Max" takes the biggest allowed change (the lowest count),
    "Min" the smallest. May return more than ``current``; the caller clamps.
    """
    if select == "Disabled":
        return current
    result: int | None = None
    for p in policies:
        start = _period_start(current, up_events, down_events, now_s, p.period_s)
        proposed = start - p.value if p.kind == "Pods" else int(start * (1 - p.value / 100))
        if result is None:
            result = proposed
        elif select == "Min":
            result = max(result, proposed)
        else:
            result = min(result, proposed)
    return current if result is None else result


def bounded_step(current: int, target: int, max_up: int | None, max_down: int | None) -> int:
    """Move from ``current`` toward ``target`` by at most ``max_up`` / ``max_down`` replicas
    (None = unbounded). The simple per-tick bound the predictive policy uses for its own floor."""
    if target > current and max_up is not None:
        return min(target, current + max(0, max_up))
    if target < current and max_down is not None:
        return max(target, current - max(0, max_down))
    return target
