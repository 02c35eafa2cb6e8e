"""Who is calling the REST API, and may they read or write? Not pure (KubeAuth calls the API).

Every request carries `Authorization: Bearer <token>`; an `Authenticator` turns it into a
`Caller` for one scope, "read" or "write", or refuses:
- `Unauthenticated` (401): no header, not a Bearer token, or a token nobody knows;
- `Forbidden` (403): a known caller without the scope;
- `AuthUnavailable` (503): the Kubernetes API could not answer. Never 401: a failure on our
  side is not the caller's fault, and never a pass: an outage must not let anyone in.

Three kinds:
- `StaticTokens` (standalone): `token:read` / `token:write` entries from AUTOSCALER_API_TOKENS
  and/or a file; write implies read. Tokens are compared by SHA-256 digest with
  `hmac.compare_digest` against every entry, so timing tells nothing about a near miss.
- `KubeAuth` (in-cluster): a TokenReview (authentication.k8s.io/v1) names the user, then a
  SubjectAccessReview (authorization.k8s.io/v1) asks RBAC whether that user may `get` (read)
  or `update` (write) `policies` in API group `autoscaling.predictive.dev`, cluster-wide. Both
  answers, yes or no, are cached for `cache_ttl_s` per (sha256(token), scope) in a bounded LRU,
  as the API server's own webhook authenticator does; outages are never cached.
- `NoAuth` (`--insecure-no-auth`): everyone is "anonymous" with both scopes.

A token never appears in a message, a log line, a `Caller` or a repr: callers of static tokens
are named "token:<first 6 hex of its SHA-256>".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import kubernetes.client as k8s
import urllib3

from .errors import AutoscalerError, ConfigError

logger = logging.getLogger(__name__)

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
TOKENS_ENV = "AUTOSCALER_API_TOKENS"
NO_TOKEN_MESSAGE = ("no API token configured: set AUTOSCALER_API_TOKENS or api_tokens_file, "
                    "or pass --insecure-no-auth")

# What a SubjectAccessReview asks (the ClusterRoles in manifests/base/rbac.yaml grant it).
POLICY_GROUP = "autoscaling.predictive.dev"
POLICY_RESOURCE = "policies"
VERB_OF_SCOPE: dict[str, str] = {"read": "get", "write": "update"}

# RFC 6750 b64token: the characters a bearer token may carry (so never ':', ',', '#', space).
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class Unauthenticated(AutoscalerError):
    """No bearer token, a malformed one, or one nobody knows (401)."""


class Forbidden(AutoscalerError):
    """A known caller without the scope asked for (403)."""


class AuthUnavailable(AutoscalerError):
    """Kubernetes could not review the token or the access (503): retry later."""

    temporary = True


@dataclass(frozen=True)
class Caller:
    """Who made a request, for audit records and per-caller limits (never the token)."""

    name: str


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None, scope: Scope) -> Caller:
        """The caller of a request with this Authorization header, if allowed `scope`."""
        ...


def token_caller_name(token: str) -> str:
    """The name of a static token's caller: "token:" + the first 6 hex of its SHA-256."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:6]


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not authorization or not authorization.strip():
        raise Unauthenticated("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("expected an Authorization: Bearer token")
    token = token.strip()
    if not token or not _B64TOKEN.fullmatch(token):
        raise Unauthenticated("malformed bearer token")
    return token


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:  # a programming error in the API layer, not the caller's
        raise ValueError(f"scope must be read or write, got {scope!r}")


# ------------------------------------------------------------------ static tokens
@dataclass(frozen=True)
class _Entry:
    digest: bytes
    scopes: frozenset[str]
    caller: Caller


def _scopes_of(scope: str) -> frozenset[str]:
    return frozenset(("read", "write") if scope == "write" else ("read",))


def _parse_entry(raw: str, where: str) -> tuple[str, Scope]:
    """(token, scope) of one `token:scope` entry; ConfigError naming `where`, never the token."""
    token, colon, scope = raw.partition(":")
    if not colon:
        raise ConfigError(f"{where}: expected token:read or token:write")
    return _checked(token.strip(), scope.strip(), where)


def _checked(token: str, scope: str, where: str) -> tuple[str, Scope]:
    if not token:
        raise ConfigError(f"{where}: empty token")
    if not _B64TOKEN.fullmatch(token):
        raise ConfigError(f"{where}: the token has characters a bearer token cannot carry "
                          "(RFC 6750: letters, digits, -._~+/ and trailing =)")
    if scope not in SCOPES:
        raise ConfigError(f"{where}: scope of {token_caller_name(token)} must be read or write")
    return token, cast(Scope, scope)


def _entries_of(environ: Mapping[str, str], tokens_file: Path | None,
                ) -> Iterable[tuple[str, str]]:
    """(raw entry, where) pairs: the variable's comma-separated items, then the file's lines."""
    for index, item in enumerate(environ.get(TOKENS_ENV, "").split(","), start=1):
        if item.strip():
            yield item, f"{TOKENS_ENV} entry {index}"
    if tokens_file is None:
        return
    try:
        text = Path(tokens_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(f"api_tokens_file {tokens_file}: cannot read it: {reason}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0]  # '#' is not a token character: the rest is a comment
        if content.strip():
            yield content, f"api_tokens_file {tokens_file} line {number}"


class StaticTokens:
    """Bearer tokens given in the configuration, each with the scope "read" or "write"."""

    def __init__(self, tokens: Mapping[str, Scope]) -> None:
        """tokens: token -> its scope (write implies read); see `from_sources` for parsing."""
        entries = []
        for raw_token, raw_scope in tokens.items():
            token, scope = _checked(raw_token, raw_scope, "static token")
            entries.append(_Entry(hashlib.sha256(token.encode()).digest(), _scopes_of(scope),
                                  Caller(token_caller_name(token))))
        self._entries: tuple[_Entry, ...] = tuple(entries)

    @classmethod
    def from_sources(cls, environ: Mapping[str, str], tokens_file: Path | None) -> StaticTokens:
        """Tokens from AUTOSCALER_API_TOKENS ("tok1:read,tok2:write") and/or a file (one
        token:scope per line, '#' starts a comment). One-line ConfigError on a bad entry or a
        token listed twice with different scopes; the message never contains a token."""
        tokens: dict[str, Scope] = {}
        first_seen: dict[str, str] = {}
        for raw, where in _entries_of(environ, tokens_file):
            token, scope = _parse_entry(raw, where)
            if token in tokens and tokens[token] != scope:
                raise ConfigError(f"{where}: {token_caller_name(token)} is also listed at "
                                  f"{first_seen[token]} with another scope")
            tokens[token] = scope
            first_seen.setdefault(token, where)
        return cls(tokens)

    @property
    def empty(self) -> bool:
        return not self._entries

    def __repr__(self) -> str:
        return f"StaticTokens({len(self._entries)} tokens)"

    def authenticate(self, authorization: str | None, scope: Scope) -> Caller:
        _check_scope(scope)
        digest = hashlib.sha256(bearer_token(authorization).encode()).digest()
        found: _Entry | None = None
        for entry in self._entries:  # no early exit: every token costs the same to test
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            raise Unauthenticated("invalid bearer token")
        if scope not in found.scopes:
            raise Forbidden(f"{found.caller.name} does not have the {scope} scope")
        return found.caller


class NoAuth:
    """`--insecure-no-auth`: every caller is "anonymous" with both scopes."""

    def authenticate(self, authorization: str | None, scope: Scope) -> Caller:
        _check_scope(scope)
        return Caller("anonymous")


# ------------------------------------------------------------------ Kubernetes
class _TtlCache:
    """A bounded LRU of outcomes (a Caller or the error to raise), each valid for ttl_s."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl_s, self._max, self._clock = ttl_s, max_entries, clock
        self._items: OrderedDict[tuple[str, str], tuple[float, Caller | AutoscalerError]] = \
            OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Caller | AutoscalerError | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if self._clock() >= item[0]:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: tuple[str, str], outcome: Caller | AutoscalerError) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + self._ttl_s, outcome)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)


def _api_failure(what: str, error: Exception) -> AuthUnavailable:
    """An API or transport failure as AuthUnavailable (the API server's message, no token)."""
    if isinstance(error, k8s.ApiException):
        message = ""
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            message = str(json.loads(error.body or "{}").get("message", ""))
        detail = f": {' '.join(message.split())[:300]}" if message else ""
        return AuthUnavailable(f"{what} failed: {error.status} {error.reason}{detail}")
    return AuthUnavailable(f"{what} failed: the Kubernetes API is unreachable "
                           f"({type(error).__name__})")


class KubeAuth:
    """Bearer tokens checked by Kubernetes: TokenReview, then SubjectAccessReview (RBAC).

    api_client: a `kubernetes.client.ApiClient` whose identity may create tokenreviews and
        subjectaccessreviews (the controller's ServiceAccount, manifests/base/rbac.yaml).
    cache_ttl_s: how long an answer (allowed or refused) is reused, s [10; 0 disables].
    clock: monotonic seconds, injected so tests move time by arithmetic [time.monotonic].
    max_entries: the cache's bound, (token, scope) pairs [4096].
    request_timeout_s: per review request, s [5].
    """

    def __init__(self, api_client: k8s.ApiClient, *, cache_ttl_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 4096,
                 request_timeout_s: float = 5.0) -> None:
        self._authn = k8s.AuthenticationV1Api(api_client)
        self._authz = k8s.AuthorizationV1Api(api_client)
        self._cache = _TtlCache(cache_ttl_s, max_entries, clock)
        self._timeout_s = request_timeout_s

    def authenticate(self, authorization: str | None, scope: Scope) -> Caller:
        _check_scope(scope)
        token = bearer_token(authorization)
        key = (hashlib.sha256(token.encode()).hexdigest(), scope)
        outcome = self._cache.get(key)
        if outcome is None:
            try:
                outcome = self._review(token, scope)
            except (Unauthenticated, Forbidden) as refusal:
                outcome = refusal
            self._cache.put(key, outcome)  # AuthUnavailable propagated above: never cached
        if isinstance(outcome, AutoscalerError):
            raise type(outcome)(str(outcome))  # a fresh exception: no shared traceback
        return outcome

    def _review(self, token: str, scope: Scope) -> Caller:
        user = self._token_review(token)
        self._access_review(user, scope)
        return Caller(str(user.username))  # never empty: _token_review checked it

    def _token_review(self, token: str) -> k8s.V1UserInfo:
        body = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token))
        try:
            review = self._authn.create_token_review(body, _request_timeout=self._timeout_s)
        except (k8s.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise _api_failure("TokenReview", error) from None  # the chain holds the token
        status = review.status
        if status is None or not status.authenticated or status.user is None \
                or not status.user.username:
            raise Unauthenticated("invalid bearer token")
        return status.user

    def _access_review(self, user: k8s.V1UserInfo, scope: Scope) -> None:
        attributes = k8s.V1ResourceAttributes(group=POLICY_GROUP, resource=POLICY_RESOURCE,
                                              verb=VERB_OF_SCOPE[scope])
        body = k8s.V1SubjectAccessReview(spec=k8s.V1SubjectAccessReviewSpec(
            user=user.username, groups=user.groups, uid=user.uid, extra=_extra(user.extra),
            resource_attributes=attributes))
        try:
            review = self._authz.create_subject_access_review(
                body, _request_timeout=self._timeout_s)
        except (k8s.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise _api_failure("SubjectAccessReview", error) from error
        status = review.status
        if status is None or not status.allowed or status.denied:
            raise Forbidden(f"{user.username} may not {VERB_OF_SCOPE[scope]} "
                            f"{POLICY_RESOURCE}.{POLICY_GROUP}")


def _extra(extra: dict[str, Any] | None) -> dict[str, list[str]] | None:
    return {key: list(values) for key, values in extra.items()} if extra else None


# ------------------------------------------------------------------ choosing one
def authenticator_for(settings: Any, *, standalone: bool, api_client: k8s.ApiClient | None,
                      insecure_no_auth: bool = False,
                      environ: Mapping[str, str] | None = None) -> Authenticator:
    """The authenticator the service runs with.

    insecure_no_auth: NoAuth, whatever else is configured (logged as a warning).
    standalone: StaticTokens from `environ` (default os.environ) and settings.api_tokens_file;
        none configured -> ConfigError (the API refuses to start).
    in-cluster: KubeAuth on api_client.
    """
    if insecure_no_auth:
        logger.warning("the REST API runs WITHOUT authentication (--insecure-no-auth): anyone "
                       "who can reach it may read and change policies")
        return NoAuth()
    if standalone:
        tokens = StaticTokens.from_sources(os.environ if environ is None else environ,
                                           getattr(settings, "api_tokens_file", None))
        if tokens.empty:
            raise ConfigError(NO_TOKEN_MESSAGE)
        return tokens
    if api_client is None:
        raise ConfigError("in-cluster API authentication needs a Kubernetes API client")
    return KubeAuth(api_client)
