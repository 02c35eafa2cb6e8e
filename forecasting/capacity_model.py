"""Learn the request rate one replica serves from history: rate per ready replica vs GPU utilization.

The rule (DESIGN.md, "Capacity"): regress the request rate per ready replica on the per-replica
utilization (0..1, the busy share that GPU utilization tracks) with a robust regression
(scikit-learn ``HuberRegressor``, through the origin by default since an idle replica serves
nothing and is idle), and read the rate at utilization 1.0 (the capacity) and at the target.
When the history cannot support a fit, say why instead of guessing: too few usable points, too
little spread in utilization, or a non-positive slope (more load with less utilization means the
metric does not measure this workload). Pure: arrays in, a value out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import HuberRegressor


@dataclass(frozen=True)
class CapacityFit:
    """Result of :func:`learn_capacity`.

    capacity_rps_per_replica: request rate one replica serves at utilization 1.0, or None when the
        data do not support a fit (see reason).
    rate_at_target_rps: request rate one replica serves at the target utilization, or None.
    reason: "ok" or why no fit was made ("too-few-points", "no-utilization-spread",
        "non-positive-slope").
    slope_rps_per_util: fitted req/s per replica per unit of utilization (None without a fit).
    intercept_rps: fitted intercept in req/s (0 through the origin; None without a fit).
    n_points: usable samples (finite, at least one ready replica).
    """

    capacity_rps_per_replica: float | None
    rate_at_target_rps: float | None
    reason: str
    slope_rps_per_util: float | None = None
    intercept_rps: float | None = None
    n_points: int = 0

    @property
    def ok(self) -> bool:
        return self.capacity_rps_per_replica is not None


def learn_capacity(
    rate_rps: np.ndarray,
    ready_replicas: np.ndarray,
    gpu_util: np.ndarray,
    target_utilization: float = 0.7,
    min_points: int = 30,
    min_util_spread: float = 0.1,
    fit_intercept: bool = False,
    huber_epsilon: float = 1.35,
) -> CapacityFit:
    """Fit rate per ready replica = slope * utilization (+ intercept) and read off capacity.

    rate_rps: total request rate per sample (req/s); ready_replicas: ready replicas per sample;
    gpu_util: mean per-replica utilization per sample (0..1). Samples with a NaN, or without a ready
    replica, are skipped. min_util_spread: required 5th-95th percentile range of utilization, so the
    slope is not read off a single operating point.
    """
    rate = np.asarray(rate_rps, dtype=float)
    ready = np.asarray(ready_replicas, dtype=float)
    util = np.asarray(gpu_util, dtype=float)
    if not (rate.shape == ready.shape == util.shape):
        raise ValueError("rate_rps, ready_replicas and gpu_util must have the same shape")
    if not 0 < target_utilization <= 1:
        raise ValueError("target_utilization must be in (0, 1]")
    keep = np.isfinite(rate) & np.isfinite(ready) & np.isfinite(util) & (ready > 0)
    n = int(keep.sum())
    if n < max(min_points, 3):
        return CapacityFit(None, None, "too-few-points", n_points=n)
    x = util[keep]
    y = rate[keep] / ready[keep]
    lo, hi = np.percentile(x, [5.0, 95.0])
    if hi - lo < min_util_spread:
        return CapacityFit(None, None, "no-utilization-spread", n_points=n)
    # Through the origin any cloud of positive points gets a positive slope, so check the direction
    # on the data themselves first: rate must rise with utilization.
    if not np.cov(x, y)[0, 1] > 0:
        return CapacityFit(None, None, "non-positive-slope", n_points=n)
    # Huber needs a sensible scale: fit in units of the median rate so epsilon means the same
    # thing for 3 req/s LLM replicas and 100 req/s small models.
    scale = float(np.median(np.abs(y))) or 1.0
    model = HuberRegressor(epsilon=huber_epsilon, fit_intercept=fit_intercept, alpha=0.0)
    model.fit(x.reshape(-1, 1), y / scale)
    slope = float(model.coef_[0]) * scale
    intercept = float(model.intercept_) * scale if fit_intercept else 0.0
    if not slope > 0:
        return CapacityFit(None, None, "non-positive-slope", slope, intercept, n)
    return CapacityFit(
        capacity_rps_per_replica=intercept + slope,
        rate_at_target_rps=intercept + slope * target_utilization,
        reason="ok",
        slope_rps_per_util=slope,
        intercept_rps=intercept,
        n_points=n,
    )
