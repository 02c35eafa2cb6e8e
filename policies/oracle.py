"""The oracle: the cheapest schedule of pods that meets the SLO given the true future. Pure.

Input is the true replica need per interval (computed by the caller from the real demand and a
queueing model) and the realized cold start of each pod it will create. Replica j (1-based) is
needed in every interval whose need is >= j; each run of such intervals gets one pod, created
exactly one realized cold start before the run begins and deleted when it ends. Two runs of the
same replica separated by an idle gap shorter than the cold start are merged: keeping the pod
through the gap bills less than restarting it. Pods needed at the very start exist already
(warm start, billed from the start). The result is the lower bound on replica-hours that every
other policy's cost is divided by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlannedPod:
    """A pod of the oracle's plan: created, ready and deleted at these times (seconds)."""

    created_s: float
    ready_s: float
    deleted_s: float

    @property
    def billed_s(self) -> float:
        return self.deleted_s - self.created_s


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a boolean array."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def plan_pods(need: np.ndarray, interval_s: float, start_s: float,
              cold_starts_s: np.ndarray) -> list[PlannedPod]:
    """The oracle's pods for a per-interval need (replicas), in creation order.

    cold_starts_s holds the realized cold start of each pod the plan creates, consumed in order
    (replica by replica, run by run); it must be long enough (a ValueError says so otherwise).
    """
    need = np.asarray(need, dtype=np.int64)
    end_s = start_s + len(need) * interval_s
    pods: list[PlannedPod] = []
    draws = iter(np.asarray(cold_starts_s, dtype=float).tolist())
    top = int(need.max()) if len(need) else 0
    for replica in range(1, top + 1):
        runs = _runs(need >= replica)
        current: list[float] | None = None  # [created, ready, end]
        for i0, i1 in runs:
            run_start, run_end = start_s + i0 * interval_s, start_s + i1 * interval_s
            if i0 == 0:
                current = [start_s, start_s, run_end]
                continue
            try:
                cold = next(draws)
            except StopIteration:
                raise ValueError("cold_starts_s is too short for the oracle's plan") from None
            if current is not None and run_start - current[2] < cold:
                current[2] = run_end  # keep the pod through a gap shorter than a cold start
                continue
            if current is not None:
                pods.append(PlannedPod(*current))
            current = [run_start - cold, run_start, run_end]
        if current is not None:
            pods.append(PlannedPod(current[0], current[1], min(current[2], end_s)))
    pods.sort(key=lambda p: (p.created_s, p.ready_s))
    return pods


def planned_replica_seconds(pods: list[PlannedPod], start_s: float) -> float:
    """Billed pod-seconds of a plan, counting only time after start_s."""
    return float(sum(p.deleted_s - max(p.created_s, start_s) for p in pods))
