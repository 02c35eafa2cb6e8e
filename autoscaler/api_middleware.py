"""ASGI middleware of the REST API: authentication first, then the body-size limit. Not pure
(calls the authenticator, which may ask the Kubernetes API).

Rules:
- Authentication runs before routing, so an unknown target, an unknown path, a bad query or
  a malformed body never answer anything but 401/403/503 to a caller without the right
  token; and the bodies of those answers name no target. The probes, /metrics and the API
  documentation are open.
- The scope comes from the request alone: GET/HEAD and POST .../whatif need "read",
  anything else "write". The Caller lands in `request.state.caller`.
- The authenticator may block (TokenReview over HTTP): it runs in a worker thread.
- Bodies over MAX_BODY_BYTES answer 413, whether announced by Content-Length or streamed
  (chunked): the body is read up to the limit before the app sees it, then replayed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from autoscaler.errors import AutoscalerError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect",
                        "/openapi.json"})
OPEN_PREFIX = "/docs/assets/"  # Swagger UI's own script and style (autoscaler/api_docs.py)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, body: Any,
                    headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})


def scope_of(method: str, path: str) -> str | None:
    """The scope a request needs: None (open), "read" or "write"."""
    if (path in OPEN_PATHS or path.startswith(OPEN_PREFIX)) and method in ("GET", "HEAD"):
        return None
    if method in ("GET", "HEAD") or (method == "POST" and path.rstrip("/").endswith("/whatif")):
        return "read"
    return "write"


class AuthMiddleware:
    """401 / 403 / 503 before anything else; `get_auth()` is the Service's authenticator."""

    def __init__(self, app: ASGIApp, get_auth: Callable[[], Any]) -> None:
        self.app = app
        self.get_auth = get_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        need = scope_of(scope["method"], scope["path"])
        if need is None:
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                       if k == b"authorization"), None)
        from autoscaler.auth import AuthUnavailable, Forbidden, Unauthenticated

        auth = self.get_auth()
        if auth is None:  # never serve without an authenticator (NoAuth is an explicit choice)
            await send_json(send, 503, {"detail": "API authentication is not configured"})
            return
        try:
            caller = await anyio.to_thread.run_sync(auth.authenticate, header, need)
        except Unauthenticated as e:
            await send_json(send, 401, {"detail": f"unauthenticated: {_line(e)}"},
                            ((b"www-authenticate", b'Bearer realm="predictive-autoscaler"'),))
            return
        except Forbidden as e:
            await send_json(send, 403, {"detail": f"forbidden: {_line(e)}"})
            return
        except AuthUnavailable as e:
            log.warning("authentication unavailable: %s", e)
            await send_json(send, 503, {"detail": f"authentication unavailable: {_line(e)}"},
                            ((b"retry-after", b"5"),))
            return
        except AutoscalerError as e:  # any other refusal must not let the caller in
            log.warning("authentication failed: %s", e)
            await send_json(send, 503, {"detail": "authentication unavailable"})
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes` (Content-Length or counted while streaming)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_big = {"detail": f"request body over {self.max_bytes // 1024} KiB"}
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None:
            try:
                if int(length) > self.max_bytes:
                    await send_json(send, 413, too_big)
                    return
            except ValueError:
                await send_json(send, 400, {"detail": "bad Content-Length"})
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_json(send, 413, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
