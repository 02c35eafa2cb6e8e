"""The REST API's response bodies (pydantic, so /openapi.json documents them) and the pure
functions that build them from the Controller's per-target state. Pure (no clock, no I/O).

Rules: times are RFC 3339 UTC (pydantic datetimes); quantile levels are JSON object keys as
strings ("0.95"); values JSON cannot carry (NaN, infinities, numpy scalars) are converted
once here, NaN/inf becoming null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from autoscaler.target_state import DecisionRecord, TargetState
from forecasting.types import Forecast


class Problem(BaseModel):
    """An error: `detail` is a one-line reason (401, 403, 404, 412, 413, 415, 428, 429, 503)."""

    detail: str


class FieldProblem(BaseModel):
    field: str = Field(description="the offending field, body key or query parameter")
    reason: str


class InvalidProblem(BaseModel):
    """422: the request names a bad field (body key or query parameter) and says why."""

    detail: FieldProblem


class Bounds(BaseModel):
    min_replicas: int
    max_replicas: int


class TargetView(BaseModel):
    """One target as the controller runs it now."""

    namespace: str
    name: str
    kind: str = Field(description="Deployment or StatefulSet")
    mode: str = Field(description="floor | metric | direct")
    dry_run: bool
    paused: bool
    replicas: int | None = Field(description="the workload's spec.replicas (null: unknown)")
    ready_replicas: int | None = Field(description="its ready pods (null: unknown)")
    effective_replicas: int | None = Field(
        description="the count the last decision wants the workload to run")
    hpa_replicas: int | None = Field(description="the HPA's own desired count (null: none)")
    floor: int | None = Field(description="the floor the last decision set (null: none)")
    lead_time_s: float = Field(description="lead time planned with, s")
    lead_time_source: str
    last_decision_reason: str | None
    last_decision_at: datetime | None
    health: str = Field(description='"ok", "stale metrics", "fit failed: ...", '
                                    '"write failed: ..." or "error: ..."')


class DecisionView(BaseModel):
    """One decision with everything that explains it."""

    at: datetime
    reason: str
    floor: int | None
    replicas: int | None
    lead_time_s: float
    lead_time_source: str
    bounds: Bounds
    dry_run: bool
    paused: bool
    acted: bool
    written: bool
    inputs: dict[str, Any]
    forecast_quantiles_rps: dict[str, float | None] = Field(
        description="the forecast's maximum over the planning window, per quantile level")
    details: dict[str, Any]
    action: dict[str, Any]
    error: str | None


class DecisionLog(BaseModel):
    namespace: str
    name: str
    decisions: list[DecisionView] = Field(description="oldest first")


class ForecastBands(BaseModel):
    model: str
    step_s: float
    times: list[datetime] = Field(description="start of each step")
    mean: list[float | None]
    quantiles: dict[str, list[float | None]] = Field(description="level -> one value per step")


class ForecastView(BaseModel):
    namespace: str
    name: str
    forecast: ForecastBands | None
    reason: str | None = Field(description="why there is no forecast (null when there is)")


class PolicyChangeView(BaseModel):
    """A policy change as the history keeps it."""

    at: str
    who: str
    action: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None


class PolicyHistory(BaseModel):
    namespace: str
    name: str
    changes: list[PolicyChangeView] = Field(description="oldest first, at most 200")


class WhatIfAccepted(BaseModel):
    job_id: str
    status: str
    location: str


class WhatIfJob(BaseModel):
    status: str = Field(description="running | done | failed")
    result: dict[str, Any] | None
    error: str | None
    submitted_at: str | None = None


# -- builders ---------------------------------------------------------------------------------


def at(t_s: float) -> datetime:
    return datetime.fromtimestamp(t_s, UTC)


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays unwrapped, NaN and infinities as None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _level(level: float) -> str:
    return repr(float(level))


def health_of(state: TargetState, record: DecisionRecord | None) -> str:
    """The first problem that stops this target from being served well, else "ok"."""
    if record is not None and record.error:
        return record.error  # "write failed: ..." or "error: ..." from the loop
    failure = state.forecaster.last_failure
    if failure:
        return failure if failure.startswith("fit failed") else f"fit failed: {failure}"
    if record is not None and record.inputs.get("stale"):
        return "stale metrics"
    return "ok"


def target_view(state: TargetState, *, cluster_known: bool) -> TargetView:
    cfg = state.config
    record = state.log[-1] if state.log else None
    inputs = record.inputs if record is not None else {}
    lead = state.lead_time.estimate()

    def known(key: str) -> int | None:
        v = inputs.get(key)
        return int(v) if cluster_known and v is not None else None

    return TargetView(
        namespace=cfg.namespace, name=cfg.name, kind=cfg.kind, mode=cfg.mode,
        dry_run=cfg.dry_run, paused=state.paused, replicas=known("spec_replicas"),
        ready_replicas=known("ready_replicas"),
        effective_replicas=record.replicas if record is not None else None,
        hpa_replicas=known("hpa_replicas"),
        floor=record.floor if record is not None else None,
        lead_time_s=record.lead_time_s if record is not None else lead.lead_time_s,
        lead_time_source=record.lead_time_source if record is not None else lead.source,
        last_decision_reason=record.reason if record is not None else None,
        last_decision_at=at(record.now_s) if record is not None else None,
        health=health_of(state, record))


def decision_view(r: DecisionRecord) -> DecisionView:
    return DecisionView(
        at=at(r.now_s), reason=r.reason, floor=r.floor, replicas=r.replicas,
        lead_time_s=r.lead_time_s, lead_time_source=r.lead_time_source,
        bounds=Bounds(min_replicas=r.bounds[0], max_replicas=r.bounds[1]), dry_run=r.dry_run,
        paused=r.paused, acted=r.acted, written=r.written, inputs=jsonable(r.inputs),
        forecast_quantiles_rps={_level(k): jsonable(v)
                                for k, v in sorted(r.forecast_quantiles_rps.items())},
        details=jsonable(r.details), action=jsonable(r.action), error=r.error)


def forecast_bands(f: Forecast) -> ForecastBands:
    n = f.horizon_steps
    return ForecastBands(
        model=f.model, step_s=f.step_s, times=[at(f.start_s + i * f.step_s) for i in range(n)],
        mean=jsonable(np.asarray(f.mean, dtype=float)),
        quantiles={_level(level): jsonable(np.asarray(f.quantiles[level], dtype=float))
                   for level in f.levels()})


def forecast_view(state: TargetState) -> ForecastView:
    cfg = state.config
    f = state.last_forecast
    if f is not None:
        return ForecastView(namespace=cfg.namespace, name=cfg.name, forecast=forecast_bands(f),
                            reason=None)
    if state.forecaster.last_failure:
        reason = state.forecaster.last_failure
    elif state.fed_until_s is None:
        reason = "no history yet: the model is not fitted"
    elif not state.log:
        reason = "no decision yet"
    else:
        reason = "the model is not fitted yet"
    return ForecastView(namespace=cfg.namespace, name=cfg.name, forecast=None, reason=reason)
