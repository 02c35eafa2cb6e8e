"""Decomposition forecaster: STL / MSTL (statsmodels) + an AR(1) remainder. Pure.

Rule: the history (averaged into blocks so the longest period spans at most
``max_season_points`` samples) is split into trend + seasonal(s) + remainder with STL (one
period) or MSTL (several), using the ``*_jump`` settings so LOESS is evaluated every few points
and interpolated (the speed knobs). The forecast is: last trend value (flat), plus each seasonal
component repeated from its last period, plus the last remainder decayed by its lag-one
autocorrelation (an AR(1)). Periods come from detection unless given. With fewer than two
periods of history it degrades to the trend + AR(1) remainder of a moving-average split.
Rolled forward between refits as every path model (see forecasting.ets).
"""

from __future__ import annotations

import numpy as np

from forecasting.ets import MIN_POINTS, PathForecaster, block_means, coarse_to_fine
from forecasting.seasonality import detect_periods


class STLForecaster(PathForecaster):
    """periods_s: None (detect) or seconds; jump_fraction: LOESS stride as a share of its span."""

    name = "stl"

    def __init__(
        self,
        periods_s: tuple[float, ...] | None = None,
        max_season_points: int = 96,
        jump_fraction: float = 0.15,
    ) -> None:
        self.periods_s = periods_s
        self.max_season_points = max_season_points
        self.jump_fraction = jump_fraction

    def _fit_path(self, y: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
        periods = self.periods_s if self.periods_s is not None else detect_periods(y, step_s)
        steps = sorted(int(round(p / step_s)) for p in periods if y.size >= 2 * p / step_s)
        factor = max(1, int(np.ceil(steps[-1] / self.max_season_points))) if steps else max(1, y.size // 500)
        blocks, centres = block_means(y, factor)
        ps = sorted({s // factor for s in steps if s // factor >= 2 and blocks.size >= 2 * (s // factor)})
        if blocks.size < MIN_POINTS:
            return np.full(self.path_steps, y[-1]), np.diff(y)
        self.periods_s_ = tuple(p * factor * step_s for p in ps)
        trend, seasonals, resid = self._decompose(blocks, ps)
        k = int(np.ceil(self.path_steps / factor)) + 2
        ahead = np.full(k, trend[-1])
        for p, s in zip(ps, seasonals, strict=True):
            ahead += s[-p:][np.arange(k) % p]
        phi = _ar1(resid)
        ahead += resid[-1] * phi ** np.arange(1, k + 1)
        fitted = blocks - resid
        coarse = np.concatenate((fitted, ahead))
        path = coarse_to_fine(coarse, centres, factor, y.size, self.path_steps)
        r_fine = y - np.interp(np.arange(y.size), centres, fitted)
        return path, r_fine[-2000:]

    def _decompose(self, x: np.ndarray, ps: list[int]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        from statsmodels.tsa.seasonal import MSTL, STL

        if not ps:
            w = max(3, min(x.size // 4, 25))
            trend = np.convolve(np.pad(x, (w - 1, 0), mode="edge"), np.ones(w) / w, mode="valid")
            return trend, [], x - trend
        if len(ps) == 1:
            p = ps[0]
            j = max(1, int(self.jump_fraction * p))
            res = STL(x, period=p, seasonal_jump=j, trend_jump=j, low_pass_jump=j).fit()
            return np.asarray(res.trend), [np.asarray(res.seasonal)], np.asarray(res.resid)
        kw = {"seasonal_jump": max(1, int(self.jump_fraction * ps[0])), "trend_jump": max(1, int(self.jump_fraction * ps[-1]))}
        res = MSTL(x, periods=ps, stl_kwargs=kw).fit()
        seas = np.asarray(res.seasonal).reshape(x.size, -1)
        return np.asarray(res.trend), [seas[:, i] for i in range(seas.shape[1])], np.asarray(res.resid)


def _ar1(r: np.ndarray) -> float:
    """Lag-one autocorrelation, clipped to [0, 0.99] (a remainder that flips sign is noise)."""
    if r.size < 3 or not np.any(r):
        return 0.0
    a = float(np.dot(r[1:], r[:-1]) / np.dot(r, r))
    return min(max(a, 0.0), 0.99)
