"""The API itself, free of HTTP plumbing: request in, `Response` out.

Not pure (drives the store).  Order of checks as in a real apiserver: authenticate the
bearer token (401), parse the request, authorize it against RBAC (403), find the type (404),
then run the verb.  Every failure is an `ApiError` rendered as a `Status` body.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import patching, routing, selectors
from .rbac import Attributes, RbacPolicy, UserInfo
from .resources import ResourceType, lookup
from .scale import SCALE_TYPE, apply_scale, to_scale
from .status import ApiError, invalid, success
from .storage import Change, Store, ensure_dict
from .validation import validate

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 3 * 1024 * 1024  # the real server's default request size limit
# GET /version as a real 1.27 server answers it (every field the client's VersionInfo requires)
VERSION_INFO = {"major": "1", "minor": "27", "gitVersion": "v1.27.0-test",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2023-04-11T17:04:24Z",
                "goVersion": "go1.20.3", "compiler": "gc", "platform": "linux/amd64"}


@dataclass
class Response:
    code: int
    body: dict | str | None = None
    stream: Iterator[bytes] | None = None  # newline-delimited watch events
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Api:
    store: Store
    policy: RbacPolicy
    tokens: dict[str, UserInfo]
    max_watch_s: float = 30.0
    stopping: Callable[[], bool] = lambda: False
    active_watches: int = 0  # open watch streams, so a test can wait for one to start
    # Reviews answered, by kind ("TokenReview", "SubjectAccessReview"): tests of a caching
    # client count the requests that reached the server.
    review_counts: Counter[str] = field(default_factory=Counter)
    _watch_lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ entry point
    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               body: bytes) -> Response:
        try:
            return self._handle(method, path, query, headers, body)
        except ApiError as error:
            return Response(error.code, error.body())
        except Exception as error:  # a bug here must reach the test as a readable 500
            logger.exception("test API server failed on %s %s", method, path)
            failure = ApiError("InternalError", f"{type(error).__name__}: {error}")
            return Response(failure.code, failure.body())

    def _handle(self, method: str, path: str, query: dict[str, str],
                headers: dict[str, str], body: bytes) -> Response:
        if path in routing.NON_RESOURCE_PATHS and method == "GET":
            if path in ("/version", "/version/"):  # the official client asks /version/
                return Response(200, VERSION_INFO)
            return Response(200, "ok")
        user = self._authenticate(headers.get("authorization", ""))
        info = routing.parse(method, path, query)
        attrs = Attributes(user, info.verb, info.group, info.plural, info.subresource,
                           info.namespace, info.name)
        allowed, _ = self.policy.authorize(attrs)
        if not allowed:
            what = f"{info.plural}.{info.group}" if info.group else info.plural
            target = f'{what} "{info.name}"' if info.name else what
            raise ApiError("Forbidden", f"{target} is forbidden: {attrs.describe()}",
                           name=info.name, group=info.group, kind=info.plural)
        rtype = lookup(info.group, info.version, info.plural)
        if rtype is None or (info.subresource and info.subresource not in rtype.subresources):
            raise routing._not_found()
        if not rtype.namespaced and info.namespace:
            raise routing._not_found()
        if rtype.namespaced and not info.namespace and info.verb not in ("list", "watch"):
            raise routing._not_found()
        if query.get("dryRun"):
            raise ApiError("BadRequest", "dryRun is not supported by the test API server")
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("RequestEntityTooLarge", "the request body is too large")
        verb = getattr(self, f"_{info.verb}", None)
        if verb is None:
            raise ApiError("MethodNotAllowed", f"{info.verb} is not supported on {rtype.plural}")
        return verb(rtype, info, query, headers, body)

    def _authenticate(self, header: str) -> UserInfo:
        scheme, _, token = header.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError("Unauthorized", "Unauthorized")
        return user

    # ------------------------------------------------------------ reads
    def _get(self, rtype: ResourceType, info: routing.RequestInfo, *_: object) -> Response:
        obj = self.store.get(rtype, info.namespace, info.name)
        return Response(200, to_scale(obj) if info.subresource == "scale" else obj)

    def _list(self, rtype: ResourceType, info: routing.RequestInfo, query: dict[str, str],
              *_: object) -> Response:
        match = self._matcher(query)
        items, rv = self.store.list(rtype, info.namespace or None, match)
        return Response(200, {"apiVersion": rtype.api_version, "kind": f"{rtype.kind}List",
                              "metadata": {"resourceVersion": str(rv)}, "items": items})

    @staticmethod
    def _matcher(query: dict[str, str]) -> Callable[[dict], bool]:
        labels = selectors.label_selector(query.get("labelSelector"))
        fields = selectors.field_selector(query.get("fieldSelector"))
        return lambda obj: labels(obj) and fields(obj)

    def _watch(self, rtype: ResourceType, info: routing.RequestInfo, query: dict[str, str],
               *_: object) -> Response:
        match = self._matcher(query)
        timeout_s = self.max_watch_s
        if query.get("timeoutSeconds"):
            if not query["timeoutSeconds"].isdigit():
                raise ApiError("BadRequest", f"invalid timeoutSeconds {query['timeoutSeconds']!r}")
            timeout_s = min(float(query["timeoutSeconds"]), self.max_watch_s)
        raw_rv = query.get("resourceVersion", "")
        if raw_rv and not raw_rv.isdigit():
            raise ApiError("BadRequest", f"invalid resourceVersion {raw_rv!r}")
        initial: list[dict] = []
        if raw_rv in ("", "0"):  # "most recent" / "any": replay the current state first
            initial, since = self.store.list(rtype, info.namespace or None, match)
        else:
            since = int(raw_rv)
        deadline = time.monotonic() + timeout_s
        stream = self._stream(rtype, info.namespace, match, initial, since,
                              lambda: time.monotonic() >= deadline or self.stopping())
        return Response(200, stream=stream)

    def _stream(self, rtype: ResourceType, namespace: str, match: Callable[[dict], bool],
                initial: list[dict], since: int, until: Callable[[], bool]) -> Iterator[bytes]:
        with self._watch_lock:
            self.active_watches += 1
        try:
            for obj in initial:
                yield _event("ADDED", obj)
            for change in self.store.changes(rtype, since, until):
                if namespace and change.namespace != namespace:
                    continue
                kind = _visible_change(change, match)
                if kind:
                    yield _event(kind, change.obj)
        except ApiError as error:
            yield _event("ERROR", error.body())
        finally:
            with self._watch_lock:
                self.active_watches -= 1

    # ------------------------------------------------------------ writes
    def _create(self, rtype: ResourceType, info: routing.RequestInfo, query: dict[str, str],
                headers: dict[str, str], body: bytes) -> Response:
        obj = self._typed_body(rtype, body)
        if rtype.kind in ("TokenReview", "SubjectAccessReview"):
            review = (self._token_review(obj) if rtype.kind == "TokenReview"
                      else self._access_review(obj))
            with self._watch_lock:
                self.review_counts[rtype.kind] += 1
            return Response(201, review)
        if rtype.has_status_subresource:
            obj.pop("status", None)  # set by controllers, not creators (seeding may set it)
        meta = ensure_dict(obj.setdefault("metadata", {}), "metadata")
        if meta.setdefault("namespace", info.namespace) != info.namespace:
            raise ApiError("BadRequest", "the namespace of the provided object does not match "
                                         "the namespace sent on the request")
        return Response(201, self.store.create(rtype, obj))

    def _update(self, rtype: ResourceType, info: routing.RequestInfo, query: dict[str, str],
                headers: dict[str, str], body: bytes) -> Response:
        if info.subresource == "scale":
            scale = self._typed_body(SCALE_TYPE, body)
            return self._write_scale(rtype, info, lambda _: scale)
        obj = self._typed_body(rtype, body)
        ensure_dict(obj.get("metadata"), "metadata")
        result = self.store.modify(rtype, info.namespace, info.name, lambda _: obj,
                                   status_only=info.subresource == "status",
                                   require_rv=rtype.custom)
        return Response(200, result)

    def _patch(self, rtype: ResourceType, info: routing.RequestInfo, query: dict[str, str],
               headers: dict[str, str], body: bytes) -> Response:
        content_type = headers.get("content-type", "").split(";")[0].strip()
        apply = patching.CONTENT_TYPES.get(content_type)
        if apply is None or (rtype.custom and apply is patching.strategic_merge_patch):
            raise ApiError("UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media "
                           f"types include: {', '.join(self._patch_types(rtype))}")
        patch = _json(body)

        def patched(current: dict) -> dict:
            try:
                return apply(current, patch)
            except patching.MalformedPatch as error:
                raise ApiError("BadRequest", str(error)) from error
            except patching.PatchError as error:
                raise ApiError("Invalid", str(error), name=info.name, group=rtype.group,
                               kind=rtype.kind) from error

        if info.subresource == "scale":
            return self._write_scale(rtype, info, patched)
        result = self.store.modify(rtype, info.namespace, info.name, patched,
                                   status_only=info.subresource == "status")
        return Response(200, result)

    @staticmethod
    def _patch_types(rtype: ResourceType) -> list[str]:
        return [t for t in patching.CONTENT_TYPES
                if not (rtype.custom and "strategic" in t)]

    def _write_scale(self, rtype: ResourceType, info: routing.RequestInfo,
                     new_scale: Callable[[dict], dict]) -> Response:
        def change(parent: dict) -> dict:
            scale = new_scale(to_scale(parent))
            validate(SCALE_TYPE, scale)
            return apply_scale(parent, scale)

        return Response(200, to_scale(self.store.modify(rtype, info.namespace, info.name,
                                                        change)))

    def _delete(self, rtype: ResourceType, info: routing.RequestInfo, query: dict[str, str],
                headers: dict[str, str], body: bytes) -> Response:
        options = ensure_dict(_json(body), "DeleteOptions") if body.strip() else {}
        gone = self.store.delete(rtype, info.namespace, info.name,
                                 options.get("preconditions") or {})
        if rtype.delete_returns_object:
            return Response(200, gone)
        return Response(200, success(info.name, rtype.group, rtype.plural,
                                     gone["metadata"]["uid"]))

    # ------------------------------------------------------------ reviews
    def _token_review(self, review: dict) -> dict:
        token = (review.get("spec") or {}).get("token", "")
        if not token:  # the real server's words (pkg/registry/authentication/tokenreview)
            raise ApiError("BadRequest", "token is required for TokenReview in authentication")
        user = self.tokens.get(token)
        review["status"] = (
            {"authenticated": True, "user": user.as_dict(),
             "audiences": (review.get("spec") or {}).get("audiences") or []}
            if user else {"authenticated": False, "error": "invalid bearer token"}
        )
        return review

    def _access_review(self, review: dict) -> dict:
        spec = review.get("spec") or {}
        _validate_access_review(spec)
        user = UserInfo(spec.get("user", ""), tuple(spec.get("groups") or ()), spec.get("uid", ""))
        attrs = spec.get("resourceAttributes")
        if attrs is None:  # non-resource URLs: only the superuser may
            allowed, reason = self.policy.authorize(Attributes(user, "", "", ""))
            allowed = allowed and reason.startswith("member")
        else:
            allowed, reason = self.policy.authorize(Attributes(
                user, attrs.get("verb", ""), attrs.get("group", ""), attrs.get("resource", ""),
                attrs.get("subresource", ""), attrs.get("namespace", ""), attrs.get("name", "")))
        review["status"] = {"allowed": allowed, "reason": reason} if reason else {"allowed": allowed}
        return review

    # ------------------------------------------------------------ bodies
    @staticmethod
    def _typed_body(rtype: ResourceType, body: bytes) -> dict:
        """The JSON object, with apiVersion/kind filled in from the URL when left out."""
        obj = ensure_dict(_json(body), "the request body")
        if obj.setdefault("apiVersion", rtype.api_version) != rtype.api_version or \
                obj.setdefault("kind", rtype.kind) != rtype.kind:
            raise ApiError("BadRequest", f"the body is {obj['apiVersion']}/{obj['kind']}, "
                                         f"expected {rtype.api_version}/{rtype.kind}")
        return obj


def _validate_access_review(spec: dict) -> None:
    """The real server's ValidateSubjectAccessReviewSpec: exactly one kind of attributes and
    at least one of user or groups, else 422."""
    has_resource = spec.get("resourceAttributes") is not None
    has_non_resource = spec.get("nonResourceAttributes") is not None
    failure: tuple[str, str] | None = None
    if has_resource and has_non_resource:
        failure = ("spec.nonResourceAttributes",
                   "cannot be specified in combination with resourceAttributes")
    elif not has_resource and not has_non_resource:
        failure = ("spec.resourceAttributes",
                   "exactly one of nonResourceAttributes or resourceAttributes must be specified")
    elif not spec.get("user") and not spec.get("groups"):
        failure = ("spec.user", "at least one of user or group must be specified")
    if failure:
        raise invalid("SubjectAccessReview", "authorization.k8s.io", "", *failure)


def _json(body: bytes) -> object:
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError("BadRequest", f"the body is not valid JSON: {error}") from error


def _event(kind: str, obj: dict) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _visible_change(change: Change, match: Callable[[dict], bool]) -> str:
    """The event a filtered watch shows: an object moving into or out of the selection is
    ADDED or DELETED there, as with a real server's filtered watch."""
    now = change.type != "DELETED" and match(change.obj)
    before = change.old is not None and match(change.old)
    if change.type == "ADDED":
        return "ADDED" if now else ""
    if change.type == "DELETED":
        return "DELETED" if before else ""
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if before else ""
