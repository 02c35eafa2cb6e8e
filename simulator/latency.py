"""A latency histogram with fixed log-spaced bins, shared by request-level and fast (fluid) mode.

Rule: 500 bins per decade from 1 us to 10^4 s (adjacent edges 0.46 % apart), plus an underflow
bin (< 1 us, including 0) and an overflow bin (>= 10^4 s). Percentiles interpolate
geometrically inside a bin, so their relative error is below 0.5 % for any data; counts are
float64 so the fluid mode can add fractional (estimated) weights. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LOW_S = 1e-6
HIGH_S = 1e4
BINS_PER_DECADE = 500
N_DECADES = 10
N_INNER = BINS_PER_DECADE * N_DECADES
N_BINS = N_INNER + 2  # [underflow, inner..., overflow]
_LOG_LOW = np.log10(LOW_S)

#: inner bin i (1..N_INNER) covers [EDGES_S[i-1], EDGES_S[i])
EDGES_S = LOW_S * 10.0 ** (np.arange(N_INNER + 1) / BINS_PER_DECADE)


def bin_index(latencies_s: np.ndarray) -> np.ndarray:
    """Bin of each latency (0 = underflow, N_BINS-1 = overflow)."""
    x = np.asarray(latencies_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = (np.log10(x) - _LOG_LOW) * BINS_PER_DECADE
    idx = np.floor(np.nan_to_num(pos, nan=-1.0, neginf=-1.0, posinf=N_INNER)) + 1
    return np.clip(idx, 0, N_BINS - 1).astype(np.int64)


@dataclass
class LatencyHistogram:
    """Weighted counts of latencies; ``estimated`` marks fluid-model (not measured) latencies."""

    estimated: bool = False
    counts: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS))

    def add(self, latencies_s: np.ndarray) -> None:
        """Count each latency once (vectorized)."""
        if len(latencies_s):
            self.counts += np.bincount(bin_index(latencies_s), minlength=N_BINS)

    def add_weighted(self, bin_weights: np.ndarray) -> None:
        """Add weights per bin (length N_BINS, as produced with ``bin_index``)."""
        if bin_weights.shape != (N_BINS,):
            raise ValueError(f"bin_weights must have shape ({N_BINS},)")
        self.counts += bin_weights

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """A new histogram holding both; estimated if either was."""
        return LatencyHistogram(self.estimated or other.estimated, self.counts + other.counts)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def percentile(self, q: float) -> float:
        """Latency (s) at percentile q in [0, 100]; nan when empty.

        Underflow reads as 0, overflow as 10^4 s (a lower bound).
        """
        total = self.total
        if total <= 0:
            return float("nan")
        rank = min(max(q, 0.0), 100.0) / 100.0 * total
        cum = np.cumsum(self.counts)
        if rank <= 0:
            i = int(np.flatnonzero(self.counts > 0)[0])  # the lowest non-empty bin
        else:
            i = min(int(np.searchsorted(cum, rank, side="left")), N_BINS - 1)
        if i == 0:
            return 0.0
        if i == N_BINS - 1:
            return HIGH_S
        before = cum[i - 1]
        frac = 0.0 if self.counts[i] <= 0 else (rank - before) / self.counts[i]
        lo, hi = EDGES_S[i - 1], EDGES_S[i]
        return float(lo * (hi / lo) ** min(max(frac, 0.0), 1.0))

    def fraction_within(self, slo_s: float) -> float:
        """Share of weight at or below slo_s (geometric interpolation inside slo_s's bin).

        Approximate to a part of one bin; request mode should count exactly where it can.
        """
        total = self.total
        if total <= 0:
            return float("nan")
        i = int(bin_index(np.array([slo_s]))[0])
        below = self.counts[:i].sum()
        if 0 < i < N_BINS - 1:
            lo, hi = EDGES_S[i - 1], EDGES_S[i]
            below += self.counts[i] * np.log(slo_s / lo) / np.log(hi / lo)
        elif i == N_BINS - 1:
            below += self.counts[i] if slo_s >= HIGH_S and np.isinf(slo_s) else 0.0
        return float(below / total)

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """(upper edge s, cumulative share) per inner bin, for plots."""
        total = self.total
        cum = np.cumsum(self.counts)[1:-1] / (total if total > 0 else 1.0)
        return EDGES_S[1:].copy(), cum
