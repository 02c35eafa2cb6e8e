"""The service shell's error hierarchy: one place, few kinds. Pure (no I/O).

Adapters translate library errors (requests, prometheus-api-client, kubernetes) into these at
their boundary, so the loop handles two questions only: is it temporary (retry after a delay,
keep the last safe state) or permanent (report it and stop trying this thing)? Missing or stale
data is normally a *reason* on a reading, not an exception; the exceptions below are for
callers that cannot proceed without the data (e.g. `autoscaler record`).
"""

from __future__ import annotations


class AutoscalerError(Exception):
    """Base of every error the service raises on purpose.

    temporary: True when retrying later may succeed (network, overload, conflict).
    retry_after_s: a suggested delay before retrying, seconds (None: the caller's backoff).
    """

    temporary: bool = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConfigError(AutoscalerError):
    """The configuration or a user-written query is invalid; fix it, retrying will not help."""


class MetricsError(AutoscalerError):
    """Base of metrics-source errors."""


class MetricsUnavailable(MetricsError):
    """Prometheus could not be reached or failed (connection, timeout, 5xx, 503 overload)."""

    temporary = True


class QueryRejected(MetricsError):
    """Prometheus refused a query (bad PromQL, too many points, 4xx): permanent for that query."""

    def __init__(self, message: str, *, query: str = "") -> None:
        super().__init__(message)
        self.query = query


class StaleMetrics(MetricsError):
    """A target's metrics are older than allowed; the loop holds instead of deciding."""

    temporary = True

    def __init__(self, message: str, *, last_sample_age_s: float | None = None) -> None:
        super().__init__(message)
        self.last_sample_age_s = last_sample_age_s


class MetricsGap(MetricsError):
    """Data has holes where the caller needs it complete; gaps_s lists [start, end) ranges."""

    def __init__(self, message: str, *, gaps_s: tuple[tuple[float, float], ...] = ()) -> None:
        super().__init__(message)
        self.gaps_s = gaps_s


class ActuationError(AutoscalerError):
    """A write to Kubernetes failed (forbidden, not found, invalid)."""


class WriteConflict(ActuationError):
    """The object changed under us (409 Conflict on resourceVersion); re-read and retry."""

    temporary = True


class KubernetesUnavailable(ActuationError):
    """The API server could not be reached or failed (connection, timeout, 5xx, 429)."""

    temporary = True
