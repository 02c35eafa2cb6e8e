"""The two fidelity levels behind one interface: request-level and fluid (fast).

Both keep the counters the simulated Prometheus scrapes (requests arrived, busy slot-seconds)
and the latency histogram; request-level serves every request through RequestServer, fast mode
runs the fluid queue at 1-second steps and labels its latencies as estimates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from simulator.arrivals import iter_arrival_chunks
from simulator.fluid import FluidServer
from simulator.latency import LatencyHistogram
from simulator.serving import RequestServer
from simulator.workload_view import WorkloadView

if TYPE_CHECKING:
    from simulator.replay import ReplayConfig

CHUNK_S = 600.0


class Serving(Protocol):
    arrived: float
    within_slo: float

    @property
    def busy_slot_s(self) -> float: ...

    def add_replica(self, now_s: float) -> int: ...

    def remove_replica(self, rid: int, now_s: float) -> None: ...

    def advance(self, t0_s: float, t1_s: float) -> None: ...

    def latency_percentile_s(self, q: float) -> float: ...

    def latency_cdf_ms(self) -> tuple[np.ndarray, np.ndarray]: ...

    def finish(self) -> None: ...


class _HistogramMixin:
    hist: LatencyHistogram

    def latency_percentile_s(self, q: float) -> float:
        return self.hist.percentile(q)

    def latency_cdf_ms(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.hist.cdf()
        keep = np.concatenate(([True], np.diff(y) > 0))
        return x[keep] * 1e3, y[keep]


def serving_seeds(seed: int) -> tuple[np.random.SeedSequence, ...]:
    """(arrivals, service, routing) seeds of a replay: every policy and the oracle share them."""
    return tuple(np.random.SeedSequence([seed, 1]).spawn(3))


def request_level(view: WorkloadView, routing: str, seed: int
                  ) -> tuple[RequestStream, RequestServer]:
    """The replay's requests and an empty request-level server, from the replay's seed: every
    policy and the oracle's search see the same requests and the same routing draws."""
    arrivals_seed, service_seed, routing_seed = serving_seeds(seed)
    server = RequestServer(view.profile.slots, routing, int(routing_seed.generate_state(1)[0]))
    return RequestStream(view, arrivals_seed, service_seed), server


def fluid_server(view: WorkloadView, routing: str) -> FluidServer:
    """The fluid (fast-mode) model of this workload on this profile."""
    return FluidServer(view.profile.slots, view.service_mean_s, view.service_scv, view.slo_s,
                       view.slo_component_sample_s, routing=routing)


class RequestStream:
    """The replay's requests in time order: arrival, slot occupancy and SLO-counted service."""

    def __init__(self, view: WorkloadView, arrivals_seed: np.random.SeedSequence,
                 service_seed: np.random.SeedSequence) -> None:
        self.view = view
        self._chunks = iter_arrival_chunks(view.trace, view.start_s, view.end_s,
                                           np.random.default_rng(arrivals_seed), CHUNK_S)
        self._service_rng = np.random.default_rng(service_seed)
        trace = view.trace
        self._req_index = (int(np.searchsorted(trace.arrivals_s, view.start_s, "left"))
                           if trace.arrivals_s is not None else 0)
        empty = np.zeros(0)
        self._arr, self._occ, self._slo = empty, empty, empty
        self._pos = 0
        self._exhausted = False

    def _refill(self) -> bool:
        if self._exhausted:
            return False
        try:
            arr = next(self._chunks)
        except StopIteration:
            self._exhausted = True
            return False
        trace, n = self.view.trace, len(arr)
        prompt = output = None
        if trace.arrivals_s is not None and trace.has_tokens:
            sl = slice(self._req_index, self._req_index + n)
            prompt, output = trace.prompt_tokens[sl], trace.output_tokens[sl]
        self._req_index += n
        sample = self.view.profile.sample_service(self._service_rng, n, prompt, output)
        self._arr = np.concatenate([self._arr[self._pos:], arr])
        self._occ = np.concatenate([self._occ[self._pos:], sample.occupancy_s])
        self._slo = np.concatenate([self._slo[self._pos:], sample.slo_s])
        self._pos = 0
        return True

    def take(self, t1_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The requests arriving before t1_s not taken yet."""
        while (self._pos >= len(self._arr) or self._arr[-1] < t1_s) and self._refill():
            pass
        j = int(np.searchsorted(self._arr, t1_s, "left"))
        sl = slice(self._pos, j)
        self._pos = j
        return self._arr[sl], self._occ[sl], self._slo[sl]


class RequestServing(_HistogramMixin):
    """Every request queued and served; latency measured per request."""

    def __init__(self, view: WorkloadView, config: ReplayConfig, seed: int) -> None:
        self.slo_s = view.slo_s
        self.stream, self.server = request_level(view, config.routing, seed)
        empty = np.zeros(0)
        self._held = (empty, empty, empty)
        self.arrived = 0.0
        self.within_slo = 0.0
        self.hist = LatencyHistogram()
        self._routable = 0

    @property
    def busy_slot_s(self) -> float:
        return float(self.server.work_started_s.sum())

    def add_replica(self, now_s: float) -> int:
        self._routable += 1
        return self.server.add_replica(now_s)

    def remove_replica(self, rid: int, now_s: float) -> None:
        self._routable -= 1
        self.server.remove_replica(rid, now_s)

    def advance(self, t0_s: float, t1_s: float) -> None:
        arr, occ, slo = self.stream.take(t1_s)
        self.arrived += len(arr)
        if self._held[0].size:
            arr, occ, slo = (np.concatenate([h, x]) for h, x in zip(self._held, (arr, occ, slo),
                                                                     strict=True))
            self._held = (arr[:0], occ[:0], slo[:0])
        if not arr.size:
            return
        if self._routable == 0:
            self._held = (arr, occ, slo)
            return
        start, _ = self.server.serve(arr, occ)
        latency = start - arr + slo
        self.within_slo += float(np.count_nonzero(latency <= self.slo_s))
        self.hist.add(latency)

    def finish(self) -> None:
        """Requests still held when the replay ends never got a replica: SLO misses."""
        if self._held[0].size:
            self.hist.add(np.full(self._held[0].size, np.inf))


class FastServing(_HistogramMixin):
    """The fluid queue at 1-second steps; latencies are model estimates."""

    def __init__(self, view: WorkloadView, config: ReplayConfig) -> None:
        self.fluid = fluid_server(view, config.routing)
        self.per_s = view.per_second
        self.cum = np.concatenate(([0.0], np.cumsum(self.per_s)))
        self.start_s = view.start_s
        self._i = 0
        self._ready = 0
        self._next_id = 0
        self.arrived = 0.0

    @property
    def hist(self) -> LatencyHistogram:  # type: ignore[override]
        return self.fluid.histogram

    @property
    def within_slo(self) -> float:  # type: ignore[override]
        return self.fluid.within_slo

    @property
    def busy_slot_s(self) -> float:
        return self.fluid.busy_slot_s

    def add_replica(self, now_s: float) -> int:
        self._ready += 1
        self._next_id += 1
        return self._next_id - 1

    def remove_replica(self, rid: int, now_s: float) -> None:
        self._ready -= 1

    def advance(self, t0_s: float, t1_s: float) -> None:
        i1 = min(len(self.per_s), int(t1_s - self.start_s + 1e-9))
        if i1 > self._i:
            self.fluid.step(self.per_s[self._i:i1], self._ready)
            self._i = i1
        self.arrived = float(self.cum[self._i])

    def resume_at(self, steps_served: int, ready_replicas: int, replicas_added: int) -> None:
        """Take over a replay served outside this object (its fluid model already advanced):
        the first steps_served 1 s steps are served, ready_replicas are ready, and
        replicas_added replica ids were handed out (the next add_replica returns that id)."""
        self._i = int(steps_served)
        self.arrived = float(self.cum[self._i])
        self._ready = int(ready_replicas)
        self._next_id = int(replicas_added)

    def serve_timeline(self, times_s: np.ndarray, ready: np.ndarray, end_s: float) -> None:
        """Serve every step up to end_s in one compiled call, given the ready count after each
        change (times_s ascending, as the cluster's timeline records them). For a replay whose
        replica set does not depend on what was served (the oracle's plan): the same steps and
        counts as advancing at every event, since an event at t is applied before step
        int(t - start) and the steps before it were served with the count before it."""
        n = min(len(self.per_s), int(end_s - self.start_s + 1e-9))
        if n <= self._i:
            return
        idx = (np.asarray(times_s, dtype=np.float64) - self.start_s + 1e-9).astype(np.int64)
        # run r of steps [begin[r], end[r]) has count[r]: the last change applied before it
        begin = np.concatenate(([self._i], np.clip(idx, self._i, n))) - self._i
        count = np.concatenate(([0], np.asarray(ready, dtype=np.int64)))
        end = np.append(begin[1:], n - self._i)
        keep = end > begin
        self.fluid.step_runs(self.per_s[self._i:n], end[keep], count[keep])
        self._i = n
        self.arrived = float(self.cum[n])

    def finish(self) -> None:
        """Held arrivals that never got capacity already count as misses in the fluid model."""
