"""A tiny discrete-event core on a virtual clock: now, schedule, step, run (simpy's shape).

Events are (time, sequence) ordered callbacks. Work that happens continuously between events
(serving the arrivals of a trace) is done by a `before_event` hook that brings that work up to
the next event's time, so requests are served in batches while the replica set is fixed.
Pure apart from calling the callbacks it is given.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class Engine:
    """Virtual-time event loop."""

    def __init__(self, start_s: float = 0.0,
                 before_event: Callable[[float], None] | None = None) -> None:
        self.now_s = start_s
        self._queue: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0
        self._before_event = before_event

    def schedule(self, at_s: float, callback: Callable[..., Any], *args: Any) -> None:
        """Run callback(*args) at virtual time at_s (never in the past)."""
        if at_s < self.now_s:
            raise ValueError(f"cannot schedule at {at_s} before now {self.now_s}")
        heapq.heappush(self._queue, (at_s, self._seq, callback, args))
        self._seq += 1

    def every(self, first_s: float, period_s: float, callback: Callable[[float], Any],
              until_s: float) -> None:
        """Run callback(t) at first_s, first_s + period_s, ... while t < until_s."""

        def tick(t: float) -> None:
            callback(t)
            if t + period_s < until_s:
                self.schedule(t + period_s, tick, t + period_s)

        if first_s < until_s:
            self.schedule(first_s, tick, first_s)

    def step(self) -> bool:
        """Run the next event; False when none is left."""
        if not self._queue:
            return False
        at_s, _, callback, args = heapq.heappop(self._queue)
        if self._before_event is not None:
            self._before_event(at_s)
        self.now_s = at_s
        callback(*args)
        return True

    def run(self, until_s: float) -> None:
        """Run every event before until_s, then bring continuous work up to until_s."""
        while self._queue and self._queue[0][0] < until_s:
            self.step()
        if self._before_event is not None:
            self._before_event(until_s)
        self.now_s = until_s

    def __len__(self) -> int:
        return len(self._queue)
