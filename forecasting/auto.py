"""AutoForecaster: per series and per horizon, the candidate with the lowest recent error. Pure.

Rule: at fit, every candidate is backtested on the last ``score_window_s`` of history at a dozen
anchor horizons (origins every step; the candidates have no fitted parameters, so every error
is out of sample and the whole backtest is a few vectorized array shifts). Per anchor horizon
the candidate with the lowest MAE wins; steps between anchors use the nearest anchor's choice.
The quantiles come from split conformal on the winners' residuals over the same window, with a
per-horizon choice of score scale: additive, relative to the forecast level, or relative to the
recent volatility (mean absolute step change), whichever gives the lowest q0.9 pinball loss.
Candidates: last value, a pull toward the one-day mean, seasonal naive, and seasonal-difference
and seasonal-ratio corrections of the current level, for every detected period and for 1 d / 7 d.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from forecasting.base import DEFAULT_LEVELS, Forecaster
from forecasting.errors import ForecastError
from forecasting.naive import DAY_S, WEEK_S, anchor_horizons, append_filled, observed_values
from forecasting.seasonality import detect_periods
from forecasting.types import Forecast, Series

_SMOOTH = 3  # samples averaged where a candidate reads one value of a noisy series
_VOL_STEPS = 30
_SCALES = ("add", "rel", "vol")

Point = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _ma(c: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """Mean of y[t-k+1..t] from c = cumsum with a leading 0."""
    return (c[t + 1] - c[t + 1 - k]) / k


@dataclass(frozen=True)
class Candidate:
    """A parameter-free forecast rule: point(y, c, t, h) -> forecasts of y[t+h]."""

    name: str
    lookback: int
    point: Point
    max_h: int = 10**9


def _candidates(periods_steps: Sequence[int], day_steps: int) -> list[Candidate]:
    out = [
        Candidate("last", 1, lambda y, c, t, h: y[t]),
        Candidate(
            "revert-day",
            day_steps,
            lambda y, c, t, h: 0.85 * y[t] + 0.15 * _ma(c, t, day_steps),
        ),
    ]
    for p in periods_steps:
        k = _SMOOTH

        def snaive(y, c, t, h, p=p):
            return y[t + h - p * np.ceil(h / p).astype(int)]

        def sdelta(y, c, t, h, p=p, k=k):
            return _ma(c, t, k) + _ma(c, t + h - p, k) - _ma(c, t - p, k)

        def sratio(y, c, t, h, p=p, k=k):
            base = np.maximum(_ma(c, t - p, k), 1e-9)
            return _ma(c, t, k) * np.clip(_ma(c, t + h - p, k) / base, 0.2, 5.0)

        out += [
            Candidate(f"snaive-{p}", p, snaive),
            Candidate(f"sdelta-{p}", p + k, sdelta, p),
            Candidate(f"sratio-{p}", p + k, sratio, p),
        ]
    return out


class AutoForecaster(Forecaster):
    """Picks, per horizon, the candidate with the lowest recent MAE (see module docstring).

    score_window_s: history span whose origins score the candidates and calibrate quantiles.
    max_horizon_steps: farthest anchor horizon scored at fit; beyond it the last anchor's
        choice and offsets (widened by sqrt(h / h_anchor)) apply.
    margin: relative MAE by which a candidate must beat the last value to be chosen over it.
    """

    name = "auto"

    def __init__(
        self,
        score_window_s: float = 3 * DAY_S,
        max_horizon_steps: int = 120,
            margin: float = 0.05,
    ) -> None:
        self.score_window_s = score_window_s
        self.max_horizon_steps = max_horizon_steps
        self.margin = margin

    def fit(self, history: Series) -> Self:
        y = observed_values(history)
        step = float(history.step_s)
        self.step_s_ = step
        day = max(1, int(round(DAY_S / step)))
        detected = detect_periods(y, step)
        self.periods_s_ = detected
        periods = {int(round(p / step)) for p in (*detected, DAY_S, WEEK_S)}
        usable = [p for p in sorted(periods) if p >= 2 and y.size > p + _SMOOTH]
        cands = [c for c in _candidates(usable, day) if y.size > c.lookback]
        if not cands or cands[0].name != "last":
            cands.insert(0, _candidates([], day)[0])
        self._select(y, cands, step)
        self._keep = max(c.lookback for c in self.chosen_) + _VOL_STEPS + 2
        self.values_ = y[-self._keep :]
        self.origin_s_ = float(history.end_s)
        self._floor = max(1e-9, 0.05 * float(np.mean(np.abs(y[-self._keep :]))))
        self._cache: dict[tuple[int, tuple[float, ...]], tuple] = {}
        return self

    def _select(self, y: np.ndarray, cands: list[Candidate], step: float) -> None:
        n, w = y.size, max(2, int(self.score_window_s / step))
        c = np.concatenate(([0.0], np.cumsum(y)))
        ad = np.concatenate(([0.0, 0.0], np.cumsum(np.abs(np.diff(y)))))
        floor = max(1e-9, 0.05 * float(np.mean(np.abs(y))))
        self.anchors_ = anchor_horizons(min(self.max_horizon_steps, max(1, n // 4)))
        self.chosen_, self.scale_kind_, self.scores_ = [], [], []
        for h in self.anchors_:
            best, best_err, best_f, t_best = cands[0], np.inf, None, None
            # every candidate is scored on the same origins (one judged on fewer cases could
            # win by luck); those that cannot reach back over half the window sit out
            fits = [k for k in cands if k.lookback + _SMOOTH <= n - h - w // 2 and h <= k.max_h]
            start = max([n - h - w, _VOL_STEPS] + [k.lookback + _SMOOTH for k in fits])
            start = min(start, max(0, n - h - 2))
            t = np.arange(start, n - h)
            for cand in fits if t.size >= 2 else []:
                f = cand.point(y, c, t, np.full(t.size, h))
                err = float(np.mean(np.abs(y[t + h] - f)))
                if cand.name != "last":
                    # the last value is the robust default: another rule must beat it clearly,
                    # or selection noise on a drifting series costs more than it gains
                    err = err / (1.0 - self.margin)
                if err < best_err:
                    best, best_err, best_f, t_best = cand, err, f, t
            self.chosen_.append(best)
            if best_f is None:  # history too short to score anything: last value, no spread
                self.scale_kind_.append("add")
                self.scores_.append(np.zeros(1))
                continue
            r = y[t_best + h] - best_f
            tv = np.maximum(t_best, _VOL_STEPS)
            vol = (ad[tv + 1] - ad[tv + 1 - _VOL_STEPS]) / _VOL_STEPS + floor * 0.1
            scales = {"add": np.ones_like(r), "rel": np.maximum(np.abs(best_f), floor), "vol": vol}
            kind = min(_SCALES, key=lambda k: _pinball90(r / scales[k], scales[k]))
            self.scale_kind_.append(kind)
            self.scores_.append(r / scales[kind])

    def update(self, values: np.ndarray) -> Self:
        v = np.asarray(values, dtype=float).ravel()
        self.values_ = append_filled(self.values_, v, self._keep)
        self.origin_s_ += v.size * self.step_s_
        return self

    def _plan(self, horizon_steps: int, levels: tuple[float, ...]) -> tuple:
        """Per step: chosen candidate index, scale kind index, quantile offsets (cached)."""
        key = (horizon_steps, levels)
        if key not in self._cache:
            hs = np.arange(1, horizon_steps + 1)
            a = self.anchors_
            nearest = np.abs(hs[:, None] - a[None, :]).argmin(axis=1)
            table = np.array([np.quantile(s, levels) for s in self.scores_])  # anchors x levels
            grow = np.sqrt(np.maximum(hs / a[-1], 1.0))
            off = np.stack([np.interp(hs, a, table[:, j]) * grow for j in range(len(levels))])
            off = np.maximum.accumulate(off, axis=0)
            kinds = np.array([_SCALES.index(self.scale_kind_[i]) for i in nearest])
            groups = {}
            for i, cand in enumerate(self.chosen_):
                groups.setdefault(cand.name, (cand, []))[1].extend(np.flatnonzero(nearest == i))
            plan = [(cand, np.array(sorted(ix))) for cand, ix in groups.values() if ix]
            self._cache[key] = (plan, kinds, off)
        return self._cache[key]

    def predict(self, horizon_steps: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        if horizon_steps < 1:
            raise ForecastError(f"horizon_steps must be >= 1, got {horizon_steps}")
        lv = tuple(sorted(float(q) for q in levels))
        plan, kinds, off = self._plan(horizon_steps, lv)
        y = self.values_
        c = np.concatenate(([0.0], np.cumsum(y)))
        t_last = y.size - 1
        mean = np.empty(horizon_steps)
        for cand, ix in plan:
            h = ix + 1
            mean[ix] = cand.point(y, c, np.full(h.size, t_last), h)
        mean = np.maximum(mean, 0.0)
        d = np.abs(np.diff(y[-_VOL_STEPS - 1 :]))
        vol = (float(np.mean(d)) if d.size else 0.0) + self._floor * 0.1
        scale = np.choose(kinds, (np.ones(horizon_steps), np.maximum(mean, self._floor), np.full(horizon_steps, vol)))
        q = np.maximum(mean + off * scale, 0.0)
        return Forecast(self.origin_s_, self.step_s_, mean, {lvl: q[i] for i, lvl in enumerate(lv)}, self.name)


def _pinball90(scores: np.ndarray, scale: np.ndarray) -> float:
    """q0.9 pinball loss (in the series' units) of the conformal band built from `scores`."""
    d = (scores - np.quantile(scores, 0.9)) * scale
    return float(np.mean(np.maximum(0.9 * d, -0.1 * d)))
