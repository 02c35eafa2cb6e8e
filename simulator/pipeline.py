"""What Prometheus would show the policies: scraped counters, rate() over a window, query lag.

Every policy sees this identical pipeline; only the oracle sees the truth. The request counter
and the pods' busy-time counter are scraped every `scrape_interval_s`; a query at time t sees
the samples up to t - `query_lag_s`, and rate() over `rate_window_s` is the counter's increase
between the samples at the two ends of the window divided by its length (what Prometheus'
extrapolated rate gives when scrapes line up with the window). Pure bookkeeping: the caller
passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PipelineConfig:
    """The metric pipeline every policy sees (defaults: the HPA's world)."""

    scrape_interval_s: float = 15.0
    """Prometheus scrape interval [15 s]."""
    rate_window_s: float = 60.0
    """Window of rate() [60 s]."""
    query_lag_s: float = 15.0
    """Age of the newest sample a query sees (adapter cache, evaluation delay) [15 s]."""
    history_step_s: float = 60.0
    """Step of the request-rate history handed to forecasters [60 s]."""


class ScrapeStore:
    """Scraped samples of the request counter, busy work and ready pod-seconds, in fixed slots.

    Slot i holds the scrape at t0_s + i * scrape_interval_s. The first `warm` slots are seeded
    from before the replay (what Prometheus already had at the start).
    """

    def __init__(self, config: PipelineConfig, start_s: float, duration_s: float,
                 warm: int = 8) -> None:
        self.config = config
        self.warm = warm
        self.t0_s = start_s - warm * config.scrape_interval_s
        n = warm + int(np.ceil(duration_s / config.scrape_interval_s)) + 2
        self.requests = np.zeros(n)
        self.busy_slot_s = np.zeros(n)
        self.ready_pod_s = np.zeros(n)
        self.count = 0

    def scrape(self, now_s: float, requests_total: float, busy_slot_s_total: float,
               ready_pod_s_total: float) -> None:
        """Record the scrape at now_s (scrapes come in order, one per slot)."""
        i = int(round((now_s - self.t0_s) / self.config.scrape_interval_s))
        self.requests[i] = requests_total
        self.busy_slot_s[i] = busy_slot_s_total
        self.ready_pod_s[i] = ready_pod_s_total
        self.count = i + 1

    def index_at(self, at_s: float) -> int:
        """Newest scrape slot at or before at_s, or -1."""
        i = int((at_s - self.t0_s) // self.config.scrape_interval_s + 1e-9)
        return min(i, self.count - 1)

    def time_of(self, i: int) -> float:
        return self.t0_s + i * self.config.scrape_interval_s

    def window(self, now_s: float) -> tuple[int, int] | None:
        """(first, last) scrape slots of the rate window a query at now_s sees."""
        cfg = self.config
        last = self.index_at(now_s - cfg.query_lag_s)
        if last < 0:
            return None
        first = last - int(round(cfg.rate_window_s / cfg.scrape_interval_s))
        return max(first, 0), last

    def rate_rps(self, now_s: float) -> float | None:
        """rate(requests_total[window]) as seen at now_s; None before two samples exist."""
        w = self.window(now_s)
        if w is None or w[1] <= w[0]:
            return None
        first, last = w
        span = (last - first) * self.config.scrape_interval_s
        return float(self.requests[last] - self.requests[first]) / span

    def utilization(self, now_s: float, slots_per_replica: int) -> float | None:
        """Mean busy share of the ready pods' slots over the window, None without data."""
        w = self.window(now_s)
        if w is None or w[1] <= w[0]:
            return None
        first, last = w
        pod_s = self.ready_pod_s[last] - self.ready_pod_s[first]
        if pod_s <= 0:
            return None
        busy = self.busy_slot_s[last] - self.busy_slot_s[first]
        return float(min(1.0, busy / (pod_s * slots_per_replica)))

    def newest_sample_s(self, now_s: float) -> float | None:
        i = self.index_at(now_s - self.config.query_lag_s)
        return None if i < 0 else self.time_of(i)
