"""Value types shared by every forecaster. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Series:
    """A series sampled at a fixed step.

    values: observations (request rate in req/s unless said otherwise); NaN marks a gap.
    step_s: seconds between samples.
    start_s: time of values[0], in seconds on the caller's clock (virtual or wall).
    """

    values: np.ndarray
    step_s: float
    start_s: float = 0.0

    def __post_init__(self) -> None:
        if self.step_s <= 0:
            raise ValueError(f"step_s must be positive, got {self.step_s}")
        object.__setattr__(self, "values", np.asarray(self.values, dtype=float))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def end_s(self) -> float:
        """Time of the step after the last sample (where a forecast starts)."""
        return self.start_s + len(self) * self.step_s

    def tail(self, n: int) -> Series:
        """The last n samples (all of them when n >= len)."""
        n = min(n, len(self))
        return Series(self.values[len(self) - n :], self.step_s, self.end_s - n * self.step_s)


@dataclass(frozen=True)
class Forecast:
    """A forecast of `len(mean)` steps of `step_s` seconds, the first one starting at start_s.

    mean: point forecast per step.
    quantiles: level (0..1) -> array of the same length as mean, non-decreasing in level.
    model: name of the model that made it, for decision records.
    """

    start_s: float
    step_s: float
    mean: np.ndarray
    quantiles: Mapping[float, np.ndarray] = field(default_factory=dict)
    model: str = ""

    @property
    def horizon_steps(self) -> int:
        return int(self.mean.shape[0])

    def levels(self) -> list[float]:
        return sorted(self.quantiles)

    def quantile(self, level: float) -> np.ndarray:
        """The forecast at quantile `level`, linearly interpolated between stored levels.

        0.5 falls back to the mean when no median is stored; outside the stored range the
        nearest stored level is returned (never extrapolated).
        """
        if level in self.quantiles:
            return self.quantiles[level]
        known = dict(self.quantiles)
        known.setdefault(0.5, self.mean)
        lv = sorted(known)
        if level <= lv[0]:
            return known[lv[0]]
        if level >= lv[-1]:
            return known[lv[-1]]
        hi = next(i for i, v in enumerate(lv) if v > level)
        lo_l, hi_l = lv[hi - 1], lv[hi]
        w = (level - lo_l) / (hi_l - lo_l)
        return (1 - w) * known[lo_l] + w * known[hi_l]

    def max_over(self, level: float, from_s: float, to_s: float) -> float:
        """Largest quantile-`level` value over the steps that overlap [from_s, to_s]."""
        return self.max_of(self.quantile(level), from_s, to_s)

    def max_of(self, q: np.ndarray, from_s: float, to_s: float) -> float:
        """Largest value of `q` (one per step, e.g. a quantile(level)) over the steps that
        overlap [from_s, to_s]."""
        i0 = max(0, int(np.floor((from_s - self.start_s) / self.step_s)))
        i1 = min(len(q), int(np.ceil((to_s - self.start_s) / self.step_s)))
        if i1 <= i0:
            i0, i1 = max(0, min(i0, len(q) - 1)), max(1, min(i0, len(q) - 1) + 1)
        return float(np.max(q[i0:i1]))
