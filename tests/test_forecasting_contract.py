"""One contract test over every registered forecaster (scikit-learn style)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from forecasting.backtest import collect_forecasts
from forecasting.errors import ForecastError
from forecasting.registry import make_forecaster, model_names
from forecasting.types import Series

STEP_S = 600.0  # 144 samples a day keeps the statsmodels and sklearn fits quick
DAY = 144
SEASONAL = {"seasonal-naive", "seasonal-naive-daily", "seasonal-naive-weekly", "holt-winters", "stl", "auto"}


def daily(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100 + 50 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 3, n)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("name", model_names())
def test_fit_returns_self_and_horizon_honoured(name):
    m = make_forecaster(name)
    hist = Series(daily(3 * DAY), STEP_S, 1000.0)
    assert m.fit(hist) is m
    fc = m.predict(7, (0.1, 0.5, 0.9))
    assert fc.horizon_steps == 7 and fc.start_s == hist.end_s and fc.step_s == STEP_S
    assert all(q.shape == (7,) for q in fc.quantiles.values())
    stacked = np.array([fc.quantiles[lv] for lv in sorted(fc.quantiles)])
    assert np.all(np.diff(stacked, axis=0) >= -1e-9), "quantiles must be ordered at each step"
    assert np.all(np.isfinite(fc.mean))


@pytest.mark.parametrize("name", model_names())
def test_no_look_ahead(name):
    y = daily(3 * DAY)
    origin = 2 * DAY + 10
    other = y.copy()
    other[origin:] = 10 * other[origin:] + 500  # wildly different future
    runs = [
        collect_forecasts(Series(v, STEP_S), lambda: make_forecaster(name), [1, 3], origin - 8,
                          origin + 4, origin_every_steps=2, refit_every_steps=1000, levels=(0.9,))
        for v in (y, other)
    ]
    (o1, m1, q1), (_, m2, q2) = runs
    before = o1 <= origin
    np.testing.assert_allclose(m1[before], m2[before])
    np.testing.assert_allclose(q1[0.9][before], q2[0.9][before])


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("n", [pytest.param(5, id="5-samples"), pytest.param(int(1.5 * DAY), id="1.5-days")])
def test_short_history_does_not_raise(name, n):
    fc = make_forecaster(name).fit(Series(daily(n), STEP_S)).predict(4)
    assert fc.horizon_steps == 4 and np.all(np.isfinite(fc.mean))


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize(
    "values", [pytest.param(np.array([]), id="empty"), pytest.param(np.full(50, np.nan), id="all-nan")]
)
def test_no_data_raises(name, values):
    with pytest.raises(ForecastError):
        make_forecaster(name).fit(Series(values, STEP_S))


@pytest.mark.parametrize("name", model_names())
def test_update_moves_origin(name):
    y = daily(3 * DAY)
    m = make_forecaster(name).fit(Series(y[:-6], STEP_S, 0.0))
    start0 = m.predict(3).start_s
    m.update(y[-6:])
    assert m.predict(3).start_s == start0 + 6 * STEP_S


@pytest.mark.parametrize("name", sorted(SEASONAL - {"seasonal-naive-weekly"}))
def test_seasonal_models_follow_the_cycle(name):
    # a clean daily sine: half a day ahead, the forecast must sit on the other side of the mean
    y = 100 + 50 * np.sin(2 * np.pi * np.arange(4 * DAY) / DAY)
    fc = make_forecaster(name).fit(Series(y, STEP_S)).predict(DAY)
    truth = 100 + 50 * np.sin(2 * np.pi * np.arange(4 * DAY, 5 * DAY) / DAY)
    assert np.mean(np.abs(fc.mean - truth)) < 10.0  # last value would err by ~32 on average
