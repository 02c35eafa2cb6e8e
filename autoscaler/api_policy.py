"""The policy routers: GET/PUT/PATCH .../policy, .../policy/history, .../pause, .../resume.
Not pure (reads and writes the policy store, drives the Controller through the Service).

Rules:
- The store is the source of truth; the Controller follows it (PolicySync at every tick,
  and `Service.apply_policies` right after a write here, so this replica shows it at once).
- Every target has a policy from start-up: until one is stored, its running defaults, with a
  stable ETag derived from their content ('"defaults-<hash>"'), so a client can GET and then
  write with If-Match as usual; such a write creates the stored policy (if_match=None: a
  concurrent create loses with 412 exactly like a stale ETag).
- PUT/PATCH need If-Match (428 without); a stale one is 412, checked before validation
  (cheap) and again by the store's compare-and-swap (races); an invalid document is 422
  naming the field (including the target's own rules, e.g. no mode direct beside an HPA).
  A rejected request writes nothing. PATCH takes only application/merge-patch+json, PUT
  only JSON (415 otherwise).
- pause/resume need no If-Match: they change one flag, re-read and retried on a race.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from autoscaler.api import (
    AUTH_ERRORS,
    NOT_FOUND,
    SECURED,
    TARGET_PATH,
    CallerName,
    find_key,
    view_of,
)
from autoscaler.api_models import PolicyHistory, Problem, TargetView
from autoscaler.app import ServiceDep
from autoscaler.policy_doc import (
    PolicyInvalid,
    apply_document,
    document_of,
    merge_patch,
    patch_model,
    pydantic_model,
    validate_document,
)
from autoscaler.policy_store import PolicyChange, PreconditionFailed, StoredPolicy, utc_stamp
from autoscaler.policy_sync import effective
from autoscaler.service import Service
from autoscaler.target_state import TargetKey

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
PAUSE_ATTEMPTS = 5
PolicyDocument = pydantic_model()


def _schema(model: Any) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def _body(media_type: str, model: Any) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {media_type: {"schema": _schema(model)}}}}


WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    412: {"model": Problem, "description": "stale If-Match: the policy changed since"},
    428: {"model": Problem, "description": "If-Match is required"},
}
ETAG_HEADER = {"ETag": {"description": "the policy's version, for If-Match",
                        "schema": {"type": "string"}}}

policy = APIRouter(prefix=TARGET_PATH + "/policy", tags=["policy"], dependencies=SECURED,
                   responses={**AUTH_ERRORS, **NOT_FOUND})
pause = APIRouter(prefix=TARGET_PATH, tags=["policy"], dependencies=SECURED,
                  responses={**AUTH_ERRORS, **NOT_FOUND})


def defaults_etag(doc: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
    return f'"defaults-{digest}"'


def etag_of(current: StoredPolicy) -> str:
    return current.etag if current.etag is not None else defaults_etag(current.policy)


def current_policy(service: Service, key: TargetKey) -> StoredPolicy:
    """The target's effective policy; a stored one that cannot be read (a corrupt or
    hand-edited file) is a 500 that says so, never a bare traceback."""
    try:
        return effective(service.controller, service.store, key)
    except (ValueError, KeyError, TypeError, OSError) as e:
        namespace, _, name = key
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        log.error("%s/%s: the stored policy cannot be read: %s", namespace, name, reason)
        raise HTTPException(500, f"the stored policy of {namespace}/{name} cannot be read "
                                 f"({reason}): repair or remove it in the policy store "
                                 "(standalone: --state-dir/policies/)") from None


def target_defaults(service: Service, key: TargetKey) -> dict[str, Any]:
    """The target's own defaults: the policy it was configured with (config file or
    annotations), which a PUT's missing fields and a PATCH's nulls go back to."""
    sync = service.sync
    config = sync.baseline(key) if sync is not None else service.controller.targets[key].config
    return document_of(config)


def _policy_response(stored: StoredPolicy) -> JSONResponse:
    return JSONResponse(stored.policy, headers={"ETag": etag_of(stored)})


def _matches(if_match: str, etag: str) -> bool:
    """RFC 9110 If-Match: strong comparison against any listed tag, or `*`."""
    tags = [t.strip() for t in if_match.split(",")]
    return "*" in tags or etag in tags


def _write(service: Service, key: TargetKey, current: StoredPolicy, *, policy_doc: dict,
           paused: bool, change: PolicyChange) -> StoredPolicy:
    """Compare-and-swap against `current` (create when nothing is stored yet), then apply."""
    namespace, _, name = key
    stored = service.store.put(namespace, name, policy=policy_doc, paused=paused, change=change,
                               if_match=current.etag)
    service.apply_policies()
    return stored


def _update(service: Service, key: TargetKey, who: str, if_match: str | None,
            new_doc: Any) -> JSONResponse:
    """Shared by PUT and PATCH: `new_doc(current_doc)` gives the validated document."""
    if if_match is None:
        raise HTTPException(428, "If-Match is required: GET the policy and send its ETag")
    current = current_policy(service, key)
    if not _matches(if_match, etag_of(current)):
        raise PreconditionFailed("stale If-Match")
    doc = new_doc(current.policy)
    # the target's own rules too (e.g. no mode direct beside an HPA): a document the sync
    # would refuse to run must be refused here, not stored and silently not applied
    apply_document(service.controller.targets[key].config, doc)
    if doc == current.policy:  # nothing changes: no write, no history entry, the same ETag
        return _policy_response(current)
    change = PolicyChange(at=utc_stamp(), who=who, action="update", old=current.policy,
                          new=doc)
    return _policy_response(_write(service, key, current, policy_doc=doc,
                                   paused=current.paused, change=change))


async def json_body(request: Request) -> Any:
    """The request's JSON body; 422 naming the body when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise PolicyInvalid("(body)", f"not JSON: {e}") from None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def put_body(request: Request) -> Any:
    """The full document: JSON (application/json or a +json type; a missing Content-Type is
    taken as JSON), 415 for any other declared type (e.g. curl -d's form encoding) and for a
    merge patch (PUT would reset every field it leaves out)."""
    media = _media_type(request)
    if media == MERGE_PATCH or (media and media != "application/json"
                                and not media.endswith("+json")):
        raise HTTPException(415, f"PUT needs Content-Type application/json, got {media}")
    return await json_body(request)


async def merge_patch_body(request: Request) -> Any:
    """The merge patch: 415 unless Content-Type is application/merge-patch+json."""
    media = _media_type(request)
    if media != MERGE_PATCH:
        raise HTTPException(415, f"PATCH needs Content-Type {MERGE_PATCH}, got "
                                 f"{media or 'none'}")
    return await json_body(request)


Body = Annotated[Any, Depends(put_body)]
PatchBody = Annotated[Any, Depends(merge_patch_body)]
IfMatch = Annotated[str | None, Header(alias="If-Match", description="the ETag read last")]


@policy.get("", response_model=PolicyDocument,
            responses={200: {"headers": ETAG_HEADER}})
def get_policy(service: ServiceDep, namespace: str, name: str) -> JSONResponse:
    """The target's policy (its defaults until changed), with an ETag for If-Match."""
    return _policy_response(current_policy(service, find_key(service, namespace, name)))


@policy.put("", response_model=PolicyDocument, openapi_extra=_body("application/json",
                                                                  PolicyDocument),
            responses={**WRITE_ERRORS, 200: {"headers": ETAG_HEADER},
                       415: {"model": Problem, "description": "not application/json"}})
def put_policy(service: ServiceDep, namespace: str, name: str, who: CallerName, body: Body,
               if_match: IfMatch = None) -> JSONResponse:
    """Replace the policy (missing fields take the target's configured values); needs
    If-Match."""
    key = find_key(service, namespace, name)
    base = target_defaults(service, key)
    return _update(service, key, who, if_match,
                   lambda current: validate_document(body, base))


@policy.patch("", response_model=PolicyDocument, openapi_extra=_body(MERGE_PATCH,
                                                                    patch_model()),
              responses={**WRITE_ERRORS, 200: {"headers": ETAG_HEADER},
                         415: {"model": Problem, "description": f"not {MERGE_PATCH}"}})
def patch_policy(service: ServiceDep, namespace: str, name: str, who: CallerName,
                 body: PatchBody, if_match: IfMatch = None) -> JSONResponse:
    """Change some fields (RFC 7386 JSON merge patch; null puts a field back to the target's
    configured value); needs If-Match and Content-Type application/merge-patch+json."""
    key = find_key(service, namespace, name)
    base = target_defaults(service, key)
    return _update(service, key, who, if_match,
                   lambda current: merge_patch(current, body, base))


@policy.get("/history", response_model=PolicyHistory)
def policy_history(service: ServiceDep, namespace: str, name: str) -> PolicyHistory:
    """The last accepted changes (who, when, old, new), oldest first."""
    current = current_policy(service, find_key(service, namespace, name))
    return PolicyHistory(namespace=namespace, name=name,
                         changes=[c.to_json() for c in current.history])


def _set_paused(service: Service, key: TargetKey, who: str, paused: bool) -> TargetView:
    for attempt in range(PAUSE_ATTEMPTS):
        current = current_policy(service, key)
        if current.paused == paused:
            service.apply_policies()  # the store says so already: make sure we run it
            break
        change = PolicyChange(at=utc_stamp(), who=who, action="pause" if paused else "resume",
                              old={"paused": current.paused}, new={"paused": paused})
        try:
            _write(service, key, current, policy_doc=current.policy, paused=paused,
                   change=change)
            break
        except PreconditionFailed:  # another writer got in between: re-read, try again
            if attempt == PAUSE_ATTEMPTS - 1:
                raise
    return view_of(service, service.controller.targets[key])


@pause.post("/pause", response_model=TargetView)
def pause_target(service: ServiceDep, namespace: str, name: str, who: CallerName
                 ) -> TargetView:
    """Stop writing for this target (the floor stays as it is); survives restarts."""
    return _set_paused(service, find_key(service, namespace, name), who, True)


@pause.post("/resume", response_model=TargetView)
def resume_target(service: ServiceDep, namespace: str, name: str, who: CallerName
                  ) -> TargetView:
    """Write again for this target."""
    return _set_paused(service, find_key(service, namespace, name), who, False)
