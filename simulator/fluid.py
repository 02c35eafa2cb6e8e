"""Fast mode: a fluid queue at 1-second steps, with ESTIMATED latencies.

Rule, per 1 s step with a arrivals and n = replicas * slots busy-able slots (service rate
mu = n / service_mean_s requests/s):
- fluid FCFS backlog: B' = max(0, B + a - mu); an arrival at time t in the step waits
  d(t) = B(t) / mu behind the backlog, B(t) = max(0, B + (a - mu) t) (averaged over 4 points in
  steps with a backlog);
- plus the stationary queueing delay W at the step's utilization rho = min(a / mu,
  max_utilization): M/M/n Erlang C for P(W > 0) = C, with an exponential conditional wait of mean
  theta = (1 + scv) / 2 * service_mean_s / (n (1 - rho)) (Allen-Cunneen); for ``random`` routing
  each replica is its own M/M/slots queue (n = slots), for ``lor``/``central`` the pool is one;
- plus the SLO component of service S, drawn from the empirical samples given (service time for
  a plain model, time to first token for an LLM).
A request is within the SLO when d + W + S <= slo_s: the same definition as request mode.
Attainment is computed in closed form per step (tables of F_S and E[exp(-(y - S)/theta); S <= y]);
the latency histogram is fed with a few quasi-random samples per step weighted by the arrivals
and is marked ``estimated``. Arrivals while no replica is ready are held and charged their wait
when capacity appears (never when it does not: they count as misses). Pure, deterministic.
The SLO tables are cached per process by the samples' content, the Erlang C tables
(simulator/erlang.py) by the server count: their values are the same whoever computes them first.
A replica schedule known in advance (the oracle's) is served in one compiled call.
"""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np
from numba import njit, prange

from simulator.erlang import _erlang_c_point, _shared_ctab
from simulator.latency import _LOG_LOW, BINS_PER_DECADE, N_BINS, LatencyHistogram

# erlang.py's _erlang_c_point is compiled INTO this module's cached kernels, and numba's cache
# only watches the file a function lives in: after editing erlang.py, delete
# simulator/__pycache__/fluid.* and fast_hpa.* (or all *.nbi / *.nbc there).

_Y_POINTS = 1025  # grid of the remaining budget y = slo - d over [0, slo]
_Z_POINTS = 513  # grid of theta / slo, log-spaced over [1e-3, 1e3] (2.7 % apart)
_LOG_Z0, _LOG_Z1 = math.log(1e-3), math.log(1e3)
_MAX_S_SAMPLES = 20_000
_SUBSTEPS = 4
_TABLE_CACHE_SIZE = 4  # 4 MB each
# state slots
_B, _ARR, _WITHIN, _BUSY, _WAITSUM, _SERVED, _G, _PEND, _PEND_T, _CLOCK, _UNDER = range(11)


@njit(cache=True, parallel=True)
def _h_table(s_sorted, y_grid, theta_grid):
    """H[k, j] = mean over samples of exp(-(y_j - s) / theta_k) * [s <= y_j]. Rows are
    independent: computed on every core, each exactly as alone. Equal samples (service times
    from token counts repeat: a sixth are distinct) share one exp(), still added one by one."""
    n_s, n_y, n_t = s_sorted.shape[0], y_grid.shape[0], theta_grid.shape[0]
    out = np.zeros((n_t, n_y))
    for k in prange(n_t):
        th = theta_grid[k]
        acc, p, prev = 0.0, 0, y_grid[0]
        for j in range(n_y):
            y = y_grid[j]
            acc *= math.exp(-(y - prev) / th)
            while p < n_s and s_sorted[p] <= y:
                term = math.exp(-(y - s_sorted[p]) / th)
                acc += term
                p += 1
                while p < n_s and s_sorted[p] == s_sorted[p - 1]:
                    acc += term
                    p += 1
            out[k, j] = acc / n_s
            prev = y
    return out


@njit(cache=True)
def _fluid_kernel(arrivals, n_total, n_eff, ctab, f_tab, h_tab, s_q, params, counts, state):
    """Advance the fluid queue over arrivals (one value per 1 s step) with n_total slots."""
    # Every array is read and written here, in the loop's own body: an array handed to a helper
    # (even an inlined one) costs two atomic reference-count operations per call, which in a
    # loop of a million steps took a third of the time. Helpers here take scalars only.
    mean_s, rho_max, scv_factor, slo = params[0], params[1], params[2], params[3]
    n_samples = int(params[4])
    n_y, n_z = f_tab.shape[0], h_tab.shape[0]
    dz = (_LOG_Z1 - _LOG_Z0) / (n_z - 1)
    n_c, n_q = ctab.shape[0], s_q.shape[0]
    mu = n_total / mean_s
    # the counters live in locals for the loop (written back at the end): the histogram and
    # table writes would otherwise force a reload of every counter at each step
    b, arr, within, busy = state[_B], state[_ARR], state[_WITHIN], state[_BUSY]
    waitsum, served_sum, g = state[_WAITSUM], state[_SERVED], state[_G]
    pend, pend_t, clock, under = state[_PEND], state[_PEND_T], state[_CLOCK], state[_UNDER]
    for i in range(arrivals.shape[0]):
        a = arrivals[i]
        arr += a
        if mu <= 0.0:
            pend += a
            pend_t += a * (clock + 0.5)
            b += a
            clock += 1.0
            under += 1.0
            continue
        rho = min(a / mu, rho_max)
        x = rho / rho_max * (n_c - 1)
        ic = min(int(x), n_c - 2)
        c0, c1 = ctab[ic], ctab[ic + 1]
        if c0 != c0:  # NaN: not computed yet (the table is filled lazily)
            c0 = _erlang_c_point(n_eff, rho_max * ic / (n_c - 1))
            ctab[ic] = c0
        if c1 != c1:
            c1 = _erlang_c_point(n_eff, rho_max * (ic + 1) / (n_c - 1))
            ctab[ic + 1] = c1
        c_wait = c0 + (c1 - c0) * (x - ic)
        theta = scv_factor * mean_s / (n_eff * (1.0 - rho))
        # where theta falls on the H table's grid: the same for every delay of this step, and
        # read only when some requests wait (C > 0; with thousands of slots C is often 0)
        k, v = 0, 0.0
        if c_wait > 0.0:
            fz = (math.log(theta / slo) - _LOG_Z0) / dz
            fz = min(max(fz, 0.0), n_z - 1.000001)
            k = int(fz)
            v = fz - k
        held = pend > 0.0  # held arrivals: at the head of the backlog from now on
        d_held = clock - pend_t / pend + (b - 0.5 * pend) / mu if held else 0.0
        b1 = max(0.0, b + a - mu)
        queued = not (b <= 0.0 and a <= mu)
        # accounting, part 0: the held arrivals; parts 1..: this step's, in 4 sub-steps when
        # a backlog moves during it (wait sum, within-SLO mass)
        for part in range(0 if held else 1, _SUBSTEPS + 1 if queued else 2):
            if part == 0:
                weight, d = pend, d_held
            elif queued:
                weight = a / _SUBSTEPS
                d = max(0.0, b + (a - mu) * (part - 0.5) / _SUBSTEPS) / mu
            else:
                weight, d = a, 0.0
            waitsum += weight * (d + c_wait * theta)
            y = slo - d
            if y >= 0.0:
                fy = y / slo * (n_y - 1)
                j = min(int(fy), n_y - 2)
                w = fy - j
                f = f_tab[j] * (1.0 - w) + f_tab[j + 1] * w
                if c_wait > 0.0:
                    h = (h_tab[k, j] * (1.0 - w) + h_tab[k, j + 1] * w) * (1.0 - v) + (
                        h_tab[k + 1, j] * (1.0 - w) + h_tab[k + 1, j + 1] * w
                    ) * v
                    f -= c_wait * h
                if f > 0.0:
                    within += weight * f
        if queued:
            d_lo, d_hi = b / mu, b1 / mu
            under += 1.0
        else:
            d_lo, d_hi = 0.0, 0.0
        # latency samples, the held arrivals' then this step's: n_samples quasi-random
        # d + W + S each, weighing weight / n_samples (the accounting above touches none of
        # this, so its order relative to it does not matter)
        for part in range(0 if held else 1, 2 if a > 0.0 else 1):
            if n_samples <= 0:
                break
            if part == 0:
                weight, lo, hi = pend, d_held, d_held
            else:
                weight, lo, hi = a, d_lo, d_hi
            each = weight / n_samples
            for s in range(n_samples):
                g += 1.0
                u1 = 0.5 + g * 0.7548776662466927  # R2 low-discrepancy sequence
                u1 -= math.floor(u1)
                u2 = 0.5 + g * 0.5698402909980532
                u2 -= math.floor(u2)
                lat = lo + (hi - lo) * ((s + 0.5) / n_samples)
                if u1 > 1.0 - c_wait:
                    lat += theta * math.log(c_wait / (1.0 - u1))
                lat += s_q[min(int(u2 * n_q), n_q - 1)]
                counts[_histogram_bin(lat)] += each
        if held:
            pend = 0.0
            pend_t = 0.0
        served = b + a - b1
        served_sum += served
        busy += served * mean_s
        b = b1
        clock += 1.0
    state[_B], state[_ARR], state[_WITHIN], state[_BUSY] = b, arr, within, busy
    state[_WAITSUM], state[_SERVED], state[_G] = waitsum, served_sum, g
    state[_PEND], state[_PEND_T], state[_CLOCK], state[_UNDER] = pend, pend_t, clock, under


@njit(cache=True, inline="always")
def _histogram_bin(lat):
    """The latency histogram's bin of a latency (s): log-spaced, bin 0 for <= 0."""
    if lat <= 0.0:
        return 0
    idx = int(math.floor((math.log10(lat) - _LOG_LOW) * BINS_PER_DECADE)) + 1
    return min(max(idx, 0), N_BINS - 1)


@njit(cache=True)
def _fluid_runs(arrivals, run_end, run_total, run_eff, run_row, ctab2d, f_tab, h_tab, s_q, params,
                counts, state):
    """_fluid_kernel over consecutive runs of steps, run r ending at step run_end[r] with
    run_total[r] slots: the same steps, in the same order, as one call per run."""
    i0 = 0
    for r in range(run_end.shape[0]):
        i1 = run_end[r]
        _fluid_kernel(arrivals[i0:i1], run_total[r], run_eff[r], ctab2d[run_row[r]], f_tab,
                      h_tab, s_q, params, counts, state)
        i0 = i1


@njit(cache=True, inline="always")
def _trial(n, block, slots, pooled, ctab2d, f_tab, h_tab, s_q, params, state, scratch, trial,
           arrivals, min_share, max_miss):
    """Run one interval with n replicas on a copy of the state; True if it meets the SLO."""
    trial[:] = state
    n_eff = n * slots if pooled else slots
    row = min(n if pooled else 1, ctab2d.shape[0] - 1)
    before = trial[_WITHIN]
    _fluid_kernel(block, n * slots, n_eff, ctab2d[row], f_tab, h_tab, s_q, params, scratch,
                  trial)
    return arrivals <= 0.0 or trial[_WITHIN] - before >= (min_share - max_miss) * arrivals


@njit(cache=True)
def _search_need(per_s, k_s, slots, pooled, ctab2d, f_tab, h_tab, s_q, params, state,
                 scratch, max_replicas, min_share, max_miss):
    """Per interval of k_s steps, the fewest replicas (at least min(previous, the 100 %
    utilization count), at least 1) whose fluid trial keeps the interval's within-SLO share
    >= min_share - max_miss; max_replicas when none does. The chosen trial's state carries on.
    The share only grows with the count, so the search gallops up from the previous interval's
    count or bisects below it."""
    n_int = (per_s.shape[0] + k_s - 1) // k_s
    need = np.zeros(n_int, dtype=np.int64)
    trial = state.copy()
    best = state.copy()
    previous = 0
    for k in range(n_int):
        block = per_s[k * k_s:min(per_s.shape[0], (k + 1) * k_s)]
        arrivals = 0.0
        for x in block:
            arrivals += x
        floor = int(math.floor(arrivals / max(1, block.shape[0]) * params[0] / slots))
        low = max(1, min(previous, floor) if previous > 0 else floor)
        low = min(low, max_replicas)
        n0 = min(max(previous, low), max_replicas) if previous > 0 else low
        ok = _trial(n0, block, slots, pooled, ctab2d, f_tab, h_tab, s_q, params, state,
                    scratch, trial, arrivals, min_share, max_miss)
        if ok or n0 >= max_replicas:
            best[:] = trial
            lo, hi = low - 1, n0
            if n0 - 1 >= low:  # most often the answer is the previous count or one less
                if _trial(n0 - 1, block, slots, pooled, ctab2d, f_tab, h_tab, s_q, params,
                          state, scratch, trial, arrivals, min_share, max_miss):
                    hi = n0 - 1
                    best[:] = trial
                else:
                    lo = n0 - 1
        else:
            lo, step, hi = n0, 1, -1
            while hi < 0:
                cand = min(max_replicas, n0 + step)
                ok = _trial(cand, block, slots, pooled, ctab2d, f_tab, h_tab, s_q, params,
                            state, scratch, trial, arrivals, min_share, max_miss)
                if ok or cand >= max_replicas:
                    hi = cand
                    best[:] = trial
                else:
                    lo = cand
                    step *= 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _trial(mid, block, slots, pooled, ctab2d, f_tab, h_tab, s_q, params, state,
                      scratch, trial, arrivals, min_share, max_miss):
                hi = mid
                best[:] = trial
            else:
                lo = mid
        state[:] = best
        previous = hi
        need[k] = hi
    return need


_TABLES: dict[tuple[bytes, float], tuple[np.ndarray, np.ndarray]] = {}


def _slo_tables(samples: np.ndarray, slo_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(F_S, H) on the y and theta grids for these sorted samples, cached by their content:
    every replay of a comparison and the oracle's search build the same tables (H costs a
    tenth of a second). The arrays are read-only; the cache keeps the last few sample sets."""
    key = (hashlib.blake2b(samples.tobytes(), digest_size=16).digest(), float(slo_s))
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    y_grid = np.linspace(0.0, slo_s, _Y_POINTS)
    theta_grid = slo_s * np.exp(np.linspace(_LOG_Z0, _LOG_Z1, _Z_POINTS))
    f_tab = np.searchsorted(samples, y_grid, side="right") / samples.size
    h_tab = _h_table(samples, y_grid, theta_grid)
    f_tab.flags.writeable = False
    h_tab.flags.writeable = False
    if len(_TABLES) >= _TABLE_CACHE_SIZE:
        del _TABLES[next(iter(_TABLES))]
    _TABLES[key] = (f_tab, h_tab)
    return f_tab, h_tab


class FluidServer:
    """Fluid (fast-mode) serving with estimated latencies; accumulates totals across ``step``.

    slots_per_replica: concurrent requests per replica.
    service_mean_s: mean service time (s); sets the service rate per slot.
    service_scv: squared coefficient of variation of the service time (1 for exponential).
    slo_s: latency SLO (s); a request is within when wait + slo component <= slo_s.
    slo_component_samples_s: samples of the part of service counted in the SLO (all of it, or
        the time to first token); up to 20,000 quantiles of them are kept.
    routing: "lor"/"central" model the replicas as one pool, "random" as independent queues.
    max_utilization: cap on the utilization fed to Erlang C (backlog is the fluid term's job).
    latency_samples_per_step: quasi-random histogram samples per step (cost vs smoothness).
    """

    def __init__(
        self, slots_per_replica: int, service_mean_s: float, service_scv: float, slo_s: float,
        slo_component_samples_s: np.ndarray, routing: str = "lor", max_utilization: float = 0.98,
        latency_samples_per_step: int = 4,
    ) -> None:  # fmt: skip
        samples = np.sort(np.asarray(slo_component_samples_s, dtype=np.float64))
        if samples.size == 0 or slots_per_replica < 1 or service_mean_s <= 0 or slo_s <= 0:
            raise ValueError("need samples, slots >= 1, service_mean_s > 0 and slo_s > 0")
        if not 0 < max_utilization < 1:
            raise ValueError("max_utilization must lie in (0, 1)")
        if samples.size > _MAX_S_SAMPLES:
            probs = (np.arange(_MAX_S_SAMPLES) + 0.5) / _MAX_S_SAMPLES
            samples = np.quantile(samples, probs)
        self.slots_per_replica = int(slots_per_replica)
        self.service_mean_s = float(service_mean_s)
        self.slo_s = float(slo_s)
        self.routing = routing
        self.max_utilization = float(max_utilization)
        self._pooled = routing != "random"
        self._f_tab, self._h_tab = _slo_tables(samples, self.slo_s)
        self._s_q = samples
        self._params = np.array([service_mean_s, max_utilization, (1.0 + service_scv) / 2.0,
                                 slo_s, float(latency_samples_per_step)])  # fmt: skip
        self._state = np.zeros(11)
        self.histogram = LatencyHistogram(estimated=True)

    def step(self, arrivals_per_s: np.ndarray, ready_replicas: int) -> float:
        """Process one 1 s step per element with a fixed ready replica count; return the backlog."""
        n_total = ready_replicas * self.slots_per_replica
        n_eff = n_total if self._pooled else self.slots_per_replica
        ctab = _shared_ctab(max(n_eff, 1), self.max_utilization)
        _fluid_kernel(np.asarray(arrivals_per_s, dtype=np.float64), n_total, max(n_eff, 1), ctab,
                      self._f_tab, self._h_tab, self._s_q, self._params, self.histogram.counts,
                      self._state)  # fmt: skip
        return float(self._state[_B])

    def step_schedule(self, arrivals_per_s: np.ndarray, ready_per_step: np.ndarray) -> float:
        """Process one 1 s step per element, step i with ready_per_step[i] ready replicas, in one
        compiled call; the same result as calling ``step`` once per run of equal counts.
        Return the backlog."""
        ready = np.asarray(ready_per_step, dtype=np.int64)
        if ready.shape != np.shape(arrivals_per_s):
            raise ValueError("one ready count per step is needed")
        run_end = np.append(np.flatnonzero(np.diff(ready)) + 1, ready.size)
        return self.step_runs(arrivals_per_s, run_end, ready[run_end - 1])

    def step_runs(self, arrivals_per_s: np.ndarray, run_end: np.ndarray,
                  run_ready: np.ndarray) -> float:
        """Like ``step_schedule`` with the counts given by runs: steps [run_end[r - 1],
        run_end[r]) with run_ready[r] ready replicas (run_end ascending, ending at the number
        of steps). Return the backlog."""
        arrivals = np.asarray(arrivals_per_s, dtype=np.float64)
        run_end = np.asarray(run_end, dtype=np.int64)
        run_ready = np.asarray(run_ready, dtype=np.int64)
        if arrivals.size == 0:
            return float(self._state[_B])
        if (run_end.shape != run_ready.shape or run_end[-1] != arrivals.size
                or np.any(np.diff(run_end) < 0)):
            raise ValueError("runs must be ascending and end at the last step")
        run_total = run_ready * self.slots_per_replica
        run_eff = np.maximum(run_total if self._pooled else
                             np.full_like(run_total, self.slots_per_replica), 1)
        effs, run_row = np.unique(run_eff, return_inverse=True)
        shared = [_shared_ctab(n_eff, self.max_utilization) for n_eff in effs.tolist()]
        ctab2d = np.stack(shared)
        _fluid_runs(arrivals, run_end, run_total, run_eff, run_row.astype(np.int64), ctab2d,
                    self._f_tab, self._h_tab, self._s_q, self._params, self.histogram.counts,
                    self._state)  # fmt: skip
        for row, tab in enumerate(shared):  # keep what this call filled for the next ones
            tab[:] = ctab2d[row]
        return float(self._state[_B])

    def search_need(self, per_s: np.ndarray, interval_s: float, max_replicas: int,
                    max_miss: float) -> np.ndarray:
        """The oracle's search (see simulator/oracle_need.py), compiled: per interval the fewest
        replicas that keep its requests within the SLO, starting from the queue left before."""
        # lazily filled Erlang C rows, one per replica count (random routing: row 1)
        slots, rho_max = self.slots_per_replica, self.max_utilization
        rows = range(int(max_replicas) + 1) if self._pooled else range(2)
        shared = [_shared_ctab(max(n * slots if self._pooled else slots, 1), rho_max)
                  for n in rows]
        ctab2d = np.stack(shared)
        scratch = np.zeros_like(self.histogram.counts)
        params = self._params.copy()
        params[4] = 0.0  # trials feed no latency histogram: skip its samples
        need = _search_need(np.asarray(per_s, dtype=np.float64), int(round(interval_s)),
                            self.slots_per_replica, self._pooled, ctab2d, self._f_tab,
                            self._h_tab, self._s_q, params, self._state.copy(), scratch,
                            int(max_replicas), self.f_slo, float(max_miss))
        for row, tab in enumerate(shared):
            tab[:] = ctab2d[row]
        return need

    def fork(self) -> FluidServer:
        """A copy for what-if trials: same tables, own state, a scratch latency histogram."""
        other = copy.copy(self)
        other._state = self._state.copy()
        other.histogram = LatencyHistogram(estimated=True)
        return other

    @property
    def pooled(self) -> bool:
        """Whether the replicas are modelled as one pool ("lor"/"central") rather than as
        independent queues ("random"): it decides which Erlang C row a step reads."""
        return self._pooled

    def kernel_inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(f_tab, h_tab, s_q, params): the fixed tables and parameters `_fluid_kernel` reads,
        for a caller that runs the kernel itself; not to be written."""
        return self._f_tab, self._h_tab, self._s_q, self._params

    def state_snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (state, histogram counts), in `_fluid_kernel`'s layout: what a caller
        that runs the kernel itself starts from, and hands back with ``load_state``."""
        return self._state.copy(), self.histogram.counts.copy()

    def load_state(self, state: np.ndarray, counts: np.ndarray) -> None:
        """Take over a state and histogram counts the kernel advanced outside this object (the
        inverse of ``state_snapshot``); the arrays are copied in place."""
        self._state[:] = state
        self.histogram.counts[:] = counts

    @property
    def f_slo(self) -> float:
        """Share of requests whose SLO-counted service alone fits the SLO (no wait)."""
        return float(self._f_tab[-1])

    @property
    def backlog(self) -> float:
        """Requests queued beyond capacity (including held ones), carried to the next step."""
        return float(self._state[_B])

    @property
    def arrivals(self) -> float:
        return float(self._state[_ARR])

    @property
    def within_slo(self) -> float:
        """Estimated number of requests with wait + slo component <= slo_s."""
        return float(self._state[_WITHIN])

    @property
    def served(self) -> float:
        return float(self._state[_SERVED])

    @property
    def busy_slot_s(self) -> float:
        """Slot-seconds of service performed (utilization = this / (slots * seconds))."""
        return float(self._state[_BUSY])

    @property
    def mean_wait_s(self) -> float:
        """Estimated mean wait (backlog + queueing) of the requests accounted so far."""
        accounted = self._state[_ARR] - self._state[_PEND]
        return float(self._state[_WAITSUM] / accounted) if accounted > 0 else float("nan")

    @property
    def steps(self) -> int:
        return int(self._state[_CLOCK])

    @property
    def backlogged_s(self) -> float:
        """Seconds (steps) with a backlog or no capacity: under-provisioned time."""
        return float(self._state[_UNDER])
