"""The auto forecaster as the simulator drives it: recurring peaks, calibration, no double band."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.auto import AutoForecaster
from forecasting.conformal import ConformalForecaster
from forecasting.online import OnlineForecaster
from forecasting.types import Series
from simulator.workloads import make_workload

STEP_S = 60.0
WARM = 360  # 6 h of history before the first forecast
JOB_PERIOD, JOB_OFFSET = 120, 60  # batch-peaks: a job every 2 h, the first at 1 h (in steps)


def _rate(name: str, days: float) -> np.ndarray:
    """The workload's request rate per 60 s step (what the metric pipeline observes)."""
    tr = make_workload(name, duration_s=days * 86400)
    k = int(round(STEP_S / tr.interval_s))
    return tr.counts[: tr.counts.size // k * k].reshape(-1, k).sum(axis=1) / STEP_S


def _online_q95(y: np.ndarray, horizon: int) -> np.ndarray:
    """q0.95 of OnlineForecaster("auto") fed one step at a time; row o = forecast from origin o."""
    of = OnlineForecaster("auto", step_s=STEP_S)
    of.observe(y[:WARM], WARM * STEP_S)
    q = np.full((y.size, horizon), np.nan)
    for o in range(WARM, y.size):
        q[o] = of.forecast(o * STEP_S, horizon).quantiles[0.95]
        of.observe(y[o : o + 1], (o + 1) * STEP_S)
    return q


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    y = _rate("batch-peaks", 2.5)
    return y, _online_q95(y, 6)


@pytest.mark.parametrize("steps_before", [pytest.param(3, id="3-steps"), pytest.param(5, id="5-steps")])
def test_recurring_peak_is_inside_the_band_before_it_starts(batch, steps_before):
    # the forecast made `steps_before` steps before a job starts, for the job's first step, must
    # reach 80 % of the job's mean rate over its first 5 minutes (the base alone is ~20 %)
    y, q = batch
    starts = [s for s in range(JOB_OFFSET, y.size - 5, JOB_PERIOD) if s - steps_before >= WARM]
    assert len(starts) >= 20
    ratios = np.array([q[s - steps_before, steps_before] / y[s : s + 5].mean() for s in starts])
    assert np.mean(ratios >= 0.8) >= 0.9, np.round(ratios, 2)


def test_band_not_inflated_without_recurring_peaks():
    y = _rate("diurnal", 2.0)
    q = _online_q95(y, 3)
    o = np.arange(WARM, y.size - 3)
    cover = np.mean(y[o + 2] <= q[o, 2])
    assert 0.9 <= cover <= 0.98


@pytest.mark.parametrize(
    ("model", "wrapped"),
    [pytest.param("auto", False, id="auto-calibrates-itself"), pytest.param("last", True, id="last-wrapped")],
)
def test_online_calibrates_once(model, wrapped):
    of = OnlineForecaster(model, step_s=STEP_S)
    of.observe(100 + np.arange(500) % 7, 500 * STEP_S)
    assert of.forecast(500 * STEP_S, 5) is not None
    assert isinstance(of._model, ConformalForecaster) == wrapped


def test_auto_recalibrates_on_residuals_seen_since_its_last_fit():
    # calm history, then noisy samples that arrive through update() only: the next fit must
    # widen the band from them (a +-20 alternation: the 1-step residual of any rule is ~40)
    rng = np.random.default_rng(3)
    calm = 100 + rng.normal(0, 0.5, 2000)
    fc = AutoForecaster().fit(Series(calm, STEP_S)).predict(1, (0.1, 0.9))
    width0 = fc.quantiles[0.9][0] - fc.quantiles[0.1][0]
    noisy = 100 + 20 * np.where(np.arange(1000) % 2 == 0, 1.0, -1.0) + rng.normal(0, 0.5, 1000)
    fc = AutoForecaster().fit(Series(np.concatenate((calm, noisy)), STEP_S)).predict(1, (0.1, 0.9))
    width1 = fc.quantiles[0.9][0] - fc.quantiles[0.1][0]
    assert width0 < 5 and width1 > 10 * width0


def test_short_history_scores_candidates():
    # 6 h of a 2-hour square wave (a 10-step job): enough to score the seasonal rules, which
    # know where the next edge is; the last value would stay at 100
    y = np.where(np.arange(360) % 120 < 10, 500.0, 100.0)
    fc = AutoForecaster().fit(Series(y[:357], STEP_S)).predict(5, (0.5, 0.95))
    np.testing.assert_allclose(fc.mean, [100, 100, 100, 500, 500], rtol=0.05)
    np.testing.assert_allclose(fc.quantiles[0.95][3:], 500.0, rtol=0.05)
