"""The oracle's plan, checked against hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.oracle import PlannedPod, plan_arrays, plan_pods, planned_replica_seconds


@pytest.mark.parametrize(
    ("need", "colds", "expected"),
    [
        pytest.param([1, 1, 1], [], [PlannedPod(0, 0, 30)], id="one-warm-pod-all-along"),
        pytest.param([0, 1, 1], [5.0], [PlannedPod(5, 10, 30)], id="started-one-cold-start-ahead"),
        pytest.param([1, 0, 1], [12.0], [PlannedPod(0, 0, 30)],
                     id="kept-through-gap-shorter-than-cold-start"),
        pytest.param([1, 0, 0, 1], [12.0], [PlannedPod(0, 0, 10), PlannedPod(18, 30, 40)],
                     id="restarted-after-gap-longer-than-cold-start"),
        pytest.param([1, 2, 1], [4.0], [PlannedPod(0, 0, 30), PlannedPod(6, 10, 20)],
                     id="second-replica-for-the-peak-only"),
    ],
)
def test_plan_matches_hand_count(need: list[int], colds: list[float],
                                 expected: list[PlannedPod]) -> None:
    plan = plan_pods(np.array(need), 10.0, 0.0, np.array(colds + [99.0] * 4))
    assert sorted(plan, key=lambda p: (p.ready_s, p.created_s)) == sorted(
        expected, key=lambda p: (p.ready_s, p.created_s))


def test_plan_covers_need_in_every_interval() -> None:
    rng = np.random.default_rng(3)
    need = rng.integers(0, 6, size=200)
    plan = plan_pods(need, 15.0, 100.0, rng.uniform(20, 40, size=2000))
    for i, n in enumerate(need):
        t = 100.0 + i * 15.0
        ready = sum(1 for p in plan if p.ready_s <= t and p.deleted_s >= t + 15.0)
        assert ready >= n


def test_cost_never_above_restart_everything() -> None:
    """Merging gaps only saves: the plan bills at most sum(need)*interval + one cold start per run."""
    rng = np.random.default_rng(5)
    need = rng.integers(0, 4, size=300)
    colds = rng.uniform(30, 60, size=3000)
    plan = plan_pods(need, 15.0, 0.0, colds)
    runs = sum(int(np.sum(np.diff(np.concatenate(([0], (need >= j).astype(int)))) == 1))
               for j in range(1, 4))
    assert planned_replica_seconds(plan, 0.0) <= need.sum() * 15.0 + runs * 60.0
    assert planned_replica_seconds(plan, 0.0) >= need.sum() * 15.0


def test_too_few_cold_starts_is_an_error() -> None:
    with pytest.raises(ValueError, match="too short"):
        plan_pods(np.array([0, 1, 0, 0, 0, 1]), 10.0, 0.0, np.array([1.0]))


def plan_replica_by_replica(need, interval_s, start_s, colds):
    """The plan's rule spelled out one replica and one run at a time (the reference)."""
    end_s = start_s + len(need) * interval_s
    draws, pods = iter(colds), []
    for replica in range(1, max(need, default=0) + 1):
        current = None
        i = 0
        while i < len(need):
            if need[i] < replica:
                i += 1
                continue
            i0 = i
            while i < len(need) and need[i] >= replica:
                i += 1
            run_start, run_end = start_s + i0 * interval_s, start_s + i * interval_s
            if i0 == 0:
                current = [start_s, start_s, run_end]
                continue
            cold = next(draws)
            if current is not None and run_start - current[2] < cold:
                current[2] = run_end
                continue
            if current is not None:
                pods.append(tuple(current))
            current = [run_start - cold, run_start, run_end]
        if current is not None:
            pods.append((current[0], current[1], min(current[2], end_s)))
    return sorted(pods, key=lambda p: (p[0], p[1]))


@settings(max_examples=200, deadline=None)
@given(need=st.lists(st.integers(0, 6), max_size=60),
       colds=st.lists(st.floats(0.0, 120.0), min_size=200, max_size=200),
       interval_s=st.sampled_from([1.0, 7.3, 15.0]), start_s=st.floats(0.0, 1e6))
def test_plan_equals_the_rule_replica_by_replica(need, colds, interval_s, start_s):
    """All replicas at once (plan_arrays) gives the very pods, times and order of the rule."""
    created, ready, deleted = plan_arrays(np.array(need, dtype=np.int64), interval_s, start_s,
                                          np.array(colds))
    got = list(zip(created.tolist(), ready.tolist(), deleted.tolist(), strict=True))
    assert got == plan_replica_by_replica(need, interval_s, start_s, colds)
    assert [(p.created_s, p.ready_s, p.deleted_s) for p in plan_pods(
        np.array(need, dtype=np.int64), interval_s, start_s, np.array(colds))] == got
