"""Request-level serving: batch kernel == event-at-a-time reference, and hand-counted cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.serving import RequestServer, hold_until_routable
from simulator.serving_reference import ReferenceRequestServer


def _script(draw_seed: int, n_batches: int, slots: int, mean_gap_s: float, mean_service_s: float):
    """Random batches with add/remove operations between them (at most one replica removed
    per boundary, never the last one), arrivals sorted globally; a few ties on purpose."""
    rng = np.random.default_rng(draw_seed)
    ops, t, live, next_id = [], 0.0, [], 0
    for _ in range(rng.integers(1, 6)):
        ops.append(("add", t))
        live.append(next_id)
        next_id += 1
    for _ in range(n_batches):
        n = int(rng.integers(0, 30))
        gaps = rng.exponential(mean_gap_s, n)
        gaps[rng.random(n) < 0.1] = 0.0  # simultaneous arrivals
        arr = t + np.cumsum(gaps)
        svc = rng.exponential(mean_service_s, n) + 1e-3
        svc[rng.random(n) < 0.1] = 0.25  # equal service times make equal finish times
        ops.append(("serve", arr, svc))
        t = float(arr[-1]) if n else t
        t += float(rng.exponential(mean_gap_s))
        action = rng.integers(0, 3)
        if action == 1 or len(live) == 1:
            ops.append(("add", t))
            live.append(next_id)
            next_id += 1
        elif action == 2:
            victim = live.pop(int(rng.integers(0, len(live))))
            ops.append(("remove", victim, t))
    return ops


def _run(server, ops):
    starts, rids = [], []
    for op in ops:
        if op[0] == "add":
            server.add_replica(op[1])
        elif op[0] == "remove":
            server.remove_replica(op[1], op[2])
        else:
            out = server.serve(op[1], op[2])
            if out is not None:
                starts.append(out[0])
                rids.append(out[1])
    return starts, rids


@pytest.mark.parametrize("routing", ["lor", "random", "central"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    n_batches=st.integers(1, 8),
    slots=st.integers(1, 4),
    load=st.sampled_from([0.3, 1.0, 3.0]),
)
def test_batch_equals_event_at_a_time(routing, seed, n_batches, slots, load):
    ops = _script(seed, n_batches, slots, mean_gap_s=0.1, mean_service_s=0.1 * load * slots)
    batch = RequestServer(slots, routing, seed=seed)
    ref = ReferenceRequestServer(slots, routing, seed=seed)
    starts, rids = _run(batch, ops)
    _run(ref, ops)
    ref_start, ref_rid = ref.results()
    got_start = np.concatenate(starts) if starts else np.zeros(0)
    got_rid = np.concatenate(rids) if rids else np.zeros(0, dtype=np.int64)
    np.testing.assert_array_equal(got_rid, ref_rid)
    np.testing.assert_array_equal(got_start, ref_start)  # exact, not approximate


@pytest.mark.parametrize(
    "routing, arrivals, service, want_start, want_rid",
    [
        # two replicas x 1 slot; LOR sends the second request to the idle replica 1, the third
        # (t=0.5, both busy: 1 outstanding each) to the lowest id, where it queues until 1.0
        pytest.param(
            "lor",
            [0.0, 0.1, 0.5],
            [1.0, 1.0, 1.0],
            [0.0, 0.1, 1.0],
            [0, 1, 0],
            id="lor-ties-lowest-id",
        ),
        # a request finishing at t is not outstanding at t: at t=1.0 replica 0 is free again
        pytest.param(
            "lor",
            [0.0, 0.0, 1.0],
            [1.0, 2.0, 1.0],
            [0.0, 0.0, 1.0],
            [0, 1, 0],
            id="lor-departure-before-arrival",
        ),
        # central: the third request takes the slot that frees first (replica 1 at 0.6)
        pytest.param(
            "central",
            [0.0, 0.1, 0.2],
            [2.0, 0.5, 1.0],
            [0.0, 0.1, 0.6],
            [0, 1, 1],
            id="central-earliest-free-slot",
        ),
        # central, both slots idle: the one idle longest (ties: lowest id) takes the request
        pytest.param(
            "central", [0.0, 5.0], [1.0, 1.0], [0.0, 5.0], [0, 1], id="central-longest-idle"
        ),
    ],
)
def test_hand_counted_cases(routing, arrivals, service, want_start, want_rid):
    server = RequestServer(1, routing)
    server.add_replica(0.0)
    server.add_replica(0.0)
    start, rid = server.serve(np.array(arrivals), np.array(service))
    np.testing.assert_array_equal(start, want_start)
    np.testing.assert_array_equal(rid, want_rid)


@pytest.mark.parametrize("routing", ["lor", "central"])
def test_equal_free_times_go_to_lowest_ids_in_order(routing):
    server = RequestServer(1, routing)
    for _ in range(7):
        server.add_replica(0.0)
    # two rounds of 7 simultaneous requests with equal service: every round ties everywhere
    arrivals = np.repeat([0.0, 1.0, 2.0], 7)
    start, rid = server.serve(arrivals, np.ones(arrivals.size))
    np.testing.assert_array_equal(rid, np.tile(np.arange(7), 3))
    np.testing.assert_array_equal(start, arrivals)


def test_graceful_drain_and_metrics():
    server = RequestServer(2, "lor")
    a = server.add_replica(0.0)
    server.serve(np.array([0.0, 0.0, 0.0]), np.array([1.0, 2.0, 3.0]))
    # 2 slots: the third request queues until 1.0 and ends at 4.0
    np.testing.assert_array_equal(server.outstanding(0.5), [3])
    np.testing.assert_array_equal(server.outstanding(2.5), [1])
    b = server.add_replica(2.0)
    server.remove_replica(a, 2.0)
    assert server.routable() == [b]
    start, rid = server.serve(np.array([2.5]), np.array([1.0]))
    assert rid.tolist() == [b] and start.tolist() == [2.5]
    np.testing.assert_array_equal(server.work_started_s, [6.0, 1.0])
    np.testing.assert_array_equal(server.last_finish_s, [4.0, 3.5])
    np.testing.assert_array_equal(server.outstanding(3.9), [1, 0])


def test_held_arrivals_start_when_replica_is_ready():
    server = RequestServer(1, "lor")
    held_a, held_s = np.array([1.0, 2.0]), np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="no routable replica"):
        server.serve(held_a, held_s)
    server.add_replica(10.0)
    arr, svc = hold_until_routable(held_a, held_s, np.array([10.2]), np.array([0.5]))
    start, _ = server.serve(arr, svc)
    np.testing.assert_array_equal(start, [10.0, 10.5, 11.0])


def test_outstanding_heap_grows_under_overload():
    server = RequestServer(1, "random", seed=3)
    server.add_replica(0.0)
    n = 1000  # far more than the initial heap width: all arrive at once
    start, _ = server.serve(np.zeros(n), np.ones(n))
    np.testing.assert_array_equal(start, np.arange(n, dtype=float))
    assert server.outstanding(0.0).tolist() == [n]


@pytest.mark.parametrize(
    "arrivals, service, match",
    [
        pytest.param([1.0, 0.5], [1.0, 1.0], "sorted", id="unsorted"),
        pytest.param([1.0], [0.0], "> 0", id="zero-service"),
    ],
)
def test_rejects_bad_batches(arrivals, service, match):
    server = RequestServer(1)
    server.add_replica(0.0)
    with pytest.raises(ValueError, match=match):
        server.serve(np.array(arrivals), np.array(service))
