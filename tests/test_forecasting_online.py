"""Surge detector, conformal calibration, the online forecaster and the backtest."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.backtest import backtest
from forecasting.base import Forecaster
from forecasting.conformal import ConformalForecaster
from forecasting.naive import LastValue, SeasonalNaive
from forecasting.online import OnlineForecaster
from forecasting.surge import SurgeConfig, SurgeState, detect_surge
from forecasting.types import Series

DAY = 144  # 10-minute steps


def _diurnal(days: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    peak = 400 * np.exp(-(((t % DAY) - 100) ** 2) / 50)  # a sharp daily peak, 5x the base
    return 100 + peak + rng.normal(0, 3, t.size)


def _run_surge(values: np.ndarray, warm: int) -> list[bool]:
    """Forecast each sample with daily seasonal naive (q0.99) fitted on what came before."""
    model = SeasonalNaive("daily", residual_window_steps=3 * DAY).fit(Series(values[:warm], 600.0))
    state, flags = SurgeState(), []
    for x in values[warm:]:
        band = float(model.predict(1, (0.99,)).quantiles[0.99][0])
        signal, state = detect_surge(float(x), band, state)
        flags.append(signal.surge)
        model.update(np.array([x]))
    return flags


@pytest.mark.parametrize(
    ("transform", "expect_surge"),
    [
        pytest.param(lambda y: y, False, id="daily-peak-repeats"),
        pytest.param(lambda y: np.where(np.arange(y.size) >= 6 * DAY + 20, 10 * y, y), True, id="10x-step"),
        pytest.param(lambda y: np.where(np.arange(y.size) == 6 * DAY + 20, 10 * y, y), False, id="single-spike"),
    ],
)
def test_surge_vs_seasonal_peak(transform, expect_surge):
    flags = _run_surge(transform(_diurnal(7)), 5 * DAY)
    assert any(flags) == expect_surge


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        pytest.param([300, 300], False, id="two-above-not-enough"),
        pytest.param([300, 300, 300], True, id="three-above"),
        pytest.param([300, 300, 300, 100], True, id="settling-holds"),
        pytest.param([300, 300, 300] + [100] * 5, False, id="clears-after-five"),
        pytest.param([115, 115, 115, 115], False, id="within-margin"),
    ],
)
def test_surge_state_machine(samples, expected):
    state, signal = SurgeState(), None
    for x in samples:
        signal, state = detect_surge(float(x), 100.0, state, SurgeConfig())
    assert signal.surge == expected


class _Gauss(Forecaster):
    """Mean 0 forecaster of N(0, 1) noise with deliberately wrong (too narrow) quantiles."""

    name = "gauss"

    def fit(self, history):
        self.origin_s_, self.step_s_ = history.end_s, history.step_s
        return self

    def update(self, values):
        self.origin_s_ += len(values) * self.step_s_
        return self

    def predict(self, horizon_steps, levels=(0.5, 0.9)):
        from forecasting.types import Forecast

        z = np.zeros(horizon_steps)
        return Forecast(self.origin_s_, self.step_s_, z, {lv: z + 0.01 * lv for lv in levels})


def test_conformal_reaches_nominal_coverage():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 6000)
    m = ConformalForecaster(_Gauss(), window=1000, max_horizon_steps=5, relative=False).fit(Series(y[:10], 1.0))
    hits = []
    for i in range(10, 5990):
        q = m.predict(3, (0.5, 0.9)).quantiles[0.9]
        if i > 2000:
            hits.append(y[i + 2] <= q[2])
        m.update(y[i : i + 1])
    # N(0,1): q0.9 = 1.2816; with 4000 checks coverage lands within 0.02 of 0.9
    assert abs(np.mean(hits) - 0.9) < 0.02
    assert m.predict(3, (0.9,)).quantiles[0.9][0] == pytest.approx(1.2816, abs=0.12)


class _Failing(LastValue):
    calls = 0

    def fit(self, history):
        _Failing.calls += 1
        if _Failing.calls > 1:
            raise RuntimeError("boom")
        return super().fit(history)


def test_online_refits_on_cadence_and_holds_on_failure():
    y = _diurnal(3)
    of = OnlineForecaster(_Failing, step_s=600.0, refit_every_s=3600.0, window_s=2 * 86400.0)
    of.observe(y[:DAY], now_s=DAY * 600.0)
    fc = of.forecast(DAY * 600.0, 6)
    assert fc is not None and fc.start_s == DAY * 600.0 and of.fit_count == 1
    of.observe(y[DAY : DAY + 3], now_s=(DAY + 3) * 600.0)
    fc = of.forecast((DAY + 3) * 600.0, 6)  # 1800 s later: rolled forward, not refitted
    assert fc.start_s == (DAY + 3) * 600.0 and of.fit_count == 1 and of.last_failure is None
    of.observe(y[DAY + 3 : DAY + 6], now_s=(DAY + 6) * 600.0)
    fc = of.forecast((DAY + 6) * 600.0, 6)  # due: the refit raises, the old model holds
    assert fc is not None and fc.start_s == (DAY + 6) * 600.0
    assert of.last_failure is not None and "boom" in of.last_failure
    assert of.metadata["model"] == "last"


def test_online_without_data_returns_none():
    assert OnlineForecaster("last").forecast(0.0, 5) is None


def test_backtest_hand_counted():
    # y = 0,1,2,...: last value misses by exactly h at horizon h
    y = np.arange(200, dtype=float)
    res = backtest(Series(y, 60.0), {"last": lambda: LastValue()}, [1, 3], 100, 200, 1, 10)
    assert res.row("last", 1).mae == pytest.approx(1.0)
    assert res.row("last", 3).mae == pytest.approx(3.0)
    assert res.row("last", 3).mase == pytest.approx(3.0)  # in-sample 1-step change is 1


def test_refit_on_demand_fits_once_whatever_the_cadence() -> None:
    f = OnlineForecaster("last", step_s=60.0, refit_every_s=float("inf"))
    assert f.refit(0.0) is False and f.last_failure == "fit failed: no history yet"
    f.observe(np.full(30, 10.0), 1800.0)
    assert f.refit(1800.0) is True and f.fit_count == 1 and f.last_failure is None
    fc = f.forecast(1815.0, 3)
    assert fc is not None and f.fit_count == 1  # an infinite cadence never refits by itself
    assert np.allclose(fc.mean, 10.0)
