"""Forecasting: series in, Forecast out. Pure: no clocks, no I/O, no global random state."""

from forecasting.types import Forecast, Series

__all__ = ["Forecast", "Series"]
