"""Forecasting: series in, Forecast out. Pure: no clocks, no I/O, no global random state."""

from forecasting.errors import ForecastError
from forecasting.online import OnlineForecaster
from forecasting.registry import make_forecaster, model_names
from forecasting.seasonality import detect_periods
from forecasting.surge import SurgeConfig, SurgeSignal, SurgeState, detect_surge
from forecasting.types import Forecast, Series

__all__ = [
    "Forecast",
    "ForecastError",
    "OnlineForecaster",
    "Series",
    "SurgeConfig",
    "SurgeSignal",
    "SurgeState",
    "detect_periods",
    "detect_surge",
    "make_forecaster",
    "model_names",
]
