"""Online split-conformal calibration of forecast quantiles, per horizon step. Pure.

Rule: ``ConformalForecaster`` wraps any forecaster. Each ``predict()`` is recorded under its
origin (the latest one made from an origin replaces earlier ones). When ``update()`` brings the
actual of step j, every recorded forecast that covered j yields a score for its horizon
h = j - origin + 1: ``(actual - mean) / scale`` with scale = max(|mean|, floor) in "relative"
mode or 1 in "additive" mode. Only the last ``window`` scores per horizon are kept, so the
calibration set never holds anything later than the newest observation. Quantile q at step h
is then ``mean + scale * empirical_quantile_q(scores_h)``; horizons with fewer than
``min_scores`` scores borrow the nearest shorter horizon that has enough, and with none the
wrapped model's own quantiles stand. Quantile tables are recomputed every
``recalibrate_every`` new actuals, which keeps a predict at a few array operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from forecasting.base import DEFAULT_LEVELS, Forecaster
from forecasting.types import Forecast, Series


class ConformalForecaster(Forecaster):
    """Wraps `base`; see the module docstring. Calibration state survives refits."""

    def __init__(
        self,
        base: Forecaster,
        window: int = 1440,
        max_horizon_steps: int = 120,
        relative: bool = True,
        min_scores: int = 30,
        recalibrate_every: int = 10,
    ) -> None:
        self.base = base
        self.window = window
        self.max_horizon_steps = max_horizon_steps
        self.relative = relative
        self.min_scores = min_scores
        self.recalibrate_every = recalibrate_every
        self.name = f"conformal({base.name})"  # type: ignore[misc]
        self._reset()

    def _reset(self) -> None:
        H, W = self.max_horizon_steps, self.window
        self.scores_ = np.full((W, H), np.nan)  # ring buffer per horizon (column)
        self.count_ = np.zeros(H, dtype=int)
        self._pending_mean = np.full((H, H), np.nan)  # row = origin slot (origin % H)
        self._pending_origin = np.full(H, -1, dtype=np.int64)
        self._table: dict[tuple[float, ...], np.ndarray] = {}
        self._since = 0
        self.step_index_: int | None = None  # absolute index (end_s / step_s) of the next step
        self.step_s_: float | None = None

    def fit(self, history: Series) -> Self:
        if self.step_s_ is None or self.step_s_ != history.step_s:
            self._reset()
            self.step_s_ = float(history.step_s)
        self.base.fit(history)  # first: when it raises, the calibration state is untouched
        end = int(round(history.end_s / history.step_s))  # absolute index of the next step
        if self.step_index_ is not None and end > self.step_index_:
            # actuals that reached us through this refit rather than through update()
            tail = history.values[max(0, len(history) - (end - self.step_index_)) :]
            for i, x in enumerate(tail):
                self._score(end - tail.size + i, float(x))
        self.step_index_ = end
        self._floor = max(1e-9, 0.05 * float(np.nanmean(np.abs(history.values[-1440:]))))
        return self

    def update(self, values: np.ndarray) -> Self:
        v = np.asarray(values, dtype=float).ravel()
        self.base.update(v)
        if self.step_index_ is None:
            raise RuntimeError("update() before fit()")
        for x in v:
            self._score(self.step_index_, x)
            self.step_index_ += 1
        self._since += v.size
        if self._since >= self.recalibrate_every:
            self._table.clear()
            self._since = 0
        return self

    def _score(self, j: int, actual: float) -> None:
        if not np.isfinite(actual):
            return
        H = self.max_horizon_steps
        h = j - self._pending_origin  # per slot: horizon index (0-based) of step j
        ok = (self._pending_origin >= 0) & (h >= 0) & (h < H)
        if not ok.any():
            return
        slots, hh = np.flatnonzero(ok), h[ok]
        mean = self._pending_mean[slots, hh]
        good = np.isfinite(mean)
        slots, hh, mean = slots[good], hh[good], mean[good]
        scale = np.maximum(np.abs(mean), self._floor) if self.relative else 1.0
        s = (actual - mean) / scale
        self.scores_[self.count_[hh] % self.window, hh] = s
        self.count_[hh] += 1

    def _offsets(self, levels: tuple[float, ...]) -> np.ndarray | None:
        if levels not in self._table:
            n = np.minimum(self.count_, self.window)
            enough = n >= self.min_scores
            if not enough.any():
                return None
            H = self.max_horizon_steps
            out = np.full((len(levels), H), np.nan)
            cols = np.flatnonzero(enough)
            out[:, cols] = np.nanquantile(self.scores_[:, cols], levels, axis=0)
            last = np.nan * np.ones(len(levels))
            for h in range(H):  # borrow the nearest shorter calibrated horizon
                if enough[h]:
                    last = out[:, h]
                else:
                    out[:, h] = last
            self._table[levels] = np.maximum.accumulate(out, axis=0)
        return self._table[levels]

    def predict(self, horizon_steps: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        fc = self.base.predict(horizon_steps, levels)
        assert self.step_index_ is not None, "predict() before fit()"
        H = self.max_horizon_steps
        slot = self.step_index_ % H
        self._pending_origin[slot] = self.step_index_
        k = min(horizon_steps, H)
        self._pending_mean[slot, :] = np.nan
        self._pending_mean[slot, :k] = fc.mean[:k]
        lv = tuple(sorted(float(q) for q in levels))
        off = self._offsets(lv)
        if off is None:
            return fc
        scale = np.maximum(np.abs(fc.mean[:k]), self._floor) if self.relative else np.ones(k)
        quantiles = {}
        for i, lvl in enumerate(lv):
            q = np.array(fc.quantile(lvl), dtype=float)
            o = off[i, :k]
            known = np.isfinite(o)
            q[:k][known] = np.maximum(fc.mean[:k][known] + o[known] * scale[known], 0.0)
            quantiles[lvl] = q
        # keep the levels ordered where calibrated and uncalibrated steps meet
        stacked = np.maximum.accumulate(np.array([quantiles[lvl] for lvl in lv]), axis=0)
        return Forecast(fc.start_s, fc.step_s, fc.mean, dict(zip(lv, stacked, strict=True)), fc.model)
