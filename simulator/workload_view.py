"""A trace and a profile seen through one replay window: history, truth and derived sizes.

History before the window's start is what a live controller would already have in Prometheus
(warm start): the observed request rate at the history step, from the trace. During the
replay the history grows from the simulated scrapes, never from the true arrivals.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from forecasting.types import Series
from simulator.arrivals import counts_per_second
from simulator.pipeline import PipelineConfig, ScrapeStore
from simulator.profiles import Profile
from simulator.traces import Trace


@dataclass
class WorkloadView:
    """Trace + profile + window [start_s, end_s) of one replay."""

    trace: Trace
    profile: Profile
    start_s: float
    end_s: float
    slo_s: float
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    history_window_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        step = self.pipeline.history_step_s
        warm_from = max(self.trace.start_s, self.start_s - self.history_window_s)
        n_warm = int((self.start_s - warm_from) // step)  # whole steps ending at the start
        self.history_t0_s = self.start_s - n_warm * step
        if n_warm > 0:
            per_s = counts_per_second(self.trace, self.history_t0_s, self.start_s)
            self.warm_history = per_s[: n_warm * int(step)].reshape(n_warm, int(step)).sum(
                axis=1) / step
        else:
            self.warm_history = np.zeros(0)

    # -- sizes derived from the profile ---------------------------------------------------
    @functools.cached_property
    def wait_budget_s(self) -> float:
        """Queueing delay the SLO leaves once the slow tail of the service itself is paid."""
        q90 = float(np.quantile(self.slo_component_sample_s, 0.9))
        return max(0.1 * self.slo_s, self.slo_s - q90)

    @functools.cached_property
    def _service_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed seeded sample of (slot occupancy, SLO-counted service) for the models.

        A trace that carries its own token counts is sampled from them (that is the workload
        the replicas will serve, and what an operator would measure); otherwise the profile's
        own service model (its token mix for LLM profiles).
        """
        rng = np.random.default_rng(12345)
        n = 20_000
        trace = self.trace
        if trace.has_tokens and trace.arrivals_s is not None and trace.arrivals_s.size:
            idx = rng.integers(0, trace.arrivals_s.size, n)
            assert trace.prompt_tokens is not None and trace.output_tokens is not None
            sample = self.profile.sample_service(rng, n, trace.prompt_tokens[idx],
                                                 trace.output_tokens[idx])
        else:
            sample = self.profile.sample_service(rng, n)
        return sample.occupancy_s, sample.slo_s

    @property
    def occupancy_sample_s(self) -> np.ndarray:
        return self._service_sample[0]

    @property
    def slo_component_sample_s(self) -> np.ndarray:
        return self._service_sample[1]

    @functools.cached_property
    def service_mean_s(self) -> float:
        """Mean slot occupancy of this workload on this profile."""
        if self.trace.has_tokens or self.profile.service.kind == "tokens":
            return float(self.occupancy_sample_s.mean())
        return self.profile.service_mean_s

    @property
    def capacity_rps_per_replica(self) -> float:
        """Requests/s one replica serves with every slot busy, for this workload."""
        return self.profile.slots / self.service_mean_s

    @functools.cached_property
    def slo_part_quantiles_s(self) -> tuple[float, ...]:
        """64 quantiles (midpoints) of the SLO-counted service part, for the sizing model."""
        probs = (np.arange(64) + 0.5) / 64
        return tuple(float(x) for x in np.quantile(self.slo_component_sample_s, probs))

    @property
    def service_scv(self) -> float:
        occ = self.occupancy_sample_s
        return float(occ.var() / occ.mean() ** 2)

    @property
    def default_lead_time_s(self) -> float:
        """The configured lead time used until enough pod starts were measured."""
        return float(self.profile.cold_start.high_s)

    def initial_rate_rps(self) -> float:
        """The rate of the minute before the start; when the trace starts there, the rate of
        its first minute (the load the running replicas were serving when the replay starts).

        Read from the same rate function as the arrivals (a coarse trace's interval average
        would misstate the interpolated rate at the start)."""
        lo = max(self.trace.start_s, self.start_s - 60.0)
        hi = lo + 60.0 if lo >= self.start_s else self.start_s
        hi = min(hi, self.trace.end_s)
        return float(counts_per_second(self.trace, lo, hi).sum() / (hi - lo))

    @functools.cached_property
    def per_second(self) -> np.ndarray:
        """True arrivals in each second of the replay window (read-only; the oracle's view)."""
        per_s = counts_per_second(self.trace, self.start_s, self.end_s)
        per_s.flags.writeable = False
        return per_s

    def peak_rate_rps(self) -> float:
        per_s = self.per_second
        if per_s.size < 60:
            return float(per_s.max(initial=0.0))
        minutes = per_s[: per_s.size // 60 * 60].reshape(-1, 60).mean(axis=1)
        return float(minutes.max(initial=0.0))

    # -- observed history -----------------------------------------------------------------
    def seed_store(self, store: ScrapeStore, ready_pods: int) -> None:
        """Fill the store's warm slots with what Prometheus had before the replay started.

        Before the trace's own start (a replay from its first second) the workload is taken to
        have run at its initial rate, as a live service would have, not to have been idle."""
        rate = self.initial_rate_rps()
        busy_per_s = min(rate * self.service_mean_s, ready_pods * self.profile.slots)
        t_first = store.time_of(0)
        lo = max(self.trace.start_s, t_first)
        recorded = np.concatenate(([0.0], np.cumsum(
            counts_per_second(self.trace, lo, self.start_s)))) if lo < self.start_s else [0.0]
        for i in range(store.warm + 1):
            t = store.time_of(i)
            back = self.start_s - t
            if back <= 0:
                before = 0.0
            else:  # requests in [t, start): recorded ones, plus the initial rate before the trace
                k = int(round(max(t, lo) - lo))
                before = (recorded[-1] - recorded[min(k, len(recorded) - 1)]
                          + rate * max(0.0, self.trace.start_s - t))
            store.scrape(t, -before, -busy_per_s * back, -ready_pods * back)

    def new_history(self) -> ObservedHistory:
        """A fresh observed-history buffer for one replay."""
        return ObservedHistory(self)


class ObservedHistory:
    """One replay's observed rate history: the warm part, then what the scrapes showed."""

    def __init__(self, view: WorkloadView) -> None:
        self.view = view
        step = view.pipeline.history_step_s
        n_run = int(math.ceil((view.end_s - view.start_s) / step)) + 1
        self._values = np.concatenate([view.warm_history, np.full(n_run, np.nan)])
        self._n_warm = len(view.warm_history)
        self._filled = self._n_warm

    def series(self, store: ScrapeStore, now_s: float) -> Series:
        """Observed rate at history_step_s ending at the newest step a query at now_s sees."""
        view = self.view
        step = view.pipeline.history_step_s
        newest = store.index_at(now_s - view.pipeline.query_lag_s)
        n_run = int((store.time_of(newest) - view.start_s) // step)
        while self._filled < self._n_warm + n_run:
            k = self._filled - self._n_warm  # run step k covers [start + k*step, +step)
            hi = store.requests[store.index_at(view.start_s + (k + 1) * step)]
            lo = store.requests[store.index_at(view.start_s + k * step)]
            self._values[self._filled] = (hi - lo) / step
            self._filled += 1
        lo_i = max(0, self._filled - int(view.history_window_s // step))
        return Series(self._values[lo_i:self._filled], step, view.history_t0_s + lo_i * step)
