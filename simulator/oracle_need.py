"""The oracle's replica need per interval, found by trying counts on the TRUE demand.

Interval by interval (15 s, the control tick), the oracle tries replica counts on the very
requests of that interval, starting from the queue the previous intervals left, and keeps the
fewest that serve the interval within the SLO: at least (1 - max_miss) of the requests that any
capacity could serve in time (a request whose SLO-counted service alone exceeds the SLO is a
miss for everyone). Request fidelity tries them on the request-level server with the replay's
own arrivals and service times; fast fidelity on the fluid model with the replay's per-second
demand. Replicas it adds are ready at the interval's start (the plan starts them one realized
cold start earlier); replicas it drops are the newest, as the ReplicaSet would. Knowing the
future is the oracle's privilege; no policy sees any of this.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.serve_modes import fluid_server, request_level
from simulator.workload_view import WorkloadView


def _start_count(rate_rps: float, view: WorkloadView, previous: int) -> int:
    """Where the search starts: below 100 % utilization no count can keep up for long."""
    floor = math.floor(rate_rps * view.service_mean_s / view.profile.slots)
    return max(1, min(previous, floor) if previous else floor)


def need_request_level(view: WorkloadView, interval_s: float, max_miss: float,
                       max_replicas: int, seed: int, routing: str) -> np.ndarray:
    """Per-interval need, tried on the request-level server (same requests as the replays)."""
    stream, server = request_level(view, routing, seed)
    live: list[int] = []
    n_int = int(math.ceil((view.end_s - view.start_s) / interval_s - 1e-9))
    need = np.zeros(n_int, dtype=np.int64)
    held = (np.zeros(0), np.zeros(0), np.zeros(0))
    previous = 0
    slo = view.slo_s
    for k in range(n_int):
        t0 = view.start_s + k * interval_s
        arr, occ, part = (np.concatenate(x) for x in zip(held, stream.take(t0 + interval_s),
                                                            strict=True))
        feasible = int(np.count_nonzero(part <= slo))
        n = _start_count(arr.size / interval_s, view, previous)
        while True:
            trial, trial_live = server.copy(), list(live)
            while len(trial_live) < n:
                trial_live.append(trial.add_replica(t0))
            while len(trial_live) > n:
                trial.remove_replica(trial_live.pop(), t0)
            if arr.size == 0:
                ok = True
            else:
                start, _ = trial.serve(arr, occ)
                within = int(np.count_nonzero(start - arr + part <= slo))
                ok = within >= feasible - max_miss * arr.size
            if ok or n >= max_replicas:
                break
            n += 1
        server, live, previous = trial, trial_live, n
        need[k] = n
        held = (arr[:0], occ[:0], part[:0])
    return need


def need_fast(view: WorkloadView, interval_s: float, max_miss: float, max_replicas: int,
              routing: str) -> np.ndarray:
    """Per-interval need, tried on the fluid model with the per-second demand."""
    return fluid_server(view, routing).search_need(view.per_second, interval_s, max_replicas,
                                                   max_miss)
