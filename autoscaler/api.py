"""The REST API's read routers (targets, decisions, forecast) and the app wiring shared by all
routers: the caller and target dependencies, error mapping and middleware. Not pure.

Rules:
- One APIRouter per resource (api.py: targets, decisions, forecast; api_policy.py: policy,
  pause/resume; api_whatif.py: what-if jobs). Handlers are plain `def` (FastAPI's thread
  pool), because they may block on the policy store or the Kubernetes API.
- Authentication happens in AuthMiddleware, before routing (see api_middleware.py); the
  handlers only read `request.state.caller`. A target is looked up only after that, so a 404
  is the answer of an authorized caller alone.
- A target is addressed as namespace/name: the Deployment of that name first, else the
  StatefulSet.
- Errors are mapped once, here: PolicyInvalid and request validation -> 422
  {"detail": {"field", "reason"}}, PreconditionFailed -> 412, TooManyJobs -> 429
  (Retry-After), other AutoscalerErrors of the store -> 503.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from autoscaler.api_middleware import AuthMiddleware, BodyLimitMiddleware
from autoscaler.api_models import (
    DecisionLog,
    ForecastView,
    InvalidProblem,
    Problem,
    TargetView,
    decision_view,
    forecast_view,
    target_view,
)
from autoscaler.app import ServiceDep
from autoscaler.errors import AutoscalerError
from autoscaler.record import parse_duration_s, parse_time_s
from autoscaler.service import Service
from autoscaler.target_state import TargetKey, TargetState

log = logging.getLogger(__name__)

KINDS = ("Deployment", "StatefulSet")
TARGET_PATH = "/targets/{namespace}/{name}"

# Documents the bearer token in /openapi.json (the check itself is the middleware's).
bearer = HTTPBearer(auto_error=False, description="a token with the read or write scope")
SECURED = [Depends(bearer)]
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no or invalid bearer token"},
    403: {"model": Problem, "description": "the token lacks the scope"},
    503: {"model": Problem, "description": "authentication or the policy store unavailable"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such target"},
    422: {"model": InvalidProblem, "description": "a bad parameter"},
}


class Invalid(AutoscalerError):
    """A bad request parameter (422 naming it)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def caller_name(request: Request) -> str:
    caller = getattr(request.state, "caller", None)
    return caller.name if caller is not None else "anonymous"


CallerName = Annotated[str, Depends(caller_name)]


def find_key(service: Service, namespace: str, name: str) -> TargetKey:
    """The target's key (Deployment first, else StatefulSet); 404 when none."""
    for kind in KINDS:
        key = (namespace, kind, name)
        if key in service.controller.targets:
            return key
    if len(namespace) > 63 or len(name) > 253 or not f"{namespace}{name}".isprintable():
        # never a Kubernetes object name (namespace <= 63, name <= 253 characters): say so
        # without echoing it into a one-line reason
        raise HTTPException(404, "no target: not a Kubernetes namespace/name")
    raise HTTPException(404, f"no target {namespace}/{name}")


def target_state(service: ServiceDep, namespace: str, name: str) -> TargetState:
    return service.controller.targets[find_key(service, namespace, name)]


StateDep = Annotated[TargetState, Depends(target_state)]


def view_of(service: Service, state: TargetState) -> TargetView:
    return target_view(state, cluster_known=service.controller.cluster is not None)


# -- targets ----------------------------------------------------------------------------------

targets = APIRouter(prefix="/targets", tags=["targets"], dependencies=SECURED,
                    responses=AUTH_ERRORS)


@targets.get("", response_model=list[TargetView])
def list_targets(service: ServiceDep) -> list[TargetView]:
    """Every target: mode, replicas, floor, lead time, last decision and health."""
    return [view_of(service, s) for s in list(service.controller.targets.values())]


@targets.get("/{namespace}/{name}", response_model=TargetView, responses=NOT_FOUND)
def get_target(service: ServiceDep, state: StateDep) -> TargetView:
    """One target (namespace/name; a Deployment first, else a StatefulSet)."""
    return view_of(service, state)


# -- decisions and forecast -------------------------------------------------------------------

decisions = APIRouter(prefix=TARGET_PATH, tags=["decisions"], dependencies=SECURED,
                      responses={**AUTH_ERRORS, **NOT_FOUND})


def since_s(text: str, now_s: float) -> float:
    """A duration back from now (90s, 15m, 1h, 7d) or an RFC 3339 time -> epoch seconds."""
    try:
        return now_s - parse_duration_s(text, "since")
    except ValueError:
        pass
    try:
        t = parse_time_s(text, now_s, "since")
    except ValueError:
        raise Invalid("since", f"{text!r} is neither a duration (90s, 15m, 1h, 7d) nor an "
                               "RFC 3339 time with a zone (2026-11-29T12:00:00Z)") from None
    if not math.isfinite(t):
        raise Invalid("since", f"{text!r} is out of range")
    return t


@decisions.get("/decisions", response_model=DecisionLog)
def get_decisions(service: ServiceDep, state: StateDep,
                  since: Annotated[str | None, Query(
                      description="RFC 3339 time or a duration back from now (1h, 7d)",
                      max_length=64)] = None) -> DecisionLog:
    """The decision log (bounded, oldest first), each with its inputs, forecast quantiles,
    lead time, bounds and reason."""
    records = list(state.log)  # one atomic copy: the tick appends meanwhile
    if since is not None:
        t0 = since_s(since, service.clock())
        records = [r for r in records if r.now_s >= t0]
    return DecisionLog(namespace=state.config.namespace, name=state.config.name,
                       decisions=[decision_view(r) for r in records])


@decisions.get("/forecast", response_model=ForecastView)
def get_forecast(state: StateDep) -> ForecastView:
    """The forecast the last decision used, with its quantile bands; `forecast` null (and a
    reason) until the model is fitted."""
    return forecast_view(state)


# -- wiring -----------------------------------------------------------------------------------


def _problem(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install(app: FastAPI, service: Service) -> None:
    """Add the API's routers, error mapping and middleware to `app`."""
    from autoscaler.api_policy import pause, policy
    from autoscaler.api_whatif import jobs, whatif
    from autoscaler.policy_doc import PolicyInvalid
    from autoscaler.policy_store import PreconditionFailed
    from autoscaler.whatif import TooManyJobs

    for router in (targets, decisions, policy, pause, whatif, jobs):
        app.include_router(router)

    @app.exception_handler(PolicyInvalid)
    @app.exception_handler(Invalid)
    def invalid(request: Request, exc: Any) -> JSONResponse:
        return _problem(422, {"field": exc.field, "reason": exc.reason})

    @app.exception_handler(RequestValidationError)
    def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("request",), "msg": "invalid"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        return _problem(422, {"field": ".".join(loc) or "request",
                              "reason": str(first.get("msg", "invalid"))})

    @app.exception_handler(PreconditionFailed)
    def stale(request: Request, exc: PreconditionFailed) -> JSONResponse:
        return _problem(412, "the policy changed since it was read (stale If-Match): GET it "
                             "again and retry")

    @app.exception_handler(TooManyJobs)
    def too_many(request: Request, exc: TooManyJobs) -> JSONResponse:
        return _problem(429, str(exc), {"Retry-After": str(int(exc.retry_after_s or 30))})

    @app.exception_handler(AutoscalerError)
    def unavailable(request: Request, exc: AutoscalerError) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _problem(503, f"unavailable: {str(exc).splitlines()[0] if str(exc) else ''}",
                        {"Retry-After": "5"})

    # Starlette runs the LAST added middleware first: authentication, then the size limit.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AuthMiddleware, get_auth=lambda: service.auth)
