"""The HTTP API (FastAPI): probes and the controller's metrics. Not pure (serves a Service).

Rules:
- One APIRouter per resource; the running `Service` reaches handlers as a dependency
  (`ServiceDep`), so tests swap it with `app.dependency_overrides[get_service]`.
- /healthz says the process is alive (the scheduler runs); /readyz says it can do its job
  (Prometheus reachable, and Kubernetes unless standalone) and answers 503 with the reason.
- /metrics serves `ControllerMetrics.render()` in the Prometheus text format 0.0.4.
- Handlers are plain `def`: FastAPI runs them in its thread pool, so a slow probe never
  blocks the event loop. The REST API (issue 4) adds its routers here.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Annotated

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from autoscaler.service import Service

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]

health = APIRouter(tags=["health"])
metrics = APIRouter(tags=["metrics"])


@health.get("/healthz")
def healthz(service: ServiceDep) -> JSONResponse:
    """Alive: the scheduler that runs the ticks is running."""
    if service.running:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "down", "reason": "scheduler not running"}, status_code=503)


@health.get("/readyz")
def readyz(service: ServiceDep) -> JSONResponse:
    """Ready: Prometheus reachable, and Kubernetes reachable unless standalone."""
    problems = [p for p in (service.prometheus_problem(), service.kubernetes_problem()) if p]
    if problems:
        return JSONResponse({"status": "not ready", "reason": "; ".join(problems)},
                            status_code=503)
    return JSONResponse({"status": "ready"})


@metrics.get("/metrics", response_class=Response)
def metrics_text(service: ServiceDep) -> Response:
    """The controller's own metrics (predictive_autoscaler_*)."""
    return Response(service.controller.metrics.render(), media_type=METRICS_CONTENT_TYPE)


def create_app(service: Service) -> FastAPI:
    """The API serving `service` (which the caller starts and stops)."""
    app = FastAPI(title="predictive-autoscaler", version="0.1.0")
    app.state.service = service
    app.include_router(health)
    app.include_router(metrics)
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGINT/SIGTERM end `run()` normally (exit status 0):
    uvicorn re-raises the signal after its graceful shutdown, which kills the process with it
    before the controller has stopped its jobs."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(app: FastAPI, host: str, port: int) -> bool:
    """Serve `app` until SIGINT/SIGTERM (call from the main thread); False when the server
    never started (e.g. the port is taken)."""
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    server.run()
    return bool(server.started)
