"""The controller's own Prometheus metrics, served at /metrics. Not pure (mutable counters).

Rule: the names, types and labels are exactly those listed in manifests/README.md (prefix
`predictive_autoscaler_`), registered in a dedicated CollectorRegistry (never the process-wide
default one), so several controllers in one process (tests, benchmarks) never collide.
`render()` gives the text exposition the /metrics endpoint serves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "predictive_autoscaler_"
TARGET = ("namespace", "target")
FIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TICK_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
WRITE_RESOURCES = ("horizontalpodautoscalers", "scaledobjects", "scale", "pods", "events")
ERROR_STAGES = ("query", "fit", "decide", "lead_time", "api")


class ControllerMetrics:
    """Every metric of manifests/README.md, in its own registry (`registry`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.forecast_rps = Gauge(
            PREFIX + "forecast_rps", "Forecast request rate at the planning horizon (now + "
            "lead time), per forecast quantile.", (*TARGET, "quantile"), registry=r)
        self.observed_rps = Gauge(PREFIX + "observed_rps", "Request rate read from Prometheus "
                                  "at this tick.", TARGET, registry=r)
        self.desired_floor_replicas = Gauge(
            PREFIX + "desired_floor_replicas", "The predicted need: the floor written (floor "
            "mode), the value served (metric mode) or the count (direct mode); also in dry "
            "run.", TARGET, registry=r)
        self.hpa_desired_replicas = Gauge(PREFIX + "hpa_desired_replicas", "The HPA's own "
                                          "status.desiredReplicas.", TARGET, registry=r)
        self.user_min_replicas = Gauge(PREFIX + "user_min_replicas", "The user's own "
                                       "minReplicas the controller restores.", TARGET,
                                       registry=r)
        self.lead_time_seconds = Gauge(PREFIX + "lead_time_seconds", "Lead time the policy "
                                       "plans with, s.", TARGET, registry=r)
        self.lead_time_samples = Gauge(PREFIX + "lead_time_samples", "Pods measured in the "
                                       "rolling lead-time distribution.", TARGET, registry=r)
        self.decisions = Counter(PREFIX + "decisions", "Decisions by reason.",
                                 (*TARGET, "reason"), registry=r)
        self.metrics_stale = Gauge(PREFIX + "metrics_stale", "1 while the target's metrics are "
                                   "stale or missing (the floor is held), else 0.", TARGET,
                                   registry=r)
        self.write_errors = Counter(PREFIX + "write_errors", "Failed writes to Kubernetes.",
                                    (*TARGET, "resource"), registry=r)
        self.errors = Counter(PREFIX + "errors", "Other errors, by stage.", ("stage",),
                              registry=r)
        self.fit_duration_seconds = Histogram(PREFIX + "fit_duration_seconds", "Duration of "
                                              "one forecaster fit, s.", buckets=FIT_BUCKETS_S,
                                              registry=r)
        self.tick_duration_seconds = Histogram(PREFIX + "tick_duration_seconds", "Duration of "
                                               "one tick over all targets, s.",
                                               buckets=TICK_BUCKETS_S, registry=r)
        self.last_tick_timestamp_seconds = Gauge(
            PREFIX + "last_tick_timestamp_seconds", "Unix time the last tick completed (leader "
            "only).", registry=r)
        self.is_leader = Gauge(PREFIX + "is_leader", "1 on the replica holding the Lease, "
                               "else 0.", registry=r)
        for stage in ERROR_STAGES:  # expose zeros, so alerts and rate() see the series at once
            self.errors.labels(stage)

    def set_forecast(self, namespace: str, target: str, quantiles: Mapping[float, float]) -> None:
        for level, value in quantiles.items():
            self.forecast_rps.labels(namespace, target, format(level, "g")).set(value)

    def forget(self, namespace: str, target: str) -> None:
        """Drop a removed target's series (labelled children of every per-target metric)."""
        for metric in (self.observed_rps, self.desired_floor_replicas, self.hpa_desired_replicas,
                       self.user_min_replicas, self.lead_time_seconds, self.lead_time_samples,
                       self.metrics_stale):
            with contextlib.suppress(KeyError):  # never set for this target
                metric.remove(namespace, target)
        for metric in (self.forecast_rps, self.decisions, self.write_errors):
            for labels in [k for k in metric._metrics if k[:2] == (namespace, target)]:
                metric.remove(*labels)

    def render(self) -> bytes:
        """The text exposition of this registry."""
        return generate_latest(self.registry)
