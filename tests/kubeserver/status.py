"""Kubernetes `Status` failures: one exception type, rendered once at the HTTP boundary.

Pure: builds dicts, touches no I/O.  The reasons and codes are the ones a real API server
uses (`k8s.io/apimachinery/pkg/api/errors`), because callers branch on `reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# reason -> HTTP status code, as in apimachinery's StatusReason constants.
CODES = {
    "BadRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "AlreadyExists": 409,
    "Conflict": 409,
    "Gone": 410,
    "Expired": 410,
    "RequestEntityTooLarge": 413,
    "UnsupportedMediaType": 415,
    "Invalid": 422,
    "TooManyRequests": 429,
    "InternalError": 500,
    "ServiceUnavailable": 503,
}


@dataclass
class ApiError(Exception):
    """A request the server refuses; becomes a `Status` body with `code` and `reason`."""

    reason: str
    message: str
    name: str = ""
    group: str = ""
    kind: str = ""
    causes: list[dict[str, str]] = field(default_factory=list)
    code: int = 0

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.code:
            self.code = CODES[self.reason]

    def body(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            out["details"] = details
        return out


def success(name: str, group: str, kind: str, uid: str) -> dict[str, Any]:
    """The `Status` a delete answers with for resources that do not return the object."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": kind, "uid": uid},
    }


def qualified(plural: str, group: str) -> str:
    """`horizontalpodautoscalers.autoscaling`, or just `pods` for the core group."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        "NotFound", f'{qualified(plural, group)} "{name}" not found', name=name, group=group,
        kind=plural,
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        "AlreadyExists", f'{qualified(plural, group)} "{name}" already exists', name=name,
        group=group, kind=plural,
    )


def conflict(plural: str, group: str, name: str, why: str = "") -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        "Conflict", f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
        name=name, group=group, kind=plural,
    )


def invalid(kind: str, group: str, name: str, field_path: str, detail: str) -> ApiError:
    """422 naming the field, in the real server's wording: `Kind.group "name" is invalid: ...`."""
    where = f"{kind}.{group}" if group else kind
    return ApiError(
        "Invalid", f'{where} "{name}" is invalid: {field_path}: {detail}', name=name,
        group=group, kind=kind,
        causes=[{"reason": "FieldValueInvalid", "message": detail, "field": field_path}],
    )
