"""Seasonality detection, baselines, metrics, registry: tables of named cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.metrics import coverage, mae, pinball
from forecasting.naive import LastValue, SeasonalNaive
from forecasting.registry import make_forecaster, model_names
from forecasting.seasonality import detect_periods
from forecasting.types import Series

RNG = np.random.default_rng(42)
T = np.arange(7 * 1440)  # a week of minutes


def _sine(period_steps: float, n: int = T.size, noise: float = 5.0) -> np.ndarray:
    t = np.arange(n)
    return 100 + 40 * np.sin(2 * np.pi * t / period_steps) + RNG.normal(0, noise, n)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(_sine(1440), {86400.0}, id="daily"),
        pytest.param(_sine(60, 3 * 1440), {3600.0}, id="hourly"),
        pytest.param(_sine(1440) + 60 * (T % 120 < 10), {86400.0, 7200.0}, id="daily-plus-2h-batch"),
        pytest.param(RNG.normal(100, 5, T.size), set(), id="white-noise"),
        pytest.param(100 + 0.01 * T + RNG.normal(0, 1, T.size), set(), id="trend-only"),
        pytest.param(_sine(1440, int(1.5 * 1440)), set(), id="1.5-periods-not-enough"),
    ],
)
def test_detect_periods(values, expected):
    assert set(detect_periods(values, 60.0)) == expected


@pytest.mark.parametrize(
    ("model", "history", "expected"),
    [
        pytest.param(LastValue(), [1, 2, 3], [3, 3, 3], id="last"),
        pytest.param(LastValue(), [1, 2, np.nan], [2, 2, 2], id="last-skips-gap"),
        pytest.param(SeasonalNaive(180.0), [1, 2, 3, 4, 5, 6], [4, 5, 6], id="period-3-steps"),
        pytest.param(SeasonalNaive(120.0), [1, 2, 3, 4, 5], [4, 5, 4], id="wraps-past-period"),
        pytest.param(SeasonalNaive("daily"), [1, 2, 7], [7, 7, 7], id="too-short-degrades"),
    ],
)
def test_baseline_points(model, history, expected):
    fc = model.fit(Series(np.array(history, dtype=float), 60.0)).predict(3)
    np.testing.assert_allclose(fc.mean, expected)


def test_last_value_spread_is_residual_quantile():
    # a random walk with +-1 steps: the 1-step residual is +-1, so q0.9 = last + 1, q0.1 = last - 1
    steps = RNG.choice([-1.0, 1.0], 3000)
    y = 1000 + np.cumsum(steps)
    fc = LastValue(residual_window_steps=2000).fit(Series(y, 60.0)).predict(1, (0.1, 0.9))
    assert fc.quantiles[0.9][0] == pytest.approx(y[-1] + 1)
    assert fc.quantiles[0.1][0] == pytest.approx(y[-1] - 1)


@pytest.mark.parametrize(
    ("actual", "q", "level", "expected"),
    [
        pytest.param([10.0], [8.0], 0.9, 1.8, id="under-forecast"),
        pytest.param([10.0], [12.0], 0.9, 0.2, id="over-forecast"),
        pytest.param([1.0, np.nan], [1.0, 5.0], 0.5, 0.0, id="nan-ignored"),
    ],
)
def test_pinball(actual, q, level, expected):
    assert pinball(np.array(actual), np.array(q), level) == pytest.approx(expected)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50))
def test_metrics_invariants(xs):
    a = np.array(xs)
    assert mae(a, a) == 0.0
    assert coverage(a, a) == 1.0
    assert pinball(a, a, 0.9) == 0.0


def test_registry_unknown_lists_known():
    with pytest.raises(ValueError, match="known: last, seasonal-naive"):
        make_forecaster("prophet")
    assert {"last", "seasonal-naive-daily", "seasonal-naive-weekly", "holt-winters", "stl",
            "gbm-quantile", "auto"} <= set(model_names())
