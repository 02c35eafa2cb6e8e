"""The contract every forecaster follows (scikit-learn style). Pure.

- ``__init__`` stores hyperparameters only.
- ``fit(history) -> self`` learns from a :class:`Series`; fitted attributes end with ``_``.
- ``update(values) -> self`` appends observations that followed the fitted history and moves
  the forecast origin forward WITHOUT re-estimating parameters (the "roll forward" between
  refits that the live loop and the simulator do every tick). It must be cheap.
- ``predict(horizon_steps, levels) -> Forecast`` forecasts ``horizon_steps`` steps of
  ``history.step_s`` from the current origin, with the mean and one array per quantile level.
  Quantiles are non-decreasing in level at every step; nothing after the origin is used.
- Short history (fewer samples than the model needs) degrades to a simpler model, never raises;
  an empty or all-NaN history raises :class:`forecasting.errors.ForecastError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Self

import numpy as np

from forecasting.types import Forecast, Series

DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9, 0.95, 0.99)


class Forecaster(ABC):
    """Base class; see the module docstring for the contract."""

    name: ClassVar[str] = "base"

    @abstractmethod
    def fit(self, history: Series) -> Self: ...

    @abstractmethod
    def update(self, values: np.ndarray) -> Self: ...

    @abstractmethod
    def predict(self, horizon_steps: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast: ...
