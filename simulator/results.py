"""What one replay of one policy measured, and the comparison across policies."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PolicyResult:
    """Figures of one policy on one replay (see README "What the output means")."""

    policy: str
    params: dict[str, Any]
    fidelity: str
    label: str = ""
    requests: int = 0
    within_slo: float = 0.0
    replica_hours: float = 0.0
    cold_starts: int = 0
    pod_failures: int = 0
    scale_events: int = 0
    under_provisioned_s: float = 0.0
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    cost_vs_oracle: float = float("nan")
    reasons: Counter[str] = field(default_factory=Counter)
    # time series for plots: tick times, ready and total pods, observed and true demand
    t_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ready: np.ndarray = field(default_factory=lambda: np.zeros(0))
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    demand_rps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    floor: np.ndarray = field(default_factory=lambda: np.zeros(0))
    latency_cdf_ms: tuple[np.ndarray, np.ndarray] | None = None
    wall_s: float = 0.0
    price_per_replica_hour: float = 0.0

    @property
    def slo_attainment(self) -> float:
        return self.within_slo / self.requests if self.requests else 1.0

    @property
    def requests_per_replica_hour(self) -> float:
        return self.requests / self.replica_hours if self.replica_hours else float("nan")

    def summary(self) -> dict[str, Any]:
        """The --json record of this policy."""
        return {
            "policy": self.policy,
            "params": self.params,
            "slo_attainment": self.slo_attainment,
            "replica_hours": self.replica_hours,
            "cost_usd": self.replica_hours * self.price_per_replica_hour,
            "cost_vs_oracle": self.cost_vs_oracle,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "cold_starts": self.cold_starts,
            "pod_failures": self.pod_failures,
            "scale_events": self.scale_events,
            "requests": self.requests,
            "requests_per_replica_hour": self.requests_per_replica_hour,
            "under_provisioned_s": self.under_provisioned_s,
            "fidelity": self.fidelity,
            "latency_estimated": self.fidelity == "fast",
            "reasons": dict(self.reasons),
            "wall_s": self.wall_s,
        }


@dataclass
class Comparison:
    """Every policy of one run, with the oracle that costs are divided by."""

    trace: str
    profile: str
    slo_ms: float
    start_s: float
    duration_s: float
    seed: int
    fidelity: str
    results: list[PolicyResult]
    oracle: PolicyResult

    def to_json(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "profile": self.profile,
            "slo_ms": self.slo_ms,
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "seed": self.seed,
            "fidelity": self.fidelity,
            "results": [r.summary() for r in self.results],
        }
