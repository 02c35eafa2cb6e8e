"""`autoscaler simulate`: replay one workload through several policies and compare them.

Every policy sees the same arrivals (same seed), the same metric pipeline and the same cold
starts stream; the oracle is always computed, listed or not, because every cost is reported as
a ratio to its replica-hours.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policies.registry import PolicySpec, parse_policy_spec
from simulator.errors import SimulatorError
from simulator.oracle_need import need_fast, need_request_level
from simulator.profiles import Profile, load_profile
from simulator.replay import Replay, ReplayConfig
from simulator.results import Comparison, PolicyResult
from simulator.traces import Trace, load_trace
from simulator.workload_view import WorkloadView
from simulator.workloads import make_workload

DEFAULT_POLICIES = ("hpa", "predictive", "oracle")
FAST_ABOVE_REQUESTS = 20_000_000
FIDELITIES = ("request", "fast")


@dataclass(frozen=True)
class SimulationRequest:
    """The inputs of `autoscaler simulate` (see its --help)."""

    trace: Path | None = None
    workload: str | None = None
    profile: str = "small-model"
    policies: tuple[str, ...] | list[str] = ()
    slo_ms: float | None = None
    start_s: float = 0.0
    duration_s: float | None = None
    rate_scale: float = 1.0
    seed: int = 0
    fidelity: str | None = None
    routing: str = "lor"
    pod_mtbf_h: float | None = None


def load_input(request: SimulationRequest) -> Trace:
    if request.trace is not None:
        trace = load_trace(request.trace)
    else:
        assert request.workload is not None
        trace = make_workload(request.workload, seed=request.seed)
    if request.rate_scale != 1.0:
        trace = trace.scaled(request.rate_scale, seed=request.seed)
    return trace


def resolve_window(trace: Trace, start_s: float, duration_s: float | None) -> tuple[float, float]:
    """The replay window [start, end) on the trace clock, checked against the trace."""
    start = start_s
    if not trace.start_s <= start < trace.end_s:
        raise SimulatorError(f"--start {start_s:g} s is outside the trace "
                             f"[{trace.start_s:g}, {trace.end_s:g}) s")
    if duration_s is not None and duration_s <= 0:
        raise SimulatorError(f"--duration must be positive, got {duration_s:g}")
    end = trace.end_s if duration_s is None else min(trace.end_s, start + duration_s)
    return start, end


def choose_fidelity(requested: str | None, n_requests: float) -> str:
    if requested is None:
        return "request" if n_requests < FAST_ABOVE_REQUESTS else "fast"
    if requested not in FIDELITIES:
        raise SimulatorError(f"--fidelity must be one of {', '.join(FIDELITIES)}, got {requested!r}")
    return requested


def default_max_replicas(view: WorkloadView) -> int:
    """The profile's max, else room for twice the replay's busiest minute at full utilization
    (at least 10)."""
    prof = view.profile
    if prof.max_replicas is not None:
        return int(prof.max_replicas)
    return max(10, int(np.ceil(2 * view.peak_rate_rps() / view.capacity_rps_per_replica)))


def run_comparison(request: SimulationRequest, progress: bool = False
                   ) -> tuple[Comparison, float]:
    """Run every requested policy plus the oracle; returns the comparison and replica capacity."""
    specs = [parse_policy_spec(p) for p in request.policies] or [
        PolicySpec(name) for name in DEFAULT_POLICIES]
    if request.pod_mtbf_h is not None and not request.pod_mtbf_h > 0:
        raise SimulatorError(f"--pod-mtbf-h must be positive, got {request.pod_mtbf_h:g}")
    if request.routing not in ("lor", "random", "central"):
        raise SimulatorError(f"--routing must be lor, random or central, got {request.routing!r}")
    profile: Profile = load_profile(request.profile)
    trace = load_input(request)
    start_s, end_s = resolve_window(trace, request.start_s, request.duration_s)
    fidelity = choose_fidelity(request.fidelity, trace.total_requests(start_s, end_s))
    slo_s = (request.slo_ms if request.slo_ms is not None else profile.slo_ms) / 1000.0
    if slo_s <= 0:
        raise SimulatorError(f"--slo-ms must be positive, got {request.slo_ms:g}")
    if slo_s * 1000.0 != profile.slo_ms:
        profile = dataclasses.replace(profile, slo_ms=slo_s * 1000.0)
    view = WorkloadView(trace, profile, start_s, end_s, slo_s)
    config = ReplayConfig(start_s=start_s, duration_s=end_s - start_s, seed=request.seed,
                          fidelity=fidelity, routing=request.routing,
                          max_replicas=default_max_replicas(view),
                          pod_mtbf_s=None if request.pod_mtbf_h is None
                          else request.pod_mtbf_h * 3600.0)
    oracle_spec = next((s for s in specs if s.name == "oracle"), PolicySpec("oracle"))
    max_miss = float(oracle_spec.params.get("max_miss", config.max_miss))
    if fidelity == "fast":
        need = need_fast(view, config.tick_s, max_miss, config.max_replicas, config.routing)
    else:
        need = need_request_level(view, config.tick_s, max_miss, config.max_replicas,
                                  config.seed, config.routing)
    need = np.maximum(need, view.profile.min_replicas)
    results: list[PolicyResult] = []
    oracle: PolicyResult | None = None
    run_specs = specs if any(s.name == "oracle" for s in specs) else [*specs, oracle_spec]
    bar = _progress_bar(progress, len(run_specs), end_s - start_s)
    for spec in run_specs:
        wall = time.perf_counter()
        tick = bar.policy(spec) if bar else None
        replay = Replay(view, spec, config,
                        oracle_need=need if spec.name == "oracle" else None, progress=tick)
        result = replay.run()
        result.wall_s = time.perf_counter() - wall
        if spec.name == "oracle" and oracle is None:
            oracle = result
        if spec in specs:
            results.append(result)
    if bar:
        bar.close()
    assert oracle is not None
    for r in [*results, oracle]:
        r.cost_vs_oracle = r.replica_hours / oracle.replica_hours if oracle.replica_hours else float("nan")
    comparison = Comparison(trace=trace.name, profile=profile.name, slo_ms=slo_s * 1000.0,
                            start_s=start_s, duration_s=end_s - start_s, seed=request.seed,
                            fidelity=fidelity, results=results, oracle=oracle)
    return comparison, view.capacity_rps_per_replica


class _Bar:
    """A rich progress bar over simulated time, one task per policy."""

    def __init__(self, n_policies: int, duration_s: float) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.duration_s = duration_s
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                                 transient=True)
        self.progress.start()

    def policy(self, spec: PolicySpec) -> Callable[[float], None]:
        task = self.progress.add_task(str(spec), total=self.duration_s)
        every_s = self.duration_s / 200.0
        state = {"t0": None, "last": -float("inf")}

        def tick(t_s: float) -> None:
            if state["t0"] is None:
                state["t0"] = t_s
            if t_s - state["last"] >= every_s:  # redraw at most ~200 times per policy
                state["last"] = t_s
                self.progress.update(task, completed=t_s - state["t0"])

        return tick

    def close(self) -> None:
        self.progress.stop()


def _progress_bar(enabled: bool, n: int, duration_s: float) -> _Bar | None:
    return _Bar(n, duration_s) if enabled else None
