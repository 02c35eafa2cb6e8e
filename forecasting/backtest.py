"""Rolling-origin backtest: MAE, MASE, pinball loss and q0.9 coverage per model and horizon. Pure.

Rule: at each origin o (every ``origin_every_steps`` from ``start_index``) the model has seen
exactly the values before o. It is refitted on the last ``history_window_steps`` values when
``refit_every_steps`` have passed since its last fit, and otherwise rolled forward with
``update()`` on the values observed since, as the live loop does. Its forecast for step o+h-1
(horizon h) is scored against the actual. MASE divides by the mean absolute one-step change of
the values before ``start_index`` (one scale per series, so MASE ratios equal MAE ratios).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from forecasting.base import Forecaster
from forecasting.metrics import coverage, mae, naive_scale, pinball
from forecasting.types import Series


@dataclass(frozen=True)
class BacktestRow:
    """Scores of one model at one horizon.

    horizon_steps: steps ahead (1 = the step right after the origin).
    n: forecasts scored. mae, mase: of the mean. pinball: level -> mean pinball loss.
    coverage_q90: share of actuals at or below the q0.9 forecast.
    """

    model: str
    horizon_steps: int
    n: int
    mae: float
    mase: float
    pinball: Mapping[float, float]
    coverage_q90: float


@dataclass(frozen=True)
class BacktestResult:
    """rows: one per (model, horizon); forecasts: model -> (origins, horizons, mean, quantiles)."""

    rows: tuple[BacktestRow, ...]

    def row(self, model: str, horizon_steps: int) -> BacktestRow:
        return next(r for r in self.rows if r.model == model and r.horizon_steps == horizon_steps)


def collect_forecasts(
    series: Series,
    factory: Callable[[], Forecaster],
    horizons_steps: Sequence[int],
    start_index: int,
    end_index: int | None = None,
    origin_every_steps: int = 1,
    refit_every_steps: int = 60,
    history_window_steps: int | None = None,
    levels: Sequence[float] = (0.5, 0.9),
) -> tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """Origins, mean (origins x horizons) and quantiles (level -> origins x horizons)."""
    y = np.asarray(series.values, dtype=float)
    end = len(y) if end_index is None else end_index
    hs = np.asarray(horizons_steps, dtype=int)
    origins = np.arange(start_index, end - int(hs.min()) + 1, origin_every_steps)
    mean = np.full((origins.size, hs.size), np.nan)
    qs = {lv: np.full((origins.size, hs.size), np.nan) for lv in levels}
    model: Forecaster | None = None
    fitted_at = seen = -(10**18)
    for i, origin in enumerate(origins):
        o = int(origin)
        if model is None or o - fitted_at >= refit_every_steps:
            lo = 0 if history_window_steps is None else max(0, o - history_window_steps)
            model = factory().fit(Series(y[lo:o], series.step_s, series.start_s + lo * series.step_s))
            fitted_at = seen = o
        elif o > seen:
            model.update(y[seen:o])
            seen = o
        fc = model.predict(int(hs.max()), levels)
        mean[i] = fc.mean[hs - 1]
        for lv in levels:
            qs[lv][i] = fc.quantile(lv)[hs - 1]
    return origins, mean, qs


def backtest(
    series: Series,
    factories: Mapping[str, Callable[[], Forecaster]],
    horizons_steps: Sequence[int],
    start_index: int,
    end_index: int | None = None,
    origin_every_steps: int = 1,
    refit_every_steps: int = 60,
    history_window_steps: int | None = None,
    levels: Sequence[float] = (0.5, 0.9),
) -> BacktestResult:
    """Run every model over the same origins; see the module docstring for the protocol."""
    if 0.9 not in levels:
        levels = (*levels, 0.9)
    y = np.asarray(series.values, dtype=float)
    end = len(y) if end_index is None else end_index
    scale = naive_scale(y[:start_index])
    rows = []
    for name, factory in factories.items():
        origins, mean, qs = collect_forecasts(
            series, factory, horizons_steps, start_index, end, origin_every_steps,
            refit_every_steps, history_window_steps, levels,
        )
        for j, h in enumerate(horizons_steps):
            target = origins + h - 1
            ok = target < end
            actual = y[target[ok]]
            m = mean[ok, j]
            rows.append(
                BacktestRow(
                    model=name,
                    horizon_steps=int(h),
                    n=int(ok.sum()),
                    mae=mae(actual, m),
                    mase=mae(actual, m) / scale if scale > 0 else float("nan"),
                    pinball={lv: pinball(actual, qs[lv][ok, j], lv) for lv in levels},
                    coverage_q90=coverage(actual, qs[0.9][ok, j]),
                )
            )
    return BacktestResult(tuple(rows))
