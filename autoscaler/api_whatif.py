"""The what-if routers: POST .../whatif?window=7d queues a replay, GET /whatif/{job_id} polls
it. Not pure (reads the store and the clock, submits jobs to a process pool).

Rules: the body is a candidate policy validated like a PUT (422 naming the field); the
current policy is the effective one (stored, else the defaults); a field the replay cannot
express (whatif.predictive_spec) in either is 422 at once, not a failed job. The replay runs in the
Service's WhatIfJobs (spawned processes), never in a tick or an API thread; 202 with
Location /whatif/{id} at once; 429 when the caller already has its maximum running.
What-if needs the read scope only (it changes nothing).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse

from autoscaler.api import (
    AUTH_ERRORS,
    NOT_FOUND,
    SECURED,
    TARGET_PATH,
    CallerName,
    Invalid,
    find_key,
)
from autoscaler.api_models import Problem, WhatIfAccepted, WhatIfJob
from autoscaler.api_policy import Body, PolicyDocument, _body, current_policy
from autoscaler.app import ServiceDep
from autoscaler.policy_doc import validate_document
from autoscaler.record import parse_duration_s
from autoscaler.whatif import predictive_spec, whatif_spec_for

MAX_WINDOW_S = 30 * 86_400

whatif = APIRouter(prefix=TARGET_PATH, tags=["what-if"], dependencies=SECURED,
                   responses={**AUTH_ERRORS, **NOT_FOUND})
jobs = APIRouter(prefix="/whatif", tags=["what-if"], dependencies=SECURED,
                 responses={**AUTH_ERRORS, 422: NOT_FOUND[422]})


@whatif.post("/whatif", status_code=202, response_model=WhatIfAccepted,
             openapi_extra=_body("application/json", PolicyDocument),
             responses={202: {"headers": {"Location": {"schema": {"type": "string"}}}},
                        429: {"model": Problem, "description": "too many running jobs"}})
def post_whatif(service: ServiceDep, namespace: str, name: str, who: CallerName, body: Body,
                window: Annotated[str, Query(description="replayed window back from now: "
                                             "1h, 1d, 7d", max_length=32)] = "7d"
                ) -> JSONResponse:
    """Replay the target's own recent traffic with the current policy, the candidate (the
    body: the current policy with the fields it gives) and the HPA alone; answers 202 with
    the job's Location."""
    key = find_key(service, namespace, name)
    try:
        window_s = parse_duration_s(window, "window")
    except ValueError as e:
        raise Invalid("window", str(e).split(": ", 1)[-1]) from None
    if window_s > MAX_WINDOW_S:
        raise Invalid("window", f"at most {MAX_WINDOW_S // 86_400}d, got {window}")
    current = current_policy(service, key)
    candidate = validate_document(body, current.policy)  # missing fields: as now
    # what the replay cannot express fails here (422), not minutes later as a failed job
    for role, doc in (("current policy", current.policy), ("candidate", candidate)):
        try:
            predictive_spec(doc)
        except ValueError as e:
            field, _, reason = str(e).partition(": ")
            raise Invalid(field, f"{reason} (in the {role})") from None
    spec = whatif_spec_for(service.controller.targets[key].config, service.settings,
                           candidate, current.policy, window_s, service.clock())
    job_id = service.whatif.submit(who, spec)
    location = f"/whatif/{job_id}"
    return JSONResponse({"job_id": job_id, "status": "running", "location": location},
                        status_code=202, headers={"Location": location})


@jobs.get("/{job_id}", response_model=WhatIfJob,
          responses={404: {"model": Problem, "description": "no such job"}})
def get_job(service: ServiceDep, job_id: str) -> Any:
    """The job: running, done (result in the shape of `autoscaler simulate --json`) or
    failed (a one-line error)."""
    job = service.whatif.get(job_id)
    if job is None:
        raise HTTPException(404, "no such what-if job (unknown, or dropped as an old one)")
    return WhatIfJob(status=job.status, result=job.result, error=job.error,
                     submitted_at=job.submitted_at)
