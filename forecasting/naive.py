"""Baseline forecasters: last value and seasonal naive, with empirical residual quantiles. Pure.

Both are "shift" models: the forecast of y[t+h] made at origin t is a past value of the series.
Their spread comes from their own h-step residuals over the last ``residual_window_steps``
origins of the history they were fitted on (for a model without parameters this is split
conformal: every residual is out of sample). Residual quantiles are computed at a few anchor
horizons and interpolated in between; where the history is too short for a horizon the last
anchor that has residuals is widened by sqrt(h / h_anchor) (random-walk growth).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from forecasting.base import DEFAULT_LEVELS, Forecaster
from forecasting.errors import ForecastError
from forecasting.seasonality import detect_periods
from forecasting.types import Forecast, Series

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


def observed_values(history: Series) -> np.ndarray:
    """History values with gaps forward-filled (leading gaps back-filled); raises on no data."""
    x = np.asarray(history.values, dtype=float)
    ok = np.isfinite(x)
    if x.size == 0 or not ok.any():
        raise ForecastError("history is empty or all missing")
    if ok.all():
        return x.copy()
    idx = np.where(ok, np.arange(x.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    out[: int(np.argmax(ok))] = x[int(np.argmax(ok))]
    return out


def append_filled(buffer: np.ndarray, values: np.ndarray, keep: int) -> np.ndarray:
    """buffer + values (NaN forward-filled from the buffer's last value), last `keep` kept."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        return buffer
    if not np.isfinite(v).all():
        v = v.copy()
        last = buffer[-1] if buffer.size else np.nan
        for i in range(v.size):  # gaps are rare and short; a loop keeps this obvious
            if np.isfinite(v[i]):
                last = v[i]
            else:
                v[i] = last
        if not np.isfinite(v).all():
            v = np.nan_to_num(v, nan=float(np.nanmean(v)) if np.isfinite(v).any() else 0.0)
    out = np.concatenate((buffer, v))
    return out[-keep:] if out.size > keep else out


def anchor_horizons(horizon_steps: int) -> np.ndarray:
    """About a dozen horizons from 1 to horizon_steps, denser at short range."""
    return np.unique(np.round(np.geomspace(1, max(horizon_steps, 1), 12)).astype(int))


def quantile_offsets(
    scores_by_h: dict[int, np.ndarray], horizon_steps: int, levels: Sequence[float]
) -> np.ndarray:
    """(len(levels), horizon_steps) empirical score quantiles per step, interpolated over h."""
    anchors, rows = [], []
    for h in sorted(scores_by_h):
        s = scores_by_h[h]
        s = s[np.isfinite(s)]
        if s.size >= 2:
            anchors.append(h)
            rows.append(np.quantile(s, levels))
        elif anchors:
            anchors.append(h)
            rows.append(rows[-1] * np.sqrt(h / anchors[-2]))
    hs = np.arange(1, horizon_steps + 1)
    if not anchors:
        return np.zeros((len(levels), horizon_steps))
    table = np.array(rows)  # (anchors, levels)
    out = np.empty((len(levels), horizon_steps))
    for j in range(len(levels)):
        out[j] = np.interp(hs, anchors, table[:, j])
    return np.maximum.accumulate(out, axis=0)


class ShiftForecaster(Forecaster):
    """Shared machinery of models whose forecast is a function of past values (see module)."""

    name = "shift"

    def __init__(self, residual_window_steps: int = 1440, relative: bool = False) -> None:
        self.residual_window_steps = residual_window_steps
        self.relative = relative

    # -- what a concrete model defines ---------------------------------------------------
    def _resolve(self, y: np.ndarray, step_s: float) -> None:
        """Learn structural settings (period) from the fit history."""

    def _point(self, y: np.ndarray, t: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Forecasts of y[t+h] from origins t (index of the last observed value)."""
        raise NotImplementedError

    def _lookback(self) -> int:
        return 1

    # -- contract -------------------------------------------------------------------------
    def fit(self, history: Series) -> Self:
        y = observed_values(history)
        self.step_s_ = float(history.step_s)
        self._resolve(y, self.step_s_)
        self.fit_values_ = y[-(self.residual_window_steps + self._calib_reach()) :]
        self._keep = self._lookback() + 1
        self.values_ = y[-self._keep :]
        self.origin_s_ = float(history.end_s)
        self._scale_floor = max(1e-9, 0.05 * float(np.mean(np.abs(self.fit_values_))))
        self._offset_cache: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
        return self

    def _calib_reach(self) -> int:
        return self._lookback() + 2 * 1440

    def update(self, values: np.ndarray) -> Self:
        v = np.asarray(values, dtype=float).ravel()
        self.values_ = append_filled(self.values_, v, self._keep)
        self.origin_s_ += v.size * self.step_s_
        return self

    def _scale(self, f: np.ndarray) -> np.ndarray:
        return np.maximum(np.abs(f), self._scale_floor)

    def _offsets(self, horizon_steps: int, levels: tuple[float, ...]) -> np.ndarray:
        key = (horizon_steps, levels)
        if key not in self._offset_cache:
            y = self.fit_values_
            n, scores = y.size, {}
            for h in anchor_horizons(horizon_steps):
                t = np.arange(max(0, n - h - self.residual_window_steps), n - h)
                t = t[t >= self._lookback() - 1]
                if t.size == 0:
                    scores[int(h)] = np.empty(0)
                    continue
                f = self._point(y, t, np.full(t.size, h))
                r = y[t + h] - f
                scores[int(h)] = r / self._scale(f) if self.relative else r
            self._offset_cache[key] = quantile_offsets(scores, horizon_steps, levels)
        return self._offset_cache[key]

    def predict(self, horizon_steps: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        if horizon_steps < 1:
            raise ForecastError(f"horizon_steps must be >= 1, got {horizon_steps}")
        lv = tuple(sorted(float(q) for q in levels))
        y = self.values_
        h = np.arange(1, horizon_steps + 1)
        mean = np.maximum(self._point(y, np.full(h.size, y.size - 1), h), 0.0)
        off = self._offsets(horizon_steps, lv)
        spread = off * self._scale(mean) if self.relative else off
        q = np.maximum(mean + spread, 0.0)
        return Forecast(
            self.origin_s_, self.step_s_, mean, {lvl: q[i] for i, lvl in enumerate(lv)}, self.name
        )


class LastValue(ShiftForecaster):
    """y[t+h] = y[t]."""

    name = "last"

    def _point(self, y: np.ndarray, t: np.ndarray, h: np.ndarray) -> np.ndarray:
        return y[t]

    def _calib_reach(self) -> int:
        return 2 * 1440


def resolve_period_s(period: str | float, y: np.ndarray, step_s: float) -> float | None:
    """'daily' | 'weekly' | 'auto' (detected, strongest) | seconds -> seconds or None."""
    if period == "daily":
        return DAY_S
    if period == "weekly":
        return WEEK_S
    if period == "auto":
        found = detect_periods(y, step_s)
        return found[0] if found else None
    return float(period)


class SeasonalNaive(ShiftForecaster):
    """y[t+h] = y[t+h-kP], k the fewest periods that reach back into the history.

    Needs one full period of history; with less it degrades to the last value
    (``degraded_`` says so).
    """

    name = "seasonal-naive"

    def __init__(
        self,
        period: str | float = "auto",
        residual_window_steps: int = 1440,
        relative: bool = False,
    ) -> None:
        super().__init__(residual_window_steps, relative)
        self.period = period

    def _resolve(self, y: np.ndarray, step_s: float) -> None:
        period_s = resolve_period_s(self.period, y, step_s)
        p = int(round(period_s / step_s)) if period_s else 0
        self.degraded_ = p < 1 or y.size < p + 1
        self.period_steps_ = 0 if self.degraded_ else p
        self.periods_s_ = () if self.degraded_ else (p * step_s,)

    def _lookback(self) -> int:
        return max(1, self.period_steps_)

    def _calib_reach(self) -> int:
        return self._lookback() + 2 * 1440

    def _point(self, y: np.ndarray, t: np.ndarray, h: np.ndarray) -> np.ndarray:
        p = self.period_steps_
        if p == 0:
            return y[t]
        return y[t + h - p * np.ceil(h / p).astype(int)]
