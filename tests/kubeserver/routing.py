"""URL + method -> what the request asks (verb, group, resource, namespace, name, subresource).

Pure.  Mirrors apiserver's RequestInfoFactory for the paths the official client uses:
`/api/v1/...` (core) and `/apis/{group}/{version}/...`, optionally `namespaces/{ns}/`, then
`{plural}[/{name}[/{subresource}]]`.  GET on a collection is `list`, or `watch` with
`?watch=true`; DELETE on a collection is `deletecollection` (not served).  The request info
is parsed before the type is looked up, so authorization comes first, as in a real server.
"""

from __future__ import annotations

from dataclasses import dataclass

from .status import ApiError

NON_RESOURCE_PATHS = frozenset({"/version", "/version/", "/healthz", "/readyz", "/livez"})


@dataclass(frozen=True)
class RequestInfo:
    verb: str
    group: str
    version: str
    plural: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""


def _not_found() -> ApiError:
    return ApiError("NotFound", "the server could not find the requested resource")


def parse(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _not_found()
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        raise _not_found()
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if method == "GET":
        verb = "get" if name else "watch" if query.get("watch") in ("true", "1") else "list"
    elif method == "POST":
        if name:
            raise ApiError("MethodNotAllowed", f"POST is not supported on {path}")
        verb = "create"
    elif method in ("PUT", "PATCH"):
        if not name:
            raise ApiError("MethodNotAllowed", f"{method} needs an object name")
        verb = "update" if method == "PUT" else "patch"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        raise ApiError("MethodNotAllowed", f"method {method} is not supported")
    return RequestInfo(verb, group, version, plural, namespace, name, subresource)
