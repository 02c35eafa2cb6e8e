"""The lead time a policy plans with: a high quantile of measured start-to-ready times. Pure.

Shared by the live controller (autoscaler/lead_time.py measures pods through the API) and the
simulator (simulator/replay.py measures its simulated cold starts), so both plan with the same
rule: the `quantile` of the latest `window` measurements by nearest rank (never interpolated,
so a p95 is a lead time some pod really had), or `default_s` until `min_samples` were seen
(a new target plans with a sane value rather than with one lucky pod).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_WINDOW = 50
DEFAULT_MIN_SAMPLES = 5
DEFAULT_QUANTILE = 0.95


def nearest_rank(values: Iterable[float], quantile: float) -> float:
    """The q-quantile by nearest rank: the smallest value with >= q of the values at or below
    it."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LeadTimeRule:
    """default_s: planned until min_samples were measured, s. window: latest measurements kept.
    quantile: the quantile planned with, in (0, 1]."""

    default_s: float
    window: int = DEFAULT_WINDOW
    min_samples: int = DEFAULT_MIN_SAMPLES
    quantile: float = DEFAULT_QUANTILE

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.min_samples <= self.window:
            raise ValueError(f"need 1 <= min_pods ({self.min_samples}) <= window ({self.window})")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}")
        if self.default_s < 0:
            raise ValueError(f"default_s must be >= 0, got {self.default_s}")

    def measured(self, samples_s: Sequence[float]) -> bool:
        """Whether enough samples were seen for them to replace the default."""
        return len(samples_s) >= self.min_samples

    def lead_time_s(self, samples_s: Sequence[float]) -> float:
        """The planned lead time from the measurements so far (oldest first)."""
        if not self.measured(samples_s):
            return self.default_s
        return nearest_rank(samples_s[-self.window:], self.quantile)
