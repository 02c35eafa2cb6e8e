"""AutoForecaster: per series and per horizon, the candidates with the lowest recent loss. Pure.

Rule: at fit, every candidate is backtested on the last ``score_window_s`` of history (or all
of it when shorter) at anchor horizons (every step up to 6, then geometric). The candidates
have no fitted parameters, so every error is out of sample and the backtest is a few
vectorized array shifts. Per anchor horizon two choices are made on the same origins:

- the body (the mean and the quantiles at levels <= 0.5): the candidate with the lowest MAE;
- the upper band (levels > 0.5): the (candidate, score scale) pair whose split-conformal band
  has the lowest mean pinball loss at q0.9 and q0.95, the levels capacity is sized for. A
  recurring peak (a batch job every 2 h) is missed by the last value but foreseen by a seasonal
  candidate; MAE alone may still prefer the last value, the upper-level loss does not.

A non-last candidate must beat the last value by ``margin`` (relative) to be chosen, or
selection noise on a drifting series costs more than it gains. Quantiles are the chosen
candidate's point plus the empirical quantile of its scores (split conformal), the scores being
residuals divided by a scale chosen per horizon: 1 (additive), the forecast level (relative),
or the local volatility (an EWMA of absolute step changes, known at the origin), whichever
gives the lowest loss. Steps between anchors take the nearest anchor's choices; steps past the
last anchor widen its offsets by sqrt(h / h_anchor). Refitting (hourly in the live loop)
recomputes the scores over the trailing window, so residuals of forecasts made since the last
fit calibrate the next one: the model calibrates itself (``self_calibrating``).
Candidates: last value, a pull toward the one-day mean, a damped local trend, and per period
(each detected one and 1 d / 7 d): seasonal naive, seasonal difference and seasonal ratio
corrections of the current level applied to the sharp (unsmoothed) value one period back, and
a ratio-corrected mean of the last three periods' values at the target phase.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
from scipy.signal import lfilter

from forecasting.base import DEFAULT_LEVELS, Forecaster
from forecasting.errors import ForecastError
from forecasting.naive import DAY_S, WEEK_S, append_filled, observed_values
from forecasting.seasonality import detect_periods
from forecasting.types import Forecast, Series

_SMOOTH = 3  # samples averaged where a candidate reads the current level of a noisy series
_VOL_ALPHA = 2.0 / (30 + 1)  # EWMA weight of the volatility scale (about a 30-step memory)
_SCALES = ("add", "rel", "vol")
_UPPER_LEVELS = (0.9, 0.95)  # the upper band is chosen by its loss at these levels
_UPPER_POOL = 3  # candidates (best by MAE, plus the last value) tried for the upper band
_TREND_DAMP = 0.9  # per-step damping of the local trend: its reach levels off near 9 steps
_PROFILE_PERIODS = 3
_REGIME_SMOOTH, _REGIME_LAG = 5, 10  # the regime: relative change of the 5-step mean over 10 steps
_REGIME_REACH = _REGIME_SMOOTH + _REGIME_LAG
_REGIME_MIN = 50  # least scores per regime bin for the upper band to be conditioned on it

Point = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _ma(c: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """Mean of y[t-k+1..t] from c = cumsum with a leading 0."""
    return (c[t + 1] - c[t + 1 - k]) / k


def _damped(h: np.ndarray) -> np.ndarray:
    """sum_{i=1..h} phi^i: how many steps of trend a damped forecast adds at horizon h."""
    p = _TREND_DAMP
    return p * (1.0 - p ** np.asarray(h, dtype=float)) / (1.0 - p)


@dataclass(frozen=True)
class Candidate:
    """A parameter-free forecast rule: point(y, c, t, h) -> forecasts of y[t+h]."""

    name: str
    lookback: int
    point: Point
    max_h: int = 10**9


def _trend(span: int) -> Candidate:
    """Level plus a damped slope; slope = difference of the two halves' means of the span."""
    m = span // 2

    def point(y, c, t, h, m=m):
        recent, before = _ma(c, t, m), _ma(c, t - m, m)
        slope = (recent - before) / m
        # the recent mean lags a ramp by (m - 1) / 2 steps
        return recent + slope * ((m - 1) / 2.0 + _damped(h))

    return Candidate(f"trend-{span}", span + 1, point)


def _seasonal(p: int) -> list[Candidate]:
    k = _SMOOTH

    def snaive(y, c, t, h, p=p):
        return y[t + h - p * np.ceil(h / p).astype(int)]

    # the value one period back is read sharp: smoothing it would smear a recurring edge (a
    # batch job starting within a minute); the level correction is smoothed instead
    def sdelta(y, c, t, h, p=p, k=k):
        return y[t + h - p] + _ma(c, t, k) - _ma(c, t - p, k)

    def sratio(y, c, t, h, p=p, k=k):
        base = np.maximum(_ma(c, t - p, k), 1e-9)
        return y[t + h - p] * np.clip(_ma(c, t, k) / base, 0.2, 5.0)

    def sprofile(y, c, t, h, p=p, k=k, j=_PROFILE_PERIODS):
        # averaging over periods, not over time, cuts the noise without blurring the shape
        ref = sum(y[t + h - i * p] for i in range(1, j + 1)) / j
        base = sum(_ma(c, t - i * p, k) for i in range(1, j + 1)) / j
        return ref * np.clip(_ma(c, t, k) / np.maximum(base, 1e-9), 0.2, 5.0)

    return [
        Candidate(f"snaive-{p}", p, snaive),
        Candidate(f"sdelta-{p}", p + k, sdelta, p),
        Candidate(f"sratio-{p}", p + k, sratio, p),
        Candidate(f"sprofile-{p}", _PROFILE_PERIODS * p + k, sprofile, p),
    ]


def _candidates(periods_steps: Sequence[int], day_steps: int) -> list[Candidate]:
    out = [
        Candidate("last", 1, lambda y, c, t, h: y[t]),
        Candidate(
            "revert-day",
            day_steps,
            lambda y, c, t, h: 0.85 * y[t] + 0.15 * _ma(c, t, day_steps),
        ),
        _trend(10),
        _trend(30),
    ]
    for p in periods_steps:
        out += _seasonal(p)
    return out


def _ewma_vol(y: np.ndarray) -> np.ndarray:
    """vol[t]: EWMA of |y[i] - y[i-1]| over i <= t (known at origin t); vol[0] = 0."""
    d = np.abs(np.diff(y, prepend=y[:1]))
    return lfilter([_VOL_ALPHA], [1.0, _VOL_ALPHA - 1.0], d)


@dataclass(frozen=True)
class _Choice:
    """A candidate, a score scale and the scores of its band at one anchor horizon.

    by_regime: the same scores split by the origin's regime bin (falling, flat, rising), or
    None when a bin holds too few of them.
    """

    cand: Candidate
    scale: str
    scores: np.ndarray
    by_regime: tuple[np.ndarray, ...] | None = None


def _regime_change(c: np.ndarray, t: np.ndarray, floor: float) -> np.ndarray:
    """Relative change of the recent mean over the last _REGIME_LAG steps (known at t)."""
    now = _ma(c, t, _REGIME_SMOOTH)
    return now / np.maximum(_ma(c, t - _REGIME_LAG, _REGIME_SMOOTH), floor) - 1.0


class AutoForecaster(Forecaster):
    """Per horizon: body by MAE, upper band by pinball loss (see the module docstring).

    score_window_s: history span whose origins score the candidates and calibrate quantiles.
    max_horizon_steps: farthest anchor horizon scored at fit; beyond it the last anchor's
        choice and offsets (widened by sqrt(h / h_anchor)) apply.
    margin: relative loss by which a candidate must beat the last value to be chosen over it.
    """

    name = "auto"
    self_calibrating: ClassVar[bool] = True

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
        cands = [c for c in _candidates(usable, day) if y.size > c.lookback + _SMOOTH]
        if not cands or cands[0].name != "last":
            cands.insert(0, _candidates([], day)[0])
        self._floor = max(1e-9, 0.05 * float(np.mean(np.abs(y[-day:]))))
        self._select(y, cands, step)
        used = [ch.cand for ch in (*self.body_, *self.upper_)]
        self._keep = max(max(c.lookback for c in used) + _SMOOTH, _REGIME_REACH) + 1
        self.values_ = y[-self._keep :]
        self._vol = float(_ewma_vol(y)[-1])
        self.origin_s_ = float(history.end_s)
        self._cache: dict[tuple[int, tuple[float, ...], int], tuple] = {}
        return self

    @property
    def chosen_(self) -> list[Candidate]:
        """The body candidate per anchor horizon (what the mean follows)."""
        return [ch.cand for ch in self.body_]

    def _scales(self, f: np.ndarray, vol: np.ndarray) -> dict[str, np.ndarray]:
        return {"add": np.ones_like(f), "rel": np.maximum(np.abs(f), self._floor), "vol": vol}

    def _select(self, y: np.ndarray, cands: list[Candidate], step: float) -> None:
        n = y.size
        c = np.concatenate(([0.0], np.cumsum(y)))
        vol_all = _ewma_vol(y) + 0.1 * self._floor
        top = min(self.max_horizon_steps, max(1, n // 4))
        geo = np.round(np.geomspace(1, top, 10)).astype(int)
        self.anchors_ = np.unique(np.concatenate((np.arange(1, min(6, top) + 1), geo)))
        # Mondrian calibration of the upper band by regime: on a ramp the last value and the
        # seasonal rules lag, so the residuals of rising origins are larger; one pooled band
        # under-covers exactly where capacity is needed. Bins are terciles of the change
        # (no threshold to tune), each bin calibrated on its own scores.
        g_all = np.full(n, np.nan)
        if n > _REGIME_REACH:
            tg = np.arange(_REGIME_REACH, n)
            g_all[tg] = _regime_change(c, tg, self._floor)
        recent = g_all[-int(self.score_window_s / step) :]
        recent = recent[np.isfinite(recent)]
        self.regime_edges_ = (np.quantile(recent, (1 / 3, 2 / 3)) if recent.size >= 3 * _REGIME_MIN
                              else np.array([np.inf, np.inf]))
        self.body_: list[_Choice] = []
        self.upper_: list[_Choice] = []
        for h in self.anchors_:
            w = max(2, min(int(self.score_window_s / step), n - h - 1 - _SMOOTH))
            # every candidate is scored on the same origins (one judged on fewer cases could
            # win by luck); those that cannot reach back over half the window sit out
            fits = [k for k in cands if k.lookback + _SMOOTH <= n - h - w // 2 and h <= k.max_h]
            start = max([n - h - w, _SMOOTH] + [k.lookback + _SMOOTH for k in fits])
            t = np.arange(min(start, max(0, n - h - 2)), n - h)
            if t.size < 2 or not fits:  # too short to score anything: last value, no spread
                self.body_.append(_Choice(cands[0], "add", np.zeros(1)))
                self.upper_.append(_Choice(cands[0], "add", np.zeros(1)))
                continue
            hh = np.full(t.size, h)
            actual = y[t + h]
            vol = vol_all[t]
            scored = []
            for cand in fits:
                f = cand.point(y, c, t, hh)
                err = float(np.mean(np.abs(actual - f)))
                scored.append((err if cand.name == "last" else err / (1.0 - self.margin), cand, f))
            scored.sort(key=lambda e: e[0])
            pool = scored[:_UPPER_POOL] + [e for e in scored[_UPPER_POOL:] if e[1].name == "last"]
            best_body, best_upper = None, None
            for rank, (_, cand, f) in enumerate(pool):
                r = actual - f
                for kind, s in self._scales(f, vol).items():
                    z = r / s
                    qs = _quantiles(np.sort(z), (0.1, *_UPPER_LEVELS))
                    body_loss = _pinball(z, qs[0], 0.1, s)
                    up_loss = sum(_pinball(z, q, lv, s) for q, lv in zip(qs[1:], _UPPER_LEVELS, strict=True))
                    if cand.name != "last":
                        up_loss /= 1.0 - self.margin
                    if rank == 0 and (best_body is None or body_loss < best_body[0]):
                        best_body = (body_loss, cand, kind, z)
                    if best_upper is None or up_loss < best_upper[0]:
                        best_upper = (up_loss, cand, kind, z)
            assert best_body is not None and best_upper is not None  # "last" always scores
            _, cand, kind, z = best_body
            self.body_.append(_Choice(cand, kind, np.sort(z)))
            _, cand, kind, z = best_upper
            g = g_all[t]
            regime = np.searchsorted(self.regime_edges_, np.where(np.isfinite(g), g, 0.0))
            split = tuple(np.sort(z[regime == b]) for b in range(3))
            ok = all(s.size >= _REGIME_MIN for s in split)
            self.upper_.append(_Choice(cand, kind, np.sort(z), split if ok else None))

    def update(self, values: np.ndarray) -> Self:
        v = np.asarray(values, dtype=float).ravel()
        self.values_ = append_filled(self.values_, v, self._keep)
        for d in np.abs(np.diff(self.values_[-v.size - 1 :])) if v.size else ():
            self._vol += _VOL_ALPHA * (float(d) - self._vol)
        self.origin_s_ += v.size * self.step_s_
        return self

    def _plan(self, horizon_steps: int, levels: tuple[float, ...], regime: int) -> tuple:
        """Distinct candidates with their reach, and per band: candidate row, scale kind and
        quantile offsets per step (cached, so a predict is a few array operations)."""
        key = (horizon_steps, levels, regime)
        if key not in self._cache:
            hs = np.arange(1, horizon_steps + 1)
            a = self.anchors_
            nearest = np.abs(hs[:, None] - a[None, :]).argmin(axis=1)
            grow = np.sqrt(np.maximum(hs / a[-1], 1.0))
            names = list(dict.fromkeys(ch.cand.name for ch in (*self.body_, *self.upper_)))
            rows, kinds, offs = [], [], []
            for choices in (self.body_, self.upper_):
                table = np.array([
                    _quantiles(ch.scores if ch.by_regime is None else ch.by_regime[regime], levels)
                    for ch in choices
                ])
                offs.append((table[nearest] * grow[:, None]).T)  # levels x steps
                kinds.append(np.array([_SCALES.index(choices[i].scale) for i in nearest]))
                rows.append(np.array([names.index(choices[i].cand.name) for i in nearest]))
            cands = {ch.cand.name: ch.cand for ch in (*self.body_, *self.upper_)}
            # each candidate is evaluated up to the farthest step that uses it (a seasonal rule
            # cannot reach past its period)
            reach = [int(max(np.max(np.flatnonzero(r == i), initial=-1) for r in rows)) + 1
                     for i in range(len(names))]
            upper = np.array([lv > 0.5 for lv in levels])[:, None]
            self._cache[key] = ([cands[nm] for nm in names], reach, rows, kinds, offs, upper)
        return self._cache[key]

    def predict(self, horizon_steps: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        if horizon_steps < 1:
            raise ForecastError(f"horizon_steps must be >= 1, got {horizon_steps}")
        lv = tuple(sorted(float(q) for q in levels))
        y = self.values_
        c = np.concatenate(([0.0], np.cumsum(y)))
        t_last = y.size - 1
        g = _regime_change(c, np.array([t_last]), self._floor)[0] if y.size > _REGIME_REACH else 0.0
        cands, reach, rows, kinds, offs, upper = self._plan(
            horizon_steps, lv, int(np.searchsorted(self.regime_edges_, g)))
        points = np.zeros((len(cands), horizon_steps))
        for i, (cand, m) in enumerate(zip(cands, reach, strict=True)):
            if m > 0:
                h = np.arange(1, m + 1)
                points[i, :m] = cand.point(y, c, np.full(m, t_last), h)
        np.maximum(points, 0.0, out=points)
        steps = np.arange(horizon_steps)
        floor, vol = self._floor, self._vol + 0.1 * self._floor
        band = []
        for row, kind, off in zip(rows, kinds, offs, strict=True):
            point = points[row, steps]
            scale = np.where(kind == 0, 1.0, np.where(kind == 1, np.maximum(point, floor), vol))
            band.append(point + off * scale)
        mean = points[rows[0], steps]
        q = np.where(upper, band[1], band[0])
        q = np.maximum.accumulate(np.maximum(q, 0.0), axis=0)
        return Forecast(self.origin_s_, self.step_s_, mean, {lvl: q[i] for i, lvl in enumerate(lv)}, self.name)


def _quantiles(z: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Empirical quantiles (linear interpolation, as np.quantile) of sorted scores z."""
    pos = np.asarray(levels, dtype=float) * (z.size - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, z.size - 1)
    return z[lo] + (pos - lo) * (z[hi] - z[lo])


def _pinball(z: np.ndarray, q: float, level: float, scale: np.ndarray) -> float:
    """Pinball loss (in the series' units) at `level` of the band `point + q * scale`."""
    d = (z - q) * scale
    return float(np.mean(np.maximum(level * d, (level - 1.0) * d)))
