"""A compiled twin of Replay.run for the `hpa` policy in fast mode; tests hold it bit-identical
to the event path (tests/test_sim_fast_hpa.py).

Rule: the same replay as the event-by-event loop (simulator/replay.py with the Python engine),
in one numba call: the events run in the engine's order (pod-ready events before a tick at the
same time, ties in creation order); before each event the fluid queue is served up to it with
the ready count before it and the ready pod-seconds are accrued; at each tick the counters are
scraped, the observation is grouped as Replay._observe does (pods with a full metric window,
unready, missing), the HPA rule of policies/hpa.py `hpa_desired` decides (compiled in
simulator/fast_hpa_rule.py), and the cluster scales as Cluster.scale_to does (cold starts from the cluster's own stream in the same order; deletions
not-ready first, newest first). Every float is computed with the same operations in the same
order as the Python path, so the results are equal, not merely close.

Replays it does not model exactly fall back to the event path (`applies` is False): request
fidelity, pod failures, recorded decisions, policies other than `hpa`, an External metric.
The HPA's reasons are small ints in the kernel and are mapped back to the same strings.
The Erlang C entries the fluid model reads are filled lazily by erlang.py's one function, as
on the event path. Deterministic; it reads nothing but its arguments.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from policies.hpa import HPAConfig, HPAState
from simulator.cluster import Pod
from simulator.erlang import _shared_ctab
from simulator.fast_hpa_rule import REASONS, _hpa_arrays, _hpa_sync, _policies_supported
from simulator.fluid import _BUSY, FluidServer, _fluid_kernel
from simulator.results import PolicyResult
from simulator.serve_modes import FastServing

if TYPE_CHECKING:
    from simulator.replay import Replay

# fast_hpa_rule.py's HPA rule, fluid.py's kernel and state layout and erlang.py's Erlang C are
# compiled INTO this module's cached code, and numba's cache only watches this file (numba issue
# 1833): after editing any of them, delete simulator/__pycache__/fast_hpa.* (and fluid.* after
# an edit of erlang.py); tests/test_sim_fast_hpa.py fails until then, and says so.

_MAX_ROWS = 4096  # Erlang C rows (one per ready count) beyond which the event path runs


# -- the cluster (simulator/cluster.py) and the replay loop (simulator/replay.py) ------------
# cluster counters (cs, int64) and clocks (fs, float64), by slot
(_N_LIVE, _N_READY, _N_PODS, _N_DRAWN, _N_PENDING, _SPEC, _SCALE_EVENTS, _N_COLD, _N_TL,
 _I_STEP) = range(10)
_LAST_T, _READY_POD_S, _BILLED = range(3)


@njit(cache=True)
def _timeline(tl, cs, now_s):
    """Cluster._record: (time, ready, total) after a change."""
    k = cs[_N_TL]
    tl[0][k], tl[1][k], tl[2][k] = now_s, cs[_N_READY], cs[_N_LIVE]
    cs[_N_TL] = k + 1


@njit(cache=True)
def _advance(t_s, cs, fs, per_s, start_s, slots, pooled, ctab2d, fluid):
    """Replay._advance: accrue ready pod-seconds and serve the fluid queue up to t_s with the
    ready count before the event (FastServing.advance: whole 1 s steps only)."""
    if t_s <= fs[_LAST_T]:
        return
    ready = cs[_N_READY]
    fs[_READY_POD_S] += ready * (t_s - fs[_LAST_T])
    i0 = cs[_I_STEP]
    i1 = min(per_s.shape[0], int(t_s - start_s + 1e-9))
    if i1 > i0:
        n_total = ready * slots
        n_eff = max(n_total if pooled else slots, 1)
        f_tab, h_tab, s_q, params, counts, state = fluid
        _fluid_kernel(per_s[i0:i1], n_total, n_eff, ctab2d[ready if pooled else 0], f_tab,
                      h_tab, s_q, params, counts, state)
        cs[_I_STEP] = i1
    fs[_LAST_T] = t_s


@njit(cache=True)
def _scale_to(replicas, now_s, cs, fs, pods, draws, tl):
    """Cluster.scale_to; False when the cold-start draws ran out (the caller draws more)."""
    created, ready_at, is_ready, deleted, live, pending = pods
    replicas = max(0, replicas)
    if replicas == cs[_SPEC]:
        return True
    cs[_SCALE_EVENTS] += 1
    cs[_SPEC] = replicas
    while cs[_N_LIVE] < replicas:
        if cs[_N_DRAWN] >= draws.shape[0]:
            return False
        cold = draws[cs[_N_DRAWN]]
        cs[_N_DRAWN] += 1
        pid = cs[_N_PODS]
        cs[_N_PODS] += 1
        created[pid], ready_at[pid] = now_s, now_s + cold
        live[cs[_N_LIVE]] = pid
        cs[_N_LIVE] += 1
        pending[cs[_N_PENDING]] = pid
        cs[_N_PENDING] += 1
    extra = cs[_N_LIVE] - replicas
    if extra > 0:
        # the ReplicaSet's order: pods not ready first, then ready ones, newest first (live
        # holds pids in creation order, and creation times never decrease with the pid)
        for want_ready in (False, True):
            for j in range(cs[_N_LIVE] - 1, -1, -1):
                pid = live[j]
                if extra > 0 and not deleted[pid] and is_ready[pid] == want_ready:
                    deleted[pid] = True
                    fs[_BILLED] += now_s - created[pid]
                    if want_ready:
                        cs[_N_READY] -= 1
                    extra -= 1
        n = 0
        for j in range(cs[_N_LIVE]):
            if not deleted[live[j]]:
                live[n] = live[j]
                n += 1
        cs[_N_LIVE] = n
    _timeline(tl, cs, now_s)
    return True


@njit(cache=True)
def _next_ready(cs, pods):
    """(index in pending, pid) of the next pod-ready event: by time, then creation order."""
    ready_at, pending = pods[1], pods[5]
    best_k, best = -1, -1
    for k in range(cs[_N_PENDING]):
        p = pending[k]
        if best < 0 or ready_at[p] < ready_at[best] or (ready_at[p] == ready_at[best]
                                                        and p < best):
            best_k, best = k, p
    return best_k, best


@njit(cache=True)
def _become_ready(k, pid, cs, pods, cold_out, ready_pids, tl):
    """Cluster._become_ready (the event of a pod deleted before it was ready does nothing);
    ready_pids keeps the order pods became ready in (the order serving hands out ids)."""
    created, ready_at, is_ready, deleted, live, pending = pods
    cs[_N_PENDING] -= 1
    pending[k] = pending[cs[_N_PENDING]]
    if deleted[pid]:
        return
    is_ready[pid] = True
    cs[_N_READY] += 1
    cold_out[cs[_N_COLD]] = ready_at[pid] - created[pid]
    ready_pids[cs[_N_COLD]] = pid
    cs[_N_COLD] += 1
    _timeline(tl, cs, ready_at[pid])


@njit(cache=True)
def _observe(t_s, cs, pods, store, pipe, slots):
    """Replay._observe's PodMetrics: (with a metric, their util sum, unready, missing)."""
    t0, interval, lag, rate_window, n_win = pipe
    s_req, s_busy, s_pods, s_count = store
    ready, total = cs[_N_READY], cs[_N_LIVE]
    # ScrapeStore.window / utilization
    last = min(int((t_s - lag - t0) // interval + 1e-9), s_count[0] - 1)
    util, has_util = 0.0, False
    if last >= 0:
        first = max(last - n_win, 0)
        if last > first:
            pod_s = s_pods[last] - s_pods[first]
            if pod_s > 0:
                util = min(1.0, (s_busy[last] - s_busy[first]) / (pod_s * slots))
                has_util = True
    if not has_util:
        return 0, 0.0, total - ready, ready
    # Cluster.ready_since: ready pods with a full metric window
    full_window_since = t_s - lag - rate_window / 2
    created, ready_at, is_ready, deleted, live, pending = pods
    with_metrics = 0
    for j in range(total):
        pid = live[j]
        if is_ready[pid] and ready_at[pid] <= full_window_since:
            with_metrics += 1
    return with_metrics, util * with_metrics, total - ready, ready - with_metrics


@njit(cache=True)
def _replay(per_s, cum, span, tick_s, cap_rps, slots, pooled, ctab2d, fluid, store, pipe,
            n_initial, draws, hi, hf, pol):
    """The whole replay; returns (ok, per-tick arrays, reasons, cluster, clocks, histories).
    ok is False when the cold-start draws ran out: nothing returned is then meaningful."""
    start_s, end_s = span
    n_ticks_max = int(math.ceil((end_s - start_s) / tick_s)) + 2
    max_pods = n_initial + draws.shape[0]
    pods = (np.zeros(max_pods), np.zeros(max_pods), np.zeros(max_pods, dtype=np.bool_),
            np.zeros(max_pods, dtype=np.bool_), np.zeros(max_pods, dtype=np.int64),
            np.zeros(max_pods, dtype=np.int64))
    n_tl = n_ticks_max + max_pods + 2
    tl = (np.zeros(n_tl), np.zeros(n_tl, dtype=np.int64), np.zeros(n_tl, dtype=np.int64))
    cold_out = np.zeros(max_pods)
    ready_pids = np.zeros(max_pods, dtype=np.int64)
    tick = (np.zeros(n_ticks_max), np.zeros(n_ticks_max), np.zeros(n_ticks_max),
            np.zeros(n_ticks_max))
    reasons = np.zeros(len(REASONS), dtype=np.int64)
    first_seen = np.full(len(REASONS), -1, dtype=np.int64)
    recs = (np.zeros(n_ticks_max), np.zeros(n_ticks_max, dtype=np.int64),
            np.zeros(2, dtype=np.int64))
    ev = (np.zeros(n_ticks_max), np.zeros(n_ticks_max, dtype=np.int64),
          np.zeros(2, dtype=np.int64), np.zeros(n_ticks_max),
          np.zeros(n_ticks_max, dtype=np.int64), np.zeros(2, dtype=np.int64))
    init = np.zeros(1, dtype=np.int64)
    cs = np.zeros(10, dtype=np.int64)
    fs = np.zeros(3)
    fs[_LAST_T] = start_s
    # Cluster.start_ready: the warm pods run and are ready at the start
    created, ready_at, is_ready, deleted, live, pending = pods
    for pid in range(n_initial):
        created[pid], ready_at[pid], is_ready[pid], live[pid] = start_s, start_s, True, pid
    cs[_N_LIVE] = cs[_N_READY] = cs[_N_PODS] = cs[_SPEC] = n_initial
    _timeline(tl, cs, start_s)
    s_req, s_busy, s_pods, s_count = store
    state = fluid[5]
    under_s, arrived_at_tick, n_ticks, last_desired = 0.0, 0.0, 0, -1
    t_tick = start_s + tick_s
    while True:
        k, pid = _next_ready(cs, pods)
        if pid >= 0 and ready_at[pid] < end_s and (t_tick >= end_s or ready_at[pid] <= t_tick):
            # a pod-ready event at a tick's time was scheduled before that tick: it runs first
            _advance(ready_at[pid], cs, fs, per_s, start_s, slots, pooled, ctab2d, fluid)
            _become_ready(k, pid, cs, pods, cold_out, ready_pids, tl)
            continue
        if t_tick >= end_s:
            break
        t_s = t_tick
        _advance(t_s, cs, fs, per_s, start_s, slots, pooled, ctab2d, fluid)
        # Replay._tick: scrape, true demand, observe, decide, scale
        si = int(np.rint((t_s - pipe[0]) / pipe[1]))
        arrived = cum[cs[_I_STEP]]
        s_req[si], s_busy[si], s_pods[si] = arrived, state[_BUSY], fs[_READY_POD_S]
        s_count[0] = si + 1
        demand = (arrived - arrived_at_tick) / tick_s
        arrived_at_tick = arrived
        ready = cs[_N_READY]
        if demand > ready * cap_rps:
            under_s += tick_s
        ready_n, util_sum, unready, missing = _observe(t_s, cs, pods, store, pipe, slots)
        desired, reason = _hpa_sync(hi, hf, pol, recs, ev, init, cs[_SPEC], ready_n, util_sum,
                                    unready, missing, t_s)
        reasons[reason] += 1
        if first_seen[reason] < 0:
            first_seen[reason] = n_ticks
        last_desired = desired
        if not _scale_to(desired, t_s, cs, fs, pods, draws, tl):
            return (False, n_ticks, tick, reasons, first_seen, cs, fs, pods, cold_out,
                    ready_pids, tl, under_s, arrived_at_tick, last_desired, recs, ev, init)
        tick[0][n_ticks], tick[1][n_ticks] = t_s, ready
        tick[2][n_ticks], tick[3][n_ticks] = cs[_N_LIVE], demand
        n_ticks += 1
        t_tick = t_s + tick_s
    _advance(end_s, cs, fs, per_s, start_s, slots, pooled, ctab2d, fluid)
    # Cluster.finish: bill the pods alive at the end, in creation order
    for j in range(cs[_N_LIVE]):
        fs[_BILLED] += end_s - created[live[j]]
    _timeline(tl, cs, end_s)
    return (True, n_ticks, tick, reasons, first_seen, cs, fs, pods, cold_out, ready_pids, tl,
            under_s, arrived_at_tick, last_desired, recs, ev, init)


# -- the Python side: when it applies, running, unpacking --------------------------------------
def applies(replay: Replay) -> bool:
    """Whether the compiled twin reproduces this replay exactly; else the event path runs."""
    cfg, hpa = replay.cfg, replay.hpa_cfg
    return (replay.compiled and cfg.fidelity == "fast"
            and replay.spec.name == "hpa" and hpa is not None and replay.predictive is None
            and not replay.is_oracle and cfg.pod_mtbf_s is None
            and replay.decisions is None and isinstance(replay.serving, FastServing)
            and hpa.target_utilization is not None and hpa.target_rps_per_replica is None
            and _policies_supported(hpa)
            and _ctab_rows(replay.serving.fluid, hpa, replay.initial_replicas()) <= _MAX_ROWS
            and len(replay.engine) == 0 and not replay.cluster.pods)


def _ctab_rows(fluid: FluidServer, hpa: HPAConfig, initial: int) -> int:
    """Erlang C rows the kernel may index: one per ready count up to the most pods there can
    be (pooled routing), else the one row of a single replica's slots."""
    if not fluid.pooled:
        return 1
    return max(initial, hpa.max_replicas, hpa.min_replicas) + 1


def _history(ts: np.ndarray, vs: np.ndarray, ht: np.ndarray) -> tuple[tuple[float, int], ...]:
    return tuple(zip(ts[ht[0]:ht[1]].tolist(), vs[ht[0]:ht[1]].tolist(), strict=True))


def run(replay: Replay) -> PolicyResult:
    """Replay.run for the cases `applies` accepts: the same result, and the Replay left as the
    event path leaves it (counters, store, cluster, serving, reasons, per-tick trace)."""
    cfg, view, store = replay.cfg, replay.view, replay.store
    serving = replay.serving
    assert isinstance(serving, FastServing) and replay.hpa_cfg is not None
    fluid = serving.fluid
    initial = replay.initial_replicas()
    view.seed_store(store, initial)
    slots, pooled = fluid.slots_per_replica, fluid.pooled
    # one lazily filled Erlang C row per ready count, shared with every fluid model (as
    # FluidServer.step_runs does): entries are pure functions of the row, whoever fills them
    rows = range(_ctab_rows(fluid, replay.hpa_cfg, initial))
    shared = [_shared_ctab(max(r * slots if pooled else slots, 1), fluid.max_utilization)
              for r in rows]
    ctab2d = np.stack(shared)
    hi, hf, pol = _hpa_arrays(replay.hpa_cfg)
    pipe = (store.t0_s, cfg.pipeline.scrape_interval_s, cfg.pipeline.query_lag_s,
            cfg.pipeline.rate_window_s,
            int(round(cfg.pipeline.rate_window_s / cfg.pipeline.scrape_interval_s)))
    # The cluster's own cold-start stream, so the draws are those the event path would take,
    # in the same order; drawn ahead in a block, and more (then a rerun) if the replay needs it.
    draw = replay.cluster.next_cold_start_s
    n_ticks = int(math.ceil(cfg.duration_s / cfg.tick_s))
    draws = np.array([draw() for _ in range(max(256, n_ticks // 8))], dtype=np.float64)
    while True:
        state, counts = fluid.state_snapshot()
        s_store = (store.requests.copy(), store.busy_slot_s.copy(), store.ready_pod_s.copy(),
                   np.array([store.count], dtype=np.int64))
        out = _replay(serving.per_s, serving.cum, (cfg.start_s, cfg.end_s), cfg.tick_s,
                      view.capacity_rps_per_replica, slots, pooled, ctab2d,
                      (*fluid.kernel_inputs(), counts, state),
                      s_store, pipe, initial, draws, hi, hf, pol)
        if out[0]:
            break
        draws = np.concatenate([draws, [draw() for _ in range(draws.size)]])
    for row, tab in enumerate(shared):  # keep what the kernel filled for the next replays
        tab[:] = ctab2d[row]
    return _unpack(replay, out, initial, counts, state, s_store)


def _unpack(replay: Replay, out: tuple, initial: int, counts: np.ndarray, state: np.ndarray,
            s_store: tuple[np.ndarray, ...]) -> PolicyResult:
    """Leave the Replay, its cluster, store and serving as the event path leaves them, and
    return the Replay's result."""
    (_, n_ticks, tick, reasons, first_seen, cs, fs, pods, cold_out, ready_pids, tl, under_s,
     arrived_at_tick, last_desired, recs, ev, init) = out
    cfg, serving, store, cluster = replay.cfg, replay.serving, replay.store, replay.cluster
    assert isinstance(serving, FastServing)
    serving.fluid.load_state(state, counts)
    # serving handed out one replica id per pod that became ready: the warm pods (pids
    # 0..initial-1) at the start, then the others in the order they became ready
    ready_order = [*range(initial), *ready_pids[:cs[_N_COLD]].tolist()]
    serving.resume_at(int(cs[_I_STEP]), int(cs[_N_READY]), len(ready_order))
    store.requests[:], store.busy_slot_s[:], store.ready_pod_s[:] = s_store[:3]
    store.count = int(s_store[3][0])
    replay.engine.now_s = cfg.end_s
    # the cluster: counters, cold starts, timeline and the pods still alive
    created, ready_at, is_ready, _, live, _ = pods
    n_tl = int(cs[_N_TL])
    pods_alive = [Pod(int(p), float(created[p]), float(ready_at[p]), bool(is_ready[p]))
                  for p in live[:cs[_N_LIVE]].tolist()]
    cluster.adopt(pods_alive,
                  list(zip(tl[0][:n_tl].tolist(), tl[1][:n_tl].tolist(), tl[2][:n_tl].tolist(),
                           strict=True)),
                  spec_replicas=int(cs[_SPEC]), billed_pod_s=float(fs[_BILLED]),
                  cold_starts_s=cold_out[:cs[_N_COLD]].tolist(),
                  scale_events=int(cs[_SCALE_EVENTS]), pods_created=int(cs[_N_PODS]))
    # the HPA: its reasons in the order they first appeared, its last count and its state
    order = sorted(np.flatnonzero(reasons).tolist(), key=lambda r: first_seen[r])
    replay.reasons.update({REASONS[r]: int(reasons[r]) for r in order})
    replay.hpa_replicas = None if last_desired < 0 else int(last_desired)
    replay.hstate = HPAState(_history(*recs), _history(*ev[:3]), _history(*ev[3:]),
                             bool(init[0]))
    # the loop's accumulators, and the serving replica id of each pod still ready
    rid = {pid: i for i, pid in enumerate(ready_order)}
    return replay.finish_with(
        float(fs[_LAST_T]), float(fs[_READY_POD_S]), float(under_s), float(arrived_at_tick),
        {p.pid: rid[p.pid] for p in pods_alive if p.ready}, tick[0][:n_ticks].copy(),
        np.column_stack([tick[1][:n_ticks], tick[2][:n_ticks], tick[3][:n_ticks],
                         np.zeros(n_ticks)]))
