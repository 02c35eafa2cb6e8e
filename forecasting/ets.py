"""Holt-Winters / ETS (statsmodels), and the roll-forward machinery of path models. Pure.

Rule: a path model computes, at fit, one long forecast path from the end of its history (and
its in-sample residuals). ``update()`` never re-estimates: a forecast made s steps later reads
the path from step s on and adds the latest miss (observed - path) decayed by ``0.9 ** h``, so
the level follows the data between refits at the cost of a few array operations. Quantiles are
the empirical quantiles of the in-sample one-step residuals widened by sqrt(h); the conformal
wrapper calibrates them online.

Holt-Winters: additive damped trend and additive seasonality at the strongest detected period
(``seasonal_period="auto"``) or a given one in seconds; the series is averaged into blocks so a
period spans at most ``max_season_points`` samples (a day of minute data is fitted as 24
hourly blocks). With fewer than two periods of history it degrades to a damped trend without
seasonality; with fewer than ``MIN_POINTS`` blocks to the last value.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Self

import numpy as np

from forecasting.base import DEFAULT_LEVELS, Forecaster
from forecasting.errors import ForecastError
from forecasting.naive import append_filled, observed_values, resolve_period_s
from forecasting.types import Forecast, Series

MIN_POINTS = 10
_DECAY = 0.9


def block_means(y: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of blocks of `factor` samples aligned to the end; block centres as fine indices."""
    m = y.size // factor
    lead = y.size - m * factor
    blocks = y[lead:].reshape(m, factor).mean(axis=1)
    centres = lead + np.arange(m) * factor + (factor - 1) / 2.0
    return blocks, centres


class PathForecaster(Forecaster):
    """Base of models that forecast one path at fit and roll it forward (module docstring)."""

    name = "path"
    path_steps: int = 2880

    def _fit_path(self, y: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(path of y[n], y[n+1], ... , in-sample one-step residuals)."""
        raise NotImplementedError

    def fit(self, history: Series) -> Self:
        y = observed_values(history)
        self.step_s_ = float(history.step_s)
        self.periods_s_: tuple[float, ...] = ()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path, resid = self._fit_path(y, self.step_s_)
        if not np.isfinite(path).all():
            path = np.full(self.path_steps, y[-1])
        self.path_ = path
        r = resid[np.isfinite(resid)]
        self.resid_ = r if r.size >= 2 else np.abs(np.diff(y[-30:])) if y.size > 2 else np.zeros(2)
        self.values_ = y[-1:]
        self.seen_steps_ = 0
        # start from the last observation: the path begins at a block centre, not at y[-1]
        self.miss_ = float(y[-1] - self.path_[0]) if y.size else 0.0
        self.origin_s_ = float(history.end_s)
        self._offsets: dict[tuple[float, ...], np.ndarray] = {}
        return self

    def update(self, values: np.ndarray) -> Self:
        v = np.asarray(values, dtype=float).ravel()
        if v.size == 0:
            return self
        self.values_ = append_filled(self.values_, v, 1)
        self.seen_steps_ += v.size
        self.origin_s_ += v.size * self.step_s_
        self.miss_ = float(self.values_[-1] - self._path_at(np.array([self.seen_steps_ - 1]))[0])
        return self

    def _path_at(self, idx: np.ndarray) -> np.ndarray:
        p = self.path_
        return p[np.minimum(idx, p.size - 1)]

    def predict(self, horizon_steps: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        if horizon_steps < 1:
            raise ForecastError(f"horizon_steps must be >= 1, got {horizon_steps}")
        lv = tuple(sorted(float(q) for q in levels))
        h = np.arange(1, horizon_steps + 1)
        mean = self._path_at(self.seen_steps_ + h - 1) + self.miss_ * _DECAY**h
        mean = np.maximum(mean, 0.0)
        if lv not in self._offsets:
            self._offsets[lv] = np.quantile(self.resid_, lv)
        q = mean + self._offsets[lv][:, None] * np.sqrt(h)[None, :]
        q = np.maximum(np.maximum.accumulate(q, axis=0), 0.0)
        return Forecast(self.origin_s_, self.step_s_, mean, {lvl: q[i] for i, lvl in enumerate(lv)}, self.name)


def coarse_to_fine(
    coarse: np.ndarray, centres: np.ndarray, factor: int, n: int, steps: int
) -> np.ndarray:
    """Coarse in-sample + forecast values (at block centres) interpolated at fine n..n+steps-1."""
    k = coarse.size - centres.size
    all_centres = np.concatenate((centres, centres[-1] + factor * np.arange(1, k + 1)))
    return np.interp(np.arange(n, n + steps), all_centres, coarse)


class HoltWinters(PathForecaster):
    """statsmodels ExponentialSmoothing; see the module docstring.

    seasonal_period: "auto" (detected) | "daily" | "weekly" | seconds | None (non-seasonal).
    max_season_points: blocks per seasonal period after averaging.
    """

    name = "holt-winters"

    def __init__(self, seasonal_period: str | float | None = "auto", max_season_points: int = 24) -> None:
        self.seasonal_period = seasonal_period
        self.max_season_points = max_season_points

    def _fit_path(self, y: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        period_s = None if self.seasonal_period is None else resolve_period_s(self.seasonal_period, y, step_s)
        p = int(round(period_s / step_s)) if period_s else 0
        factor = max(1, int(np.ceil(p / self.max_season_points))) if p else max(1, y.size // 500)
        blocks, centres = block_means(y, factor)
        if blocks.size < MIN_POINTS:
            return np.full(self.path_steps, y[-1]), np.diff(y)
        ps = p // factor if p else 0
        seasonal = ps >= 2 and blocks.size >= 2 * ps
        self.periods_s_ = (p * step_s,) if seasonal else ()
        model = ExponentialSmoothing(
            blocks,
            trend="add",
            damped_trend=True,
            seasonal="add" if seasonal else None,
            seasonal_periods=ps if seasonal else None,
            initialization_method="estimated",
        ).fit(use_brute=False)
        k = int(np.ceil(self.path_steps / factor)) + 2
        coarse = np.concatenate((model.fittedvalues, model.forecast(k)))
        path = coarse_to_fine(coarse, centres, factor, y.size, self.path_steps)
        fitted = np.interp(np.arange(y.size), centres, model.fittedvalues)
        return path, (y - fitted)[-2000:]
