"""Forecast accuracy metrics: MAE, MASE, pinball loss, coverage. Pure.

All functions ignore positions where the actual or the forecast is NaN (a gap is not an error).
"""

from __future__ import annotations

import numpy as np


def _pair(actual: np.ndarray, forecast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(actual, dtype=float).ravel()
    f = np.asarray(forecast, dtype=float).ravel()
    if a.shape != f.shape:
        raise ValueError(f"actual and forecast differ in shape: {a.shape} vs {f.shape}")
    ok = np.isfinite(a) & np.isfinite(f)
    return a[ok], f[ok]


def mae(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Mean absolute error; NaN when nothing is comparable."""
    a, f = _pair(actual, forecast)
    return float(np.mean(np.abs(a - f))) if a.size else float("nan")


def naive_scale(insample: np.ndarray, lag_steps: int = 1) -> float:
    """MASE denominator: mean absolute `lag_steps`-difference of the in-sample series."""
    x = np.asarray(insample, dtype=float)
    if x.size <= lag_steps:
        return float("nan")
    d = np.abs(x[lag_steps:] - x[:-lag_steps])
    d = d[np.isfinite(d)]
    return float(np.mean(d)) if d.size else float("nan")


def mase(actual: np.ndarray, forecast: np.ndarray, scale: float) -> float:
    """Mean absolute scaled error: MAE divided by a naive in-sample scale (see naive_scale)."""
    if not scale > 0:
        return float("nan")
    return mae(actual, forecast) / scale


def pinball(actual: np.ndarray, quantile_forecast: np.ndarray, level: float) -> float:
    """Mean pinball (quantile) loss of a `level` quantile forecast."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a, q = _pair(actual, quantile_forecast)
    if not a.size:
        return float("nan")
    d = a - q
    return float(np.mean(np.maximum(level * d, (level - 1.0) * d)))


def coverage(actual: np.ndarray, quantile_forecast: np.ndarray) -> float:
    """Share of actuals at or below the quantile forecast (about `level` when calibrated)."""
    a, q = _pair(actual, quantile_forecast)
    return float(np.mean(a <= q)) if a.size else float("nan")
