"""Errors raised by forecasting. Pure."""


class ForecastError(Exception):
    """A forecast could not be made (empty or all-missing history, invalid horizon)."""
