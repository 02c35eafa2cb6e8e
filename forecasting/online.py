"""OnlineForecaster: what the simulator and the live loop call every tick. Pure.

Rule: ``observe(values, now_s)`` appends newly observed samples (at the series step) to a
bounded history; ``forecast(now_s, horizon_steps)`` refits the model when ``refit_every_s``
of caller time has passed since the last fit (or none exists yet), and otherwise rolls the
fitted model forward with ``update()`` on the samples observed since. A model that calibrates
its own quantiles (class attribute ``self_calibrating = True``: split conformal on its trailing
residuals, recomputed at every refit, so residuals of forecasts made since the last fit are
used at the next) is used as it is; any other model's quantiles pass through the online
conformal calibrator, which scores every forecast as its actuals arrive and keeps its scores
across refits. Calibrating twice would widen the band for the first calibrator's own noise. A fit that raises keeps the previous model, and
``last_failure`` says why, so the policy can hold; with no model at all ``forecast`` returns
None. Time only enters as ``now_s`` arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from forecasting.base import DEFAULT_LEVELS, Forecaster
from forecasting.conformal import ConformalForecaster
from forecasting.registry import make_forecaster
from forecasting.types import Forecast, Series


class OnlineForecaster:
    """model: registry name or factory; step_s: series step; window_s: history kept for fits.

    refit_every_s: refit cadence in seconds of caller time (default 3600).
    levels: quantile levels produced. calibrate: wrap the model in ConformalForecaster unless
        it calibrates itself (see the module docstring).
    """

    def __init__(
        self,
        model: str | Callable[[], Forecaster] = "auto",
        step_s: float = 60.0,
        refit_every_s: float = 3600.0,
        window_s: float = 7 * 86400.0,
        levels: Sequence[float] = DEFAULT_LEVELS,
        calibrate: bool = True,
        calibration_window: int = 1440,
    ) -> None:
        self._factory = (lambda: make_forecaster(model)) if isinstance(model, str) else model
        self.step_s = step_s
        self.refit_every_s = refit_every_s
        self.window_steps = max(1, int(window_s / step_s))
        self.levels = tuple(levels)
        self.calibrate = calibrate
        self.calibration_window = calibration_window
        self._values = np.empty(0)
        self._start_s = 0.0  # time of self._values[0]
        self._model: Forecaster | None = None
        self._fitted_at_s: float | None = None
        self._pending = np.empty(0)  # observed since the model last saw data
        self.last_failure: str | None = None
        self.fit_count = 0

    def observe(self, values: np.ndarray, now_s: float) -> None:
        """New samples at the series step; the last one is the sample just before now_s."""
        v = np.asarray(values, dtype=float).ravel()
        if v.size == 0:
            return
        if self._values.size == 0:
            self._start_s = now_s - v.size * self.step_s
        joined = np.concatenate((self._values, v))
        drop = max(0, joined.size - self.window_steps)
        self._values = joined[drop:]
        self._start_s += drop * self.step_s
        self._pending = np.concatenate((self._pending, v))

    @property
    def metadata(self) -> dict[str, object]:
        """Model name, fitted periods (s), last fit time, last failure."""
        m = self._model
        base = getattr(m, "base", m)
        return {
            "model": getattr(base, "name", None),
            "periods_s": tuple(getattr(base, "periods_s_", ())),
            "fitted_at_s": self._fitted_at_s,
            "last_failure": self.last_failure,
        }

    def forecast(self, now_s: float, horizon_steps: int) -> Forecast | None:
        """The forecast from the newest sample on; None when no model could ever be fitted."""
        due = self._fitted_at_s is None or now_s - self._fitted_at_s >= self.refit_every_s
        if due and self._values.size:
            self._refit(now_s)
        if self._model is None:
            return None
        if self._pending.size:
            self._model.update(self._pending)
            self._pending = np.empty(0)
        return self._model.predict(horizon_steps, self.levels)

    def refit(self, now_s: float) -> bool:
        """Refit now, whatever the cadence (for callers that schedule fits themselves, off the
        tick); True when it succeeded. A failure keeps the previous model (see last_failure)."""
        if not self._values.size:
            self.last_failure = "fit failed: no history yet"
            return False
        self._refit(now_s)
        return self.last_failure is None

    def _refit(self, now_s: float) -> None:
        history = Series(self._values, self.step_s, self._start_s)
        fresh = self._factory()
        wrapper = self._model if isinstance(self._model, ConformalForecaster) else None
        old_base = wrapper.base if wrapper is not None else None
        try:
            if not self.calibrate or getattr(fresh, "self_calibrating", False):
                candidate = fresh.fit(history)
            elif wrapper is not None:  # keep the calibration scores across refits
                wrapper.base = fresh
                candidate = wrapper.fit(history)
            else:
                candidate = ConformalForecaster(fresh, window=self.calibration_window).fit(history)
        except Exception as exc:  # a failed fit must never kill the loop: keep the old model
            if wrapper is not None and old_base is not None:
                wrapper.base = old_base
            self.last_failure = f"fit failed: {type(exc).__name__}: {exc}"
            self._fitted_at_s = now_s  # retry at the next cadence, not every tick
            return
        self._model = candidate
        self._fitted_at_s = now_s
        self._pending = np.empty(0)
        self.last_failure = None
        self.fit_count += 1
