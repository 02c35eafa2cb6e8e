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


def plan_arrays(need: np.ndarray, interval_s: float, start_s: float,
                cold_starts_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``plan_pods`` as three arrays (created_s, ready_s, deleted_s), one entry per pod in the
    same order, computed for all replicas at once: the replay reads thousands of pods."""
    need = np.asarray(need, dtype=np.int64)
    end_s = start_s + len(need) * interval_s
    # replica j's runs start at a boundary where the need rises through j and end where it
    # falls below j (boundary i lies before interval i; the last one is the end)
    padded = np.concatenate(([0], need, [0]))
    before, after = padded[:-1], padded[1:]
    rep_start, i_start = _crossings(before, after)
    rep_end, i_end = _crossings(after, before)
    # replica by replica, run by run: the order the cold starts are consumed in
    by_start = np.lexsort((i_start, rep_start))
    by_end = np.lexsort((i_end, rep_end))
    replica, i0, i1 = rep_start[by_start], i_start[by_start], i_end[by_end]
    run_start, run_end = start_s + i0 * interval_s, start_s + i1 * interval_s
    cold_run = i0 > 0  # runs from the start exist already: no cold start drawn
    draws = np.asarray(cold_starts_s, dtype=float)
    n_cold = int(np.count_nonzero(cold_run))
    if n_cold > draws.size:
        raise ValueError("cold_starts_s is too short for the oracle's plan")
    cold = np.zeros(run_start.size)
    cold[cold_run] = draws[:n_cold]
    # keep the pod through a gap shorter than a cold start: the run joins the previous pod
    joins = np.zeros(run_start.size, dtype=bool)
    joins[1:] = (replica[1:] == replica[:-1]) & cold_run[1:] & (
        run_start[1:] - run_end[:-1] < cold[1:])
    first = np.flatnonzero(~joins)
    last = np.append(first[1:], run_start.size)[:first.size] - 1
    warm = ~cold_run[first]
    created = np.where(warm, start_s, run_start[first] - cold[first])
    ready = np.where(warm, start_s, run_start[first])
    deleted = np.minimum(run_end[last], end_s)
    order = np.lexsort((ready, created))  # stable: ties keep replica order
    return created[order], ready[order], deleted[order]


def _crossings(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(replica, boundary) for every replica j with lower[i] < j <= upper[i] at boundary i."""
    idx = np.flatnonzero(upper > lower)
    counts = upper[idx] - lower[idx]
    total = int(counts.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(lower[idx], counts) + offsets + 1, np.repeat(idx, counts)


def plan_pods(need: np.ndarray, interval_s: float, start_s: float,
              cold_starts_s: np.ndarray) -> list[PlannedPod]:
    """The oracle's pods for a per-interval need (replicas), in creation order.

    cold_starts_s holds the realized cold start of each pod the plan creates, consumed in order
    (replica by replica, run by run); it must be long enough (a ValueError says so otherwise).
    """
    created, ready, deleted = plan_arrays(need, interval_s, start_s, cold_starts_s)
    return [PlannedPod(c, r, d) for c, r, d in zip(created.tolist(), ready.tolist(),
                                                  deleted.tolist(), strict=True)]


def planned_replica_seconds(pods: list[PlannedPod], start_s: float) -> float:
    """Billed pod-seconds of a plan, counting only time after start_s."""
    return float(sum(p.deleted_s - max(p.created_s, start_s) for p in pods))
