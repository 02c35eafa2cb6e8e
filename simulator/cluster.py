"""The simulated workload: pods that start cold, become ready, serve, and are deleted.

A Deployment-like set of pods driven to `spec_replicas`. Pods are billed from creation (they
hold a GPU while pulling the image and loading weights) until they are deleted. Deletion
follows the ReplicaSet controller's preference: pods that are not ready go first, newest first,
then ready pods, newest first. Every creation-to-ready time is recorded: that is the lead time
a live controller measures from pod conditions.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulator.engine import Engine


@dataclass(eq=False)  # identity: pods are removed from lists by identity, not by value
class Pod:
    """One replica. ready_at_s is when it will be (or became) Ready."""

    pid: int
    created_s: float
    ready_at_s: float
    ready: bool = False
    deleted_s: float | None = None
    replaced_by: Pod | None = None  # the ReplicaSet's replacement after a failure


class Cluster:
    """Pods of one workload on the engine's virtual clock."""

    def __init__(self, engine: Engine, cold_start_s: Callable[[], float],
                 on_ready: Callable[[Pod, float], None],
                 on_delete: Callable[[Pod, float], None],
                 time_to_failure_s: Callable[[], float] | None = None) -> None:
        self._engine = engine
        self._time_to_failure_s = time_to_failure_s
        self.failures = 0
        self._cold_start_s = cold_start_s
        self._on_ready = on_ready
        self._on_delete = on_delete
        self._next_pid = 0
        self.pods: list[Pod] = []  # live pods, creation order
        self.spec_replicas = 0
        self.billed_pod_s = 0.0
        self.cold_starts_s: list[float] = []
        self.scale_events = 0
        self.pods_created = 0
        # (time, ready, total) after every change, for plots and under-provisioning.
        self.timeline: list[tuple[float, int, int]] = []
        self._ready_times: list[float] = []  # ready_at_s of the ready pods, ascending

    # -- queries ---------------------------------------------------------------------------
    @property
    def ready_count(self) -> int:
        return len(self._ready_times)

    @property
    def total_count(self) -> int:
        return len(self.pods)

    def ready_since(self, at_or_before_s: float) -> int:
        """Ready pods that have been ready since at_or_before_s (have a full metric window)."""
        return bisect.bisect_right(self._ready_times, at_or_before_s)

    # -- actions ---------------------------------------------------------------------------
    def start_ready(self, n: int, now_s: float) -> None:
        """Pods that already run when the replay starts (warm start): ready now."""
        for _ in range(n):
            pod = self._new_pod(now_s, now_s)
            self._mark_ready(pod)
            self._on_ready(pod, now_s)
            self._arm_failure(pod)
        self.spec_replicas = len(self.pods)
        self._record(now_s)

    def scale_to(self, replicas: int, now_s: float) -> None:
        """Set spec.replicas: create cold pods or delete pods in the ReplicaSet's order."""
        replicas = max(0, int(replicas))
        if replicas == self.spec_replicas:
            return
        self.scale_events += 1
        self.spec_replicas = replicas
        while len(self.pods) < replicas:
            cold = float(self._cold_start_s())
            pod = self._new_pod(now_s, now_s + cold)
            self._engine.schedule(pod.ready_at_s, self._become_ready, pod)
        if len(self.pods) > replicas:
            order = sorted(self.pods, key=lambda p: (p.ready, -p.created_s, -p.pid))
            for pod in order[: len(self.pods) - replicas]:
                self._delete(pod, now_s)
        self._record(now_s)

    def start_at(self, created_s: float, ready_at_s: float) -> Pod:
        """Create a pod now that becomes ready at ready_at_s (used by the oracle's plan)."""
        pod = self._new_pod(created_s, ready_at_s)
        self.spec_replicas = len(self.pods)
        self._engine.schedule(ready_at_s, self._become_ready, pod)
        self._record(created_s)
        return pod

    def delete(self, pod: Pod, now_s: float) -> None:
        """Delete one given pod (used by the oracle's plan), or the pod that replaced it."""
        while pod.deleted_s is not None and pod.replaced_by is not None:
            pod = pod.replaced_by
        if pod.deleted_s is not None:
            return
        self._delete(pod, now_s)
        self.spec_replicas = len(self.pods)
        self._record(now_s)

    def finish(self, end_s: float) -> None:
        """Bill the pods still alive at the end of the replay."""
        for pod in self.pods:
            self.billed_pod_s += end_s - pod.created_s
        self._record(end_s)

    def next_cold_start_s(self) -> float:
        """The next draw of the cluster's cold-start stream (the one scale_to and failures
        take), for a caller that creates the pods itself and then hands them over (``adopt``)."""
        return self._cold_start_s()

    def adopt(self, pods: list[Pod], timeline: list[tuple[float, int, int]], spec_replicas: int,
              billed_pod_s: float, cold_starts_s: list[float], scale_events: int,
              pods_created: int) -> None:
        """Take over the state a replay computed outside the engine: the live pods (creation
        order), the timeline of changes and the counters; pod ids continue after
        pods_created, and the ready pods' ready times are derived from the pods."""
        self.pods = pods
        self.timeline = timeline
        self.spec_replicas = spec_replicas
        self.billed_pod_s = billed_pod_s
        self.cold_starts_s = cold_starts_s
        self.scale_events = scale_events
        self.pods_created = self._next_pid = pods_created
        self._ready_times = sorted(p.ready_at_s for p in pods if p.ready)

    # -- internals -------------------------------------------------------------------------
    def _new_pod(self, created_s: float, ready_at_s: float) -> Pod:
        pod = Pod(self._next_pid, created_s, ready_at_s)
        self._next_pid += 1
        self.pods_created += 1
        self.pods.append(pod)
        return pod

    def _become_ready(self, pod: Pod) -> None:
        if pod.deleted_s is not None:
            return
        self._mark_ready(pod)
        self.cold_starts_s.append(pod.ready_at_s - pod.created_s)
        self._on_ready(pod, pod.ready_at_s)
        self._record(pod.ready_at_s)
        self._arm_failure(pod)

    def _arm_failure(self, pod: Pod) -> None:
        if self._time_to_failure_s is not None:
            self._engine.schedule(pod.ready_at_s + self._time_to_failure_s(), self._fail, pod)

    def _fail(self, pod: Pod) -> None:
        """A ready pod dies (node loss, OOM, GPU XID error): it leaves the endpoints at once and
        the ReplicaSet replaces it with a new cold pod. Requests it already holds are assumed
        to finish (or to be retried elsewhere at once): the failure costs capacity, not work."""
        if pod.deleted_s is not None:
            return
        now_s = self._engine.now_s
        self.failures += 1
        self._delete(pod, now_s)
        cold = float(self._cold_start_s())
        new = self._new_pod(now_s, now_s + cold)
        pod.replaced_by = new
        self._engine.schedule(new.ready_at_s, self._become_ready, new)
        self._record(now_s)

    def _delete(self, pod: Pod, now_s: float) -> None:
        pod.deleted_s = now_s
        self.pods.remove(pod)
        self.billed_pod_s += now_s - pod.created_s
        if pod.ready:
            del self._ready_times[bisect.bisect_left(self._ready_times, pod.ready_at_s)]
            self._on_delete(pod, now_s)

    def _mark_ready(self, pod: Pod) -> None:
        pod.ready = True
        bisect.insort(self._ready_times, pod.ready_at_s)

    def _record(self, now_s: float) -> None:
        self.timeline.append((now_s, self.ready_count, len(self.pods)))


def cold_start_stream(sample: Callable[[np.random.Generator, int], np.ndarray],
                      rng: np.random.Generator, block: int = 256) -> Callable[[], float]:
    """A callable returning successive cold-start draws, sampled in blocks for speed."""
    buf: list[float] = []

    def draw() -> float:
        if not buf:
            buf.extend(reversed(sample(rng, block).tolist()))
        return buf.pop()

    return draw
