"""Simulator speed (issue 2, section 8): request-level >= 1,000,000 simulated requests/s over a
whole replay; fast mode replays 14 days (alibaba-servegen-llm-14d, llm-7b) in < 1 s per
reactive policy (hpa, oracle) and < 30 s for predictive with hourly refits.

Request-level speed is requests / wall time of the whole replay (arrival generation, serving,
metric pipeline, HPA), after a short warm-up replay that loads the numba kernels. The oracle's
time includes planning its replica need from the true demand (done once per comparison).
Exits non-zero when a target is missed.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    Scoreboard,
    machine_line,
    print_table,
    replay_one,
    trace_path,
)
from simulator.compare import (  # noqa: E402
    SimulationRequest,
    default_max_replicas,
    load_input,
    oracle_need,
    run_comparison,
)
from simulator.profiles import load_profile  # noqa: E402
from simulator.replay import ReplayConfig  # noqa: E402
from simulator.traces import load_trace  # noqa: E402
from simulator.workload_view import WorkloadView  # noqa: E402
from simulator.workloads import make_workload  # noqa: E402

REQUEST_RPS_TARGET = 1_000_000
FAST_REACTIVE_S = 1.0
FAST_PREDICTIVE_S = 30.0
DAY_S = 86400.0


def request_level(board: Scoreboard) -> None:
    begin = time.perf_counter()
    warm = make_workload("flash-crowd", seed=0)
    replay_one(warm, "hpa", 0.0, 600.0)
    print(f"warm-up replay (numba kernels compiled or loaded): {time.perf_counter() - begin:.2f} s")
    worldcup = load_trace(trace_path("worldcup98"))
    cases = [
        ("flash-crowd workload, 2 days, hpa", warm, "hpa", 0.0, warm.end_s),
        ("worldcup98 day 45, 1 day, hpa:target_utilization=0.9", worldcup,
         "hpa:target_utilization=0.9", 45 * DAY_S, DAY_S),
    ]
    rows = []
    for label, trace, spec, start, duration in cases:
        begin = time.perf_counter()
        r = replay_one(trace, spec, start, duration, fidelity="request")
        wall = time.perf_counter() - begin
        rps = r.requests / wall
        rows.append([label, f"{r.requests:,}", f"{wall:.2f} s", f"{rps / 1e6:.2f} M"])
        board.check(f"request-level req/s: {label}", rps >= REQUEST_RPS_TARGET,
                    f"{rps / 1e6:.2f} M/s", f">= {REQUEST_RPS_TARGET / 1e6:.0f} M/s")
    print("\nrequest-level fidelity, whole replays")
    print_table(["replay", "requests", "wall", "requests/s"], rows)


def fast_mode(board: Scoreboard) -> None:
    request = SimulationRequest(trace=trace_path("alibaba-servegen-llm-14d"), profile="llm-7b",
                                policies=("hpa", "oracle", "predictive"), fidelity="fast")
    # the oracle's plan from the true demand, timed on its own (run_comparison makes it once)
    trace = load_input(request)
    prof = load_profile("llm-7b")
    view = WorkloadView(trace, prof, trace.start_s, trace.end_s, prof.slo_s)
    cfg = ReplayConfig(start_s=trace.start_s, duration_s=trace.duration_s,
                       max_replicas=default_max_replicas(view))
    begin = time.perf_counter()
    oracle_need(view, cfg.tick_s, cfg.max_miss, cfg.max_replicas)
    plan_s = time.perf_counter() - begin
    begin = time.perf_counter()
    comparison, _ = run_comparison(request)
    total_s = time.perf_counter() - begin
    rows = []
    for r in comparison.results:
        wall = r.wall_s + (plan_s if r.policy == "oracle" else 0.0)
        limit = FAST_PREDICTIVE_S if r.policy == "predictive" else FAST_REACTIVE_S
        rows.append([r.policy, f"{r.requests:,}", f"{r.wall_s:.2f} s",
                     f"{plan_s:.2f} s" if r.policy == "oracle" else "", f"{wall:.2f} s",
                     f"{100 * r.slo_attainment:.3f} %", f"{r.replica_hours:,.0f}"])
        board.check(f"fast mode 14 days: {r.policy}", wall < limit, f"{wall:.2f} s",
                    f"< {limit:g} s")
    print(f"\nfast fidelity, {comparison.trace} whole ({comparison.duration_s / DAY_S:.0f} days), "
          f"profile {comparison.profile}; whole comparison incl. loading {total_s:.1f} s")
    print_table(["policy", "requests", "replay", "oracle plan", "total", "SLO", "replica-h"],
                rows)


def main() -> int:
    warnings.simplefilter("ignore")
    print(machine_line())
    board = Scoreboard("simulator speed")
    request_level(board)
    fast_mode(board)
    return board.finish()


if __name__ == "__main__":
    sys.exit(main())
