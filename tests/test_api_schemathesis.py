"""Schemathesis against the API's own /openapi.json (standalone, static tokens, the write
token supplied): for every operation a bounded number of generated requests, and no answer
may be a 5xx or break the documented response schema (status code, body, content type).
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from autoscaler.app import create_app
from autoscaler.whatif import WhatIfJobs
from tests.api_whatif_runners import echo_runner
from tests.test_api import W, make_service

MAX_EXAMPLES = 12  # per operation; ~15 operations keep the run well under a minute


@pytest.fixture
def api_schema(prometheus_scraping, tmp_path):
    prometheus_scraping.exporter.inc("default", "demo", 5)
    service = make_service(prometheus_scraping.url, tmp_path / "state")
    service.whatif.shutdown()
    service.whatif = WhatIfJobs(max_running_per_caller=2, runner=echo_runner)
    service.start()  # alive (/healthz 200); its first tick gives decisions to show
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(service))
    finally:
        service.shutdown()


def run_operation(operation, seen: Counter[tuple[str, int]]) -> None:
    """MAX_EXAMPLES generated requests to one operation, each checked."""

    @given(case=operation.as_strategy(), real=st.booleans())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case, real: bool) -> None:
        if real and case.path_parameters and "namespace" in case.path_parameters:
            # Half the cases address a real target, so the handlers run, not only 404.
            case.path_parameters.update(namespace="default", name="demo")
        response = case.call_and_validate(headers=W, checks=[
            not_a_server_error, response_schema_conformance, status_code_conformance,
            content_type_conformance])
        seen[(operation.label, response.status_code)] += 1

    check()


def test_openapi_conformance(api_schema) -> None:
    # Per operation, hypothesis drives schemathesis' strategy (its pytest plugin's fixture
    # loader does not run under this pytest version).
    seen: Counter[tuple[str, int]] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    for operation in operations:
        run_operation(operation, seen)
    # The run reached the handlers, not only the auth and validation layers.
    assert any(status == 200 for (label, status) in seen if "{name}" in label), seen
    assert sum(seen.values()) >= 5 * len(operations), seen
