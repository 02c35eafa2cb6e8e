"""Forecaster registry: name -> factory. Pure."""

from __future__ import annotations

from collections.abc import Callable

from forecasting.auto import AutoForecaster
from forecasting.base import Forecaster
from forecasting.decomposition import STLForecaster
from forecasting.ets import HoltWinters
from forecasting.naive import LastValue, SeasonalNaive
from forecasting.quantile_gbm import QuantileGBM

FACTORIES: dict[str, Callable[[], Forecaster]] = {
    "last": LastValue,
    "seasonal-naive": lambda: SeasonalNaive("auto"),
    "seasonal-naive-daily": lambda: SeasonalNaive("daily"),
    "seasonal-naive-weekly": lambda: SeasonalNaive("weekly"),
    "holt-winters": HoltWinters,
    "stl": STLForecaster,
    "gbm-quantile": QuantileGBM,
    "auto": AutoForecaster,
}


def model_names() -> list[str]:
    return list(FACTORIES)


def make_forecaster(name: str) -> Forecaster:
    """A fresh, unfitted forecaster; ValueError naming the known models for an unknown name."""
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown forecasting model {name!r}; known: {', '.join(FACTORIES)}") from None
    return factory()
