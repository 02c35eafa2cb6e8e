"""Request-level serving across a changing set of replicas (the simulator's hot loop).

Rule: a batch of arrivals during which the replica set is fixed is served in one pass of a
per-replica FCFS recursion (start = max(arrival, earliest free slot)); the result equals serving
the same requests one event at a time (see ``simulator/serving_reference.py`` and
``tests/test_sim_serving.py``). Deterministic for a seed; no clock, no I/O.

Routing:
- ``lor``: least outstanding requests (queued + in service) at the arrival instant, ties to the
  lowest replica id (inference gateways, Envoy ``LEAST_REQUEST``).
- ``random``: uniform over the routable replicas (kube-proxy); one ``Generator.random()`` double
  per request, in arrival order, so the reference draws the same stream.
- ``central``: one shared FCFS queue over all slots of all routable replicas. Each request is
  bound on arrival to the slot that frees earliest (ties to the lowest replica id), which is
  the shared FCFS queue as long as the replica set is fixed. A request bound before a scale event
  stays bound: a replica added later does not take over backlog bound earlier, and a removed
  replica drains what is bound to it.

Contract with the engine:
- arrivals are sorted and never earlier than those of the previous batch; service times > 0;
- ``serve`` needs at least one routable replica. While none exists the engine holds arrivals and
  passes them (with their original arrival times) in the first batch after ``add_replica``;
  they then start no earlier than the new replica's ``now_s`` (see ``hold_until_routable``);
- a request that finishes at t is no longer outstanding at t (departures before arrivals).
"""

from __future__ import annotations

import copy

import numpy as np
from numba import njit

ROUTINGS = ("lor", "random", "central")
_MODE = {"lor": 0, "random": 1, "central": 2}
_INITIAL_REPLICA_CAPACITY = 16
_INITIAL_OUTSTANDING_CAPACITY = 64


@njit(cache=True, inline="always")
def _sift_down(h, r, size, i):
    """Restore the min-heap property of row r of h (first `size` entries) from position i."""
    v = h[r, i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and h[r, child + 1] < h[r, child]:
            child += 1
        if h[r, child] >= v:
            break
        h[r, i] = h[r, child]
        i = child
    h[r, i] = v


@njit(cache=True)
def _serve_kernel(
    mode, arrivals, service, chosen, routable_ids, slot_heap, out_heap, out_size,
    work, last_finish, start_out, rid_out, i0,
):  # fmt: skip
    """Serve arrivals[i0:]; return the index where an outstanding heap filled up (or n).

    slot_heap[r] is a min-heap of replica r's slot free times (slots are interchangeable, so only
    the minimum matters); out_heap[r, :out_size[r]] a min-heap of the finish times of r's
    outstanding requests, popped lazily.
    """
    n = arrivals.shape[0]
    k = routable_ids.shape[0]
    c = slot_heap.shape[1]
    cap = out_heap.shape[1]
    # central: heap of routable replicas keyed by (earliest free slot, replica id)
    rh = routable_ids.copy()
    if mode == 2:
        for start in range(k // 2 - 1, -1, -1):
            _replica_sift_down(rh, slot_heap, k, start)
    for i in range(i0, n):
        t = arrivals[i]
        if mode == 0:
            r = -1
            best = 1 << 62
            for j in range(k):
                q = routable_ids[j]
                sz = _pop_finished(out_heap, out_size, q, t)
                if sz < best:
                    best = sz
                    r = q
        elif mode == 1:
            r = chosen[i]
        else:
            r = rh[0]
        sz = _pop_finished(out_heap, out_size, r, t)
        if sz == cap:
            return i
        free = slot_heap[r, 0]
        st = t if t > free else free
        fin = st + service[i]
        slot_heap[r, 0] = fin
        _sift_down(slot_heap, r, c, 0)
        # push fin onto r's outstanding heap
        j = sz
        while j > 0:
            parent = (j - 1) // 2
            if out_heap[r, parent] <= fin:
                break
            out_heap[r, j] = out_heap[r, parent]
            j = parent
        out_heap[r, j] = fin
        out_size[r] = sz + 1
        work[r] += service[i]
        if fin > last_finish[r]:
            last_finish[r] = fin
        start_out[i] = st
        rid_out[i] = r
        if mode == 2:
            _replica_sift_down(rh, slot_heap, k, 0)
    return n


@njit(cache=True, inline="always")
def _pop_finished(out_heap, out_size, r, t):
    """Drop requests of replica r that finished by t; return how many remain outstanding."""
    sz = out_size[r]
    while sz > 0 and out_heap[r, 0] <= t:
        sz -= 1
        out_heap[r, 0] = out_heap[r, sz]
        _sift_down(out_heap, r, sz, 0)
    out_size[r] = sz
    return sz


@njit(cache=True, inline="always")
def _replica_sift_down(rh, slot_heap, size, i):
    """Sift replica ids in rh by key (earliest free slot, id)."""
    v = rh[i]
    kv = slot_heap[v, 0]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        other = child + 1
        if other < size:
            a, b = rh[child], rh[other]
            ka, kb = slot_heap[a, 0], slot_heap[b, 0]
            if kb < ka or (kb == ka and b < a):
                child = other
        w = rh[child]
        kw = slot_heap[w, 0]
        if kv < kw or (kv == kw and v < w):
            break
        rh[i] = w
        i = child
    rh[i] = v


class RequestServer:
    """Routes and serves requests over replicas with ``slots_per_replica`` concurrent slots each.

    slots_per_replica: batch slots (concurrent requests) per replica.
    routing: "lor" (default), "random" or "central"; see the module docstring.
    seed: seed of the generator used by "random" routing.
    """

    def __init__(self, slots_per_replica: int, routing: str = "lor", seed: int = 0) -> None:
        if slots_per_replica < 1:
            raise ValueError(f"slots_per_replica must be >= 1, got {slots_per_replica}")
        if routing not in _MODE:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        self.slots_per_replica = int(slots_per_replica)
        self.routing = routing
        self._mode = _MODE[routing]
        self._rng = np.random.default_rng(seed)
        self._n = 0
        cap = _INITIAL_REPLICA_CAPACITY
        self._slot_heap = np.zeros((cap, self.slots_per_replica))
        self._out_heap = np.zeros((cap, _INITIAL_OUTSTANDING_CAPACITY))
        self._out_size = np.zeros(cap, dtype=np.int64)
        self._work = np.zeros(cap)
        self._last_finish = np.zeros(cap)
        self._routable_mask = np.zeros(cap, dtype=bool)
        self._routable_ids = np.zeros(0, dtype=np.int64)
        self._last_arrival_s = -np.inf

    # replica set -------------------------------------------------------------------------
    def add_replica(self, now_s: float) -> int:
        """Add a routable replica whose slots are free from ``now_s``; return its id."""
        if self._n == self._slot_heap.shape[0]:
            self._grow_replicas()
        rid = self._n
        self._n += 1
        self._slot_heap[rid, :] = now_s
        self._last_finish[rid] = now_s
        self._routable_mask[rid] = True
        self._routable_ids = np.flatnonzero(self._routable_mask[: self._n]).astype(np.int64)
        return rid

    def remove_replica(self, rid: int, now_s: float) -> None:
        """Stop routing to ``rid``; what it already holds finishes (graceful drain).

        now_s is accepted for symmetry with add_replica; the drain end is ``last_finish_s[rid]``.
        """
        if not (0 <= rid < self._n) or not self._routable_mask[rid]:
            raise ValueError(f"replica {rid} is not routable")
        self._routable_mask[rid] = False
        self._routable_ids = np.flatnonzero(self._routable_mask[: self._n]).astype(np.int64)

    def routable(self) -> list[int]:
        """Ids of the replicas that receive new requests, ascending."""
        return self._routable_ids.tolist()

    # serving -----------------------------------------------------------------------------
    def serve(self, arrivals_s: np.ndarray, service_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Serve a batch (fixed replica set); return (start_s float64, replica int64) per request."""
        arrivals = np.ascontiguousarray(arrivals_s, dtype=np.float64)
        service = np.ascontiguousarray(service_s, dtype=np.float64)
        n = arrivals.shape[0]
        if service.shape != arrivals.shape:
            raise ValueError("arrivals_s and service_s must have the same shape")
        start = np.empty(n)
        rid = np.empty(n, dtype=np.int64)
        if n == 0:
            return start, rid
        if self._routable_ids.size == 0:
            raise ValueError("no routable replica: hold the arrivals until add_replica")
        if arrivals[0] < self._last_arrival_s or (n > 1 and np.any(np.diff(arrivals) < 0)):
            raise ValueError("arrivals must be sorted and not earlier than the previous batch")
        if service.min() <= 0:
            raise ValueError("service times must be > 0")
        self._last_arrival_s = arrivals[-1]
        k = self._routable_ids.size
        if self._mode == 1:
            u = self._rng.random(n)
            chosen = self._routable_ids[np.minimum((u * k).astype(np.int64), k - 1)]
        else:
            chosen = self._routable_ids[:0]
        i = 0
        while True:
            i = _serve_kernel(
                self._mode, arrivals, service, chosen, self._routable_ids, self._slot_heap,
                self._out_heap, self._out_size, self._work, self._last_finish, start, rid, i,
            )  # fmt: skip
            if i == n:
                return start, rid
            self._out_heap = _widen(self._out_heap)

    def copy(self) -> RequestServer:
        """An independent copy of the whole state (what-if trials, e.g. the oracle's search)."""
        other = copy.copy(self)
        for name in ("_slot_heap", "_out_heap", "_out_size", "_work", "_last_finish",
                     "_routable_mask", "_routable_ids"):
            setattr(other, name, getattr(self, name).copy())
        other._rng = copy.deepcopy(self._rng)
        return other

    # state for metrics ---------------------------------------------------------------------
    @property
    def n_replicas(self) -> int:
        """Replicas ever added (ids are 0 .. n_replicas-1)."""
        return self._n

    @property
    def work_started_s(self) -> np.ndarray:
        """Per replica: cumulative service seconds of requests bound to it (start fixed).

        A request counts when it is routed, so work still queued at the end of a batch counts
        already; divide an increase by slots * window for per-pod utilization.
        """
        return self._work[: self._n].copy()

    @property
    def last_finish_s(self) -> np.ndarray:
        """Per replica: latest finish time of anything it served (or its add time)."""
        return self._last_finish[: self._n].copy()

    def outstanding(self, now_s: float) -> np.ndarray:
        """Per replica: requests served so far that are queued or in service at ``now_s``."""
        n = self._n
        h = self._out_heap[:n]
        live = np.arange(h.shape[1])[None, :] < self._out_size[:n, None]
        return np.count_nonzero((h > now_s) & live, axis=1)

    def _grow_replicas(self) -> None:
        cap = 2 * self._slot_heap.shape[0]
        for name in ("_slot_heap", "_out_heap", "_out_size", "_work", "_last_finish",
                     "_routable_mask"):  # fmt: skip
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)


def _widen(heap: np.ndarray) -> np.ndarray:
    new = np.zeros((heap.shape[0], 2 * heap.shape[1]))
    new[:, : heap.shape[1]] = heap
    return new


def hold_until_routable(
    held_arrivals_s: np.ndarray, held_service_s: np.ndarray,
    arrivals_s: np.ndarray, service_s: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Prepend arrivals held while no replica was routable to the next batch (engine helper)."""
    return np.concatenate([held_arrivals_s, arrivals_s]), np.concatenate(
        [held_service_s, service_s]
    )
