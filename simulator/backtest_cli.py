"""`autoscaler backtest`: rolling-origin backtest of forecasters on a trace or workload.

The series is the trace's request rate at its own interval (per-request traces: per 60 s, since
one-second counts of a few requests are mostly noise). Origins cover the last third of the
series (at most ~1,500 of them, evenly spaced); everything before the first origin is history.
Models are refitted every simulated hour, as the simulator and the live loop do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from forecasting.backtest import BacktestResult, backtest
from forecasting.registry import make_forecaster, model_names
from forecasting.types import Series
from simulator.errors import SimulatorError
from simulator.traces import Trace, load_trace
from simulator.workloads import make_workload

DEFAULT_MODELS = ("last", "seasonal-naive", "holt-winters", "stl", "gbm-quantile", "auto")
MAX_ORIGINS = 1500
PER_REQUEST_STEP_S = 60.0


@dataclass(frozen=True)
class BacktestReport:
    """The backtest with what it ran on."""

    trace: str
    step_s: float
    horizons_min: tuple[float, ...]
    horizons_steps: tuple[int, ...]
    result: BacktestResult
    models: tuple[str, ...]


def rate_series(trace: Trace) -> Series:
    """Request rate (req/s) at the trace's interval (60 s for per-request traces)."""
    if trace.is_per_request:
        k = int(PER_REQUEST_STEP_S / trace.bin_s)
        n = len(trace.counts) // k
        counts = trace.counts[: n * k].reshape(n, k).sum(axis=1)
        return Series(counts / PER_REQUEST_STEP_S, PER_REQUEST_STEP_S, trace.start_s)
    return Series(trace.counts / trace.interval_s, trace.interval_s, trace.start_s)


def run_backtest(trace: Path | None, workload: str | None, models: list[str],
                 horizons_min: list[float], seed: int = 0) -> BacktestReport:
    names = tuple(models) or DEFAULT_MODELS
    unknown = [m for m in names if m not in model_names()]
    if unknown:
        raise SimulatorError(f"unknown model {unknown[0]!r}: choose from {', '.join(model_names())}")
    tr = load_trace(trace) if trace is not None else make_workload(str(workload), seed=seed)
    series = rate_series(tr)
    steps = tuple(max(1, int(round(h * 60.0 / series.step_s))) for h in horizons_min)
    start = len(series) * 2 // 3
    span = len(series) - start - min(steps)
    if span < 1:
        raise SimulatorError(f"{tr.name}: {len(series)} steps of {series.step_s:g} s are too "
                             f"few for horizons up to {max(horizons_min):g} min")
    every = max(1, math.ceil(span / MAX_ORIGINS))
    refit = max(1, int(round(3600.0 / series.step_s)))
    factories = {name: (lambda n=name: make_forecaster(n)) for name in names}
    result = backtest(series, factories, steps, start, origin_every_steps=every,
                      refit_every_steps=refit, history_window_steps=int(7 * 86400 / series.step_s))
    return BacktestReport(tr.name, series.step_s, tuple(horizons_min), steps, result, names)


def backtest_table(report: BacktestReport) -> Table:
    t = Table(title=f"{report.trace}: rolling-origin backtest, step {report.step_s:g} s")
    for col in ("model", "horizon", "MAE (req/s)", "MASE", "pinball q0.9", "q0.9 coverage", "n"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name in report.models:
        for minutes, h in zip(report.horizons_min, report.horizons_steps, strict=True):
            row = report.result.row(name, h)
            t.add_row(name, f"{minutes:g} min", f"{row.mae:,.2f}", f"{row.mase:.3f}",
                      f"{row.pinball[0.9]:,.3f}", f"{row.coverage_q90:.3f}", f"{row.n}")
    return t
