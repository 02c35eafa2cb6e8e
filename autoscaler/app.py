"""The HTTP API (FastAPI): probes and the controller's metrics. Not pure (serves a Service).

Rules:
- One APIRouter per resource; the running `Service` reaches handlers as a dependency
  (`ServiceDep`), so tests swap it with `app.dependency_overrides[get_service]`.
- /healthz says the process is alive (the scheduler runs); /readyz says it can do its job
  (Prometheus reachable, and Kubernetes unless standalone) and answers 503 with the reason.
- /metrics serves `ControllerMetrics.render()` in the Prometheus text format 0.0.4.
- Handlers are plain `def`: FastAPI runs them in its thread pool, so a slow probe never
  blocks the event loop. The REST API (issue 4: autoscaler/api*.py) is installed by
  `create_app`: its routers, error mapping, authentication and body-size middleware.
- TLS: `serve` passes a certificate and key (PEM, e.g. from a mounted Secret) to uvicorn.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
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


PROBE_DOWN = {503: {"description": "not alive / not ready, with the reason"}}


@health.get("/healthz", responses=PROBE_DOWN)
def healthz(service: ServiceDep) -> JSONResponse:
    """Alive: the scheduler that runs the ticks is running."""
    if service.running:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "down", "reason": "scheduler not running"}, status_code=503)


@health.get("/readyz", responses=PROBE_DOWN)
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
    from autoscaler.api import install  # the API's routers import ServiceDep from here
    from autoscaler.api_docs import install_docs

    app = FastAPI(title="predictive-autoscaler", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Inspect, explain, what-if, tune and persist the predictive "
                              "autoscaler's per-target policies.")
    install_docs(app)
    app.state.service = service
    app.include_router(health)
    app.include_router(metrics)
    install(app, service)
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


def serve(app: FastAPI, host: str, port: int, *, tls_cert_file: Path | None = None,
          tls_key_file: Path | None = None) -> bool:
    """Serve `app` until SIGINT/SIGTERM (call from the main thread), over TLS when a
    certificate and key are given; False when the server never started (e.g. the port is
    taken, the certificate unreadable)."""
    tls: dict[str, str] = {}
    if tls_cert_file is not None and tls_key_file is not None:
        tls = {"ssl_certfile": str(tls_cert_file), "ssl_keyfile": str(tls_key_file)}
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="info", **tls))
    server.run()
    return bool(server.started)
