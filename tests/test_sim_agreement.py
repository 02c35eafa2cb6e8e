"""Fast (fluid) and request-level fidelity agree on a recorded trace (issue section 6).

worldcup98 from day 45 (3,888,000 s) for 2 days with hpa:target_utilization=0.9, small-model:
~98 M requests, which the request-level server replays in ~40 s on one core. The scenario is
the issue's, chosen where the HPA misses the SLO now and then (95 % to 99.5 % attainment), so
that both models must get the congested minutes right, not only the idle ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.registry import parse_policy_spec
from simulator.compare import default_max_replicas
from simulator.profiles import load_profile
from simulator.replay import Replay, ReplayConfig
from simulator.results import PolicyResult
from simulator.traces import load_trace
from simulator.workload_view import WorkloadView

START_S = 45 * 86400.0
DURATION_S = 2 * 86400.0
SPEC = "hpa:target_utilization=0.9"


def _run(trace_dir: Path, fidelity: str) -> PolicyResult:
    trace = load_trace(trace_dir / "worldcup98")
    prof = load_profile("small-model")
    view = WorkloadView(trace, prof, START_S, START_S + DURATION_S, prof.slo_s)
    config = ReplayConfig(start_s=START_S, duration_s=DURATION_S, seed=0, fidelity=fidelity,
                          max_replicas=default_max_replicas(view))
    return Replay(view, parse_policy_spec(SPEC), config).run()


@pytest.mark.slow
def test_fast_and_request_fidelity_agree_on_worldcup98(traces: Path):
    request = _run(traces, "request")
    fast = _run(traces, "fast")
    assert request.requests == pytest.approx(fast.requests, rel=1e-6)
    summary = (f"request {100 * request.slo_attainment:.3f} % {request.replica_hours:.2f} h, "
               f"fast {100 * fast.slo_attainment:.3f} % {fast.replica_hours:.2f} h")
    assert 0.95 <= request.slo_attainment <= 0.995, summary
    assert 0.95 <= fast.slo_attainment <= 0.995, summary
    assert abs(request.slo_attainment - fast.slo_attainment) <= 0.005, summary
    assert abs(request.replica_hours - fast.replica_hours) <= 0.02 * request.replica_hours, summary
