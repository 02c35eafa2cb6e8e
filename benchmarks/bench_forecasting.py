"""Forecasting benchmark: speed per model and the quality targets of issue 2, section 8.

Exits non-zero when a quality target is missed. Traces from $AUTOSCALER_TRACES_DIR
(default ../shared/traces relative to the project root).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecasting.auto import AutoForecaster  # noqa: E402
from forecasting.backtest import backtest  # noqa: E402
from forecasting.naive import LastValue, SeasonalNaive  # noqa: E402
from forecasting.online import OnlineForecaster  # noqa: E402
from forecasting.registry import make_forecaster, model_names  # noqa: E402
from forecasting.types import Series  # noqa: E402

TRACES = Path(os.environ.get("AUTOSCALER_TRACES_DIR", ROOT.parent / "shared" / "traces"))
DAY_S = 86400


def load(name: str) -> Series:
    path = TRACES / name / "series.csv"
    if not path.exists():
        sys.exit(f"trace {path} missing: set AUTOSCALER_TRACES_DIR to the traces directory")
    d = np.loadtxt(path, delimiter=",", skiprows=1)
    step = float(d[1, 0] - d[0, 0])
    return Series(d[:, 1] / step, step, float(d[0, 0]))


def speed() -> None:
    s = load("worldcup98")
    hist = Series(s.values[38 * 1440 : 45 * 1440], 60.0)  # the simulator's 7-day window
    nxt = s.values[45 * 1440 : 45 * 1440 + 200]
    print("speed on worldcup98, 7 days at 60 s (10,080 samples), horizon 60 steps")
    print(f"{'model':24s} {'fit ms':>9s} {'update+predict ms':>18s}")
    for name in model_names():
        t0 = time.perf_counter()
        m = make_forecaster(name).fit(hist)
        fit_ms = (time.perf_counter() - t0) * 1000
        n = 200 if name != "gbm-quantile" else 20
        t0 = time.perf_counter()
        for i in range(n):
            m.update(nxt[i : i + 1])
            m.predict(60)
        up_ms = (time.perf_counter() - t0) * 1000 / n
        print(f"{name:24s} {fit_ms:9.1f} {up_ms:18.3f}")


def quality() -> bool:
    ok = True
    cases = [("worldcup98", 45, 60, 5), ("alibaba-servegen-llm-14d", 10, 14, 1)]
    for name, d0, d1, every in cases:
        s = load(name)
        spd = int(DAY_S / s.step_s)
        hs = [int(m * 60 / s.step_s) for m in (10, 20, 60)]
        w = 3 * spd
        factories = {
            "last": lambda w=w: LastValue(residual_window_steps=w),
            "seasonal-naive-daily": lambda w=w: SeasonalNaive("daily", residual_window_steps=w),
            "seasonal-naive-weekly": lambda w=w: SeasonalNaive("weekly", residual_window_steps=w),
            "auto": AutoForecaster,
        }
        t0 = time.perf_counter()
        res = backtest(
            s, factories, hs, d0 * spd, d1 * spd, origin_every_steps=every,
            refit_every_steps=max(1, int(3600 / s.step_s)),
            history_window_steps=10 * spd,  # weekly naive needs more than 7 days
        )
        dt = time.perf_counter() - t0
        print(f"\n{name} days {d0}-{d1}, origins every {every} steps, hourly refits ({dt:.1f} s)")
        print(f"{'model':24s} {'min':>4s} {'n':>5s} {'MAE':>9s} {'MASE':>6s} {'pin.9':>8s} {'cov.9':>6s}")
        for r in res.rows:
            print(f"{r.model:24s} {int(r.horizon_steps * s.step_s / 60):4d} {r.n:5d} {r.mae:9.2f}"
                  f" {r.mase:6.2f} {r.pinball[0.9]:8.3f} {r.coverage_q90:6.3f}")
        for h in hs:
            a = res.row("auto", h)
            best = min(res.row(m, h).mae for m in factories if m != "auto")
            last = res.row("last", h)
            mae_ratio = a.mae / best
            pin_ratio = a.pinball[0.9] / last.pinball[0.9]
            checks = {
                "MAE <= 1.02 x best baseline": mae_ratio <= 1.02,
                "pinball0.9 <= 0.90 x last+conformal": pin_ratio <= 0.90,
                "coverage0.9 in [0.85, 0.95]": 0.85 <= a.coverage_q90 <= 0.95,
            }
            minutes = int(h * s.step_s / 60)
            print(f"  {minutes:3d} min: auto MAE / best baseline = {mae_ratio:.3f}, "
                  f"pinball / last = {pin_ratio:.3f}, coverage = {a.coverage_q90:.3f}")
            for label, passed in checks.items():
                if not passed:
                    ok = False
                    print(f"  MISSED at {minutes} min: {label}")
    return ok


def _workload_rate(name: str, days: float) -> np.ndarray:
    from simulator.workloads import make_workload  # benchmarks may use the simulator's generators

    tr = make_workload(name, duration_s=days * DAY_S)
    k = int(round(60 / tr.interval_s))
    return tr.counts[: tr.counts.size // k * k].reshape(-1, k).sum(axis=1) / 60.0


def _online_q95(y: np.ndarray, warm: int, horizon: int) -> np.ndarray:
    of = OnlineForecaster("auto", step_s=60.0)
    of.observe(y[:warm], warm * 60.0)
    q = np.full((y.size, horizon), np.nan)
    for o in range(warm, y.size):
        q[o] = of.forecast(o * 60.0, horizon).quantiles[0.95]
        of.observe(y[o : o + 1], (o + 1) * 60.0)
    return q


def recurring_peaks() -> bool:
    """batch-peaks: the q0.95 made 3 and 5 steps before a job reaches 80 % of its first 5 min."""
    warm, ok = 360, True
    y = _workload_rate("batch-peaks", 7)
    q = _online_q95(y, warm, 6)
    print("\nbatch-peaks, OnlineForecaster('auto') at 60 s from 6 h of history, 7 days")
    for k in (3, 5):
        starts = [s for s in range(60, y.size - 5, 120) if s - k >= warm]
        r = np.array([q[s - k, k] / y[s : s + 5].mean() for s in starts])
        share = float(np.mean(r >= 0.8))
        print(f"  {k} steps before: q0.95 / job mean >= 0.8 for {share:.0%} of {r.size} jobs "
              f"(min {r.min():.2f}, median {np.median(r):.2f})")
        if share < 0.9:
            ok = False
            print(f"  MISSED: {k} steps before, share of jobs foreseen < 90 %")
    yd = _workload_rate("diurnal", 7)
    qd = _online_q95(yd, warm, 3)
    o = np.arange(warm, yd.size - 3)
    cover = float(np.mean(yd[o + 2] <= qd[o, 2]))
    print(f"  diurnal (no recurring peaks): q0.95 coverage at 3 steps = {cover:.3f}")
    if not 0.9 <= cover <= 0.98:
        ok = False
        print("  MISSED: diurnal q0.95 coverage at 3 steps outside [0.90, 0.98]")
    return ok


def main() -> int:
    warnings.simplefilter("ignore")
    speed()
    ok = recurring_peaks()
    return 0 if quality() and ok else 1


if __name__ == "__main__":
    sys.exit(main())
