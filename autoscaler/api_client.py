"""A small HTTP client of the autoscaler REST API, for the CLI. Not pure: network I/O.

Rules:
- The API's address comes from AUTOSCALER_API_URL (default http://127.0.0.1:8080) and the
  bearer token from AUTOSCALER_API_TOKEN; the token is sent, never printed.
- httpx errors are mapped once, here: every failure (unreachable, timeout, a non-2xx answer)
  becomes ONE `ApiClientError` line with the HTTP status and the API's own reason
  (`detail`, or `field: reason` for a 422), so the CLI prints it as is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from autoscaler.errors import AutoscalerError

ENV_URL = "AUTOSCALER_API_URL"
ENV_TOKEN = "AUTOSCALER_API_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0
MERGE_PATCH = "application/merge-patch+json"
_MAX_REASON_CHARS = 300


class ApiClientError(AutoscalerError):
    """A request failed; str is one line. status: the HTTP status (None: no answer);
    field: the policy field a 422 names (None otherwise)."""

    def __init__(self, message: str, *, status: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class ApiResponse:
    """A 2xx answer: the decoded JSON body (None when empty) and the headers the CLI uses."""

    status: int
    body: Any
    etag: str | None = None
    location: str | None = None


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_REASON_CHARS else line[:_MAX_REASON_CHARS - 3] + "..."


def reason_of(response: httpx.Response) -> tuple[str, str | None]:
    """(the API's reason as one line, the field it names or None) of an error answer.

    FastAPI bodies are {"detail": str}, {"detail": {"field", "reason"}} (PolicyInvalid) or
    {"detail": [pydantic errors]} (request validation); anything else is shown as text.
    """
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text) or response.reason_phrase, None
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict) and "reason" in detail:
        field = detail.get("field")
        text = f"{field}: {detail['reason']}" if field else str(detail["reason"])
        return _one_line(text), str(field) if field else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        msg = first.get("msg", "invalid")
        return _one_line(f"{field}: {msg}" if field else msg), field
    if isinstance(detail, str):
        return _one_line(detail), None
    return _one_line(str(detail)), None


def _path(namespace: str, name: str, *rest: str) -> str:
    parts = ["targets", quote(namespace, safe=""), quote(name, safe=""), *rest]
    return "/" + "/".join(parts)


class ApiClient:
    """Blocking client of one API server. Use as a context manager (closes the connection)."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        base_url = base_url.strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ApiClientError(f"{ENV_URL} must be an http:// or https:// URL, "
                                 f"got {base_url!r}")
        self.base_url = base_url
        self.timeout_s = timeout_s
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s,
                                  transport=transport)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> ApiClient:
        """The client AUTOSCALER_API_URL and AUTOSCALER_API_TOKEN describe."""
        return cls(environ.get(ENV_URL) or DEFAULT_URL, environ.get(ENV_TOKEN) or None,
                   timeout_s=timeout_s)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def url_of(self, location: str) -> str:
        """An absolute URL for a Location header (absolute, or relative to the base URL)."""
        return urljoin(self.base_url + "/", location)

    # -- the one place httpx errors are translated --------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None,
                headers: Mapping[str, str] | None = None,
                params: Mapping[str, str] | None = None) -> ApiResponse:
        """Send one request; 2xx -> ApiResponse, anything else -> ApiClientError."""
        try:
            response = self._http.request(method, path, json=json, headers=dict(headers or {}),
                                          params=params)
        except httpx.TimeoutException:
            raise ApiClientError(f"the API at {self.base_url} did not answer within "
                                 f"{self.timeout_s:g} s") from None
        except httpx.HTTPError as e:
            raise ApiClientError(f"cannot reach the API at {self.base_url}: "
                                 f"{_one_line(str(e)) or type(e).__name__}") from None
        if not response.is_success:
            reason, field = reason_of(response)
            raise ApiClientError(f"HTTP {response.status_code}: {reason}",
                                 status=response.status_code, field=field)
        try:
            body = response.json() if response.content else None
        except ValueError:
            raise ApiClientError(f"HTTP {response.status_code}: the API answered something "
                                 f"that is not JSON", status=response.status_code) from None
        return ApiResponse(response.status_code, body, response.headers.get("ETag"),
                           response.headers.get("Location"))

    # -- endpoints -----------------------------------------------------------------------------
    def get_policy(self, namespace: str, name: str) -> ApiResponse:
        """GET .../policy: the flat policy document and its ETag."""
        return self.request("GET", _path(namespace, name, "policy"))

    def patch_policy(self, namespace: str, name: str, patch: Mapping[str, Any],
                     etag: str) -> ApiResponse:
        """PATCH .../policy as a JSON merge patch, only if the policy still has `etag`."""
        return self.request("PATCH", _path(namespace, name, "policy"), json=dict(patch),
                            headers={"If-Match": etag, "Content-Type": MERGE_PATCH})

    def policy_history(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """GET .../policy/history: the recorded changes, oldest first."""
        body = self.request("GET", _path(namespace, name, "policy", "history")).body
        if isinstance(body, dict):  # an envelope such as {"history": [...]}
            body = next((v for v in body.values() if isinstance(v, list)), [])
        return list(body or [])

    def submit_whatif(self, namespace: str, name: str, candidate: Mapping[str, Any],
                      window: str) -> str:
        """POST .../whatif?window=: the absolute URL of the job (from Location)."""
        response = self.request("POST", _path(namespace, name, "whatif"), json=dict(candidate),
                                params={"window": window})
        location = response.location
        if not location and isinstance(response.body, dict):
            job_id = response.body.get("job_id") or response.body.get("id")
            location = f"/whatif/{job_id}" if job_id else None
        if not location:
            raise ApiClientError(f"HTTP {response.status}: the API accepted the what-if but "
                                 f"named no job (no Location header)", status=response.status)
        return self.url_of(location)

    def get_job(self, job_url: str) -> dict[str, Any]:
        """GET a what-if job: {"status": "running"|"done"|"failed", "result"/"error": ...}."""
        body = self.request("GET", job_url).body
        if not isinstance(body, dict) or "status" not in body:
            raise ApiClientError("the what-if job answer has no status")
        return body
