"""Event-at-a-time reference for ``simulator.serving``: the same semantics, one event at a time.

Rule: explicit arrival and slot-free (departure or replica-ready) events on a heap, processed in
time order, with per-replica FIFO queues (``lor``, ``random``) or per-slot FIFO queues
(``central``: each arrival joins the slot with the least work left, which is how a shared FCFS
queue over identical slots behaves). Plain Python, slow, for tests only. Pure.
"""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np

from simulator.serving import ROUTINGS


class ReferenceRequestServer:
    """Same API as RequestServer; ``results()`` returns every request's (start_s, replica)."""

    def __init__(self, slots_per_replica: int, routing: str = "lor", seed: int = 0) -> None:
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        self.c = slots_per_replica
        self.routing = routing
        self._rng = np.random.default_rng(seed)
        self._events: list[tuple[float, int, int, int, int]] = []  # (t, seq, rid, slot, req)
        self._seq = 0
        self._routable: list[int] = []
        self._n = 0
        self._queue: list[deque[tuple[int, float]]] = []  # lor/random: per replica
        self._idle: list[int] = []  # lor/random: idle ready slots per replica
        self._in_service: list[int] = []
        self._slot_queue: dict[tuple[int, int], deque[tuple[int, float]]] = {}  # central
        self._slot_busy: dict[tuple[int, int], bool] = {}
        self._slot_work_end: dict[tuple[int, int], float] = {}
        self._start: list[float] = []
        self._replica: list[int] = []

    def add_replica(self, now_s: float) -> int:
        rid = self._n
        self._n += 1
        self._routable.append(rid)
        self._queue.append(deque())
        self._idle.append(0)
        self._in_service.append(0)
        for s in range(self.c):
            self._slot_queue[(rid, s)] = deque()
            self._slot_busy[(rid, s)] = True  # not ready until its ready event at now_s
            self._slot_work_end[(rid, s)] = now_s
            self._push(now_s, rid, s, -1)
        return rid

    def remove_replica(self, rid: int, now_s: float) -> None:
        self._routable.remove(rid)

    def routable(self) -> list[int]:
        return sorted(self._routable)

    def serve(self, arrivals_s: np.ndarray, service_s: np.ndarray) -> None:
        for t, s in zip(arrivals_s.tolist(), service_s.tolist(), strict=True):
            while self._events and self._events[0][0] <= t:
                self._fire(*heapq.heappop(self._events))
            self._arrive(t, s)

    def results(self) -> tuple[np.ndarray, np.ndarray]:
        """Run every pending event, then return (start_s, replica) of all requests so far."""
        while self._events:
            self._fire(*heapq.heappop(self._events))
        return np.array(self._start, dtype=float), np.array(self._replica, dtype=np.int64)

    # events ------------------------------------------------------------------------------
    def _push(self, t: float, rid: int, slot: int, req: int) -> None:
        heapq.heappush(self._events, (t, self._seq, rid, slot, req))
        self._seq += 1

    def _start_request(self, req: int, t: float, s: float, rid: int, slot: int) -> None:
        self._start[req] = t
        self._in_service[rid] += 1
        self._push(t + s, rid, slot, req)

    def _arrive(self, t: float, s: float) -> None:
        req = len(self._start)
        self._start.append(np.nan)
        routable = self.routable()
        if self.routing == "central":
            rid, slot = min(
                ((r, q) for r in routable for q in range(self.c)),
                key=lambda rs: (self._slot_work_end[rs], rs[0]),
            )
            self._replica.append(rid)
            self._slot_work_end[(rid, slot)] = max(t, self._slot_work_end[(rid, slot)]) + s
            if self._slot_busy[(rid, slot)]:
                self._slot_queue[(rid, slot)].append((req, s))
            else:
                self._slot_busy[(rid, slot)] = True
                self._start_request(req, t, s, rid, slot)
            return
        if self.routing == "lor":
            rid = min(routable, key=lambda r: (len(self._queue[r]) + self._in_service[r], r))
        else:
            k = len(routable)
            rid = routable[min(int(self._rng.random() * k), k - 1)]
        self._replica.append(rid)
        if self._idle[rid] > 0:
            self._idle[rid] -= 1
            self._start_request(req, t, s, rid, -1)
        else:
            self._queue[rid].append((req, s))

    def _fire(self, t: float, _seq: int, rid: int, slot: int, req: int) -> None:
        """A slot of `rid` becomes free at t (a departure, or the replica becoming ready)."""
        if req >= 0:
            self._in_service[rid] -= 1
        if self.routing == "central":
            q = self._slot_queue[(rid, slot)]
            if q:
                nxt, s = q.popleft()
                self._start_request(nxt, t, s, rid, slot)
            else:
                self._slot_busy[(rid, slot)] = False
            return
        q = self._queue[rid]
        if q:
            nxt, s = q.popleft()
            self._start_request(nxt, t, s, rid, -1)
        else:
            self._idle[rid] += 1
