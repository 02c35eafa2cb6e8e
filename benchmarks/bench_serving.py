"""Speed of the serving kernels: request-level RequestServer.serve and the fluid fast mode.

Run from the project root: `python benchmarks/bench_serving.py`. Prints figures; exits 1 when
request-level LOR serving is below 1,000,000 simulated requests/s (issue section 8).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.fluid import FluidServer  # noqa: E402
from simulator.serving import RequestServer  # noqa: E402

TARGET_RPS = 1_000_000
# (label, slots per replica, replicas, mean service s, utilization, batch s)
SCENARIOS = [
    ("small-model 40x4, 15 s batches", 4, 40, 0.04, 0.7, 15.0),
    ("small-model 40x4, 1 s batches", 4, 40, 0.04, 0.7, 1.0),
    ("llm-7b 40x32, 15 s batches", 32, 40, 10.0, 0.7, 15.0),
]


def bench_request(routing: str, slots: int, replicas: int, mean_s: float, util: float,
                  batch_s: float, total_s: float = 1800.0) -> float:  # fmt: skip
    """Simulated requests/s of serve(), with one replica swapped between batches."""
    rng = np.random.default_rng(0)
    rate = util * replicas * slots / mean_s
    server = RequestServer(slots, routing, seed=0)
    ids = [server.add_replica(0.0) for _ in range(replicas)]
    batches = []
    for k in range(int(total_s / batch_s)):
        n = rng.poisson(rate * batch_s)
        arr = np.sort(rng.uniform(k * batch_s, (k + 1) * batch_s, n))
        batches.append((k * batch_s, arr, rng.exponential(mean_s, n)))
    served, elapsed = 0, 0.0
    for t0, arr, svc in batches:
        begin = time.perf_counter()
        server.remove_replica(ids.pop(0), t0)
        ids.append(server.add_replica(t0))
        server.serve(arr, svc)
        elapsed += time.perf_counter() - begin
        served += arr.size
    return served / elapsed


def bench_fluid(days: float = 14.0, run_steps: int = 15) -> tuple[float, float]:
    """(init s, replay s) for `days` of 1 s steps with the replica count changing every run."""
    rng = np.random.default_rng(0)
    steps = int(days * 86_400)
    t = np.arange(steps)
    rate = 2000 + 1500 * np.sin(t / 86_400 * 2 * np.pi) + rng.normal(0, 50, steps)
    begin = time.perf_counter()
    server = FluidServer(4, 0.04, 1.0, 0.25, rng.exponential(0.04, 100_000))
    init_s = time.perf_counter() - begin
    replicas = np.ceil(rate[::run_steps] / (100 * 0.8)).astype(int)
    begin = time.perf_counter()
    for k, i in enumerate(range(0, steps, run_steps)):
        server.step(rate[i : i + run_steps], int(replicas[k]))
    return init_s, time.perf_counter() - begin


def main() -> int:
    begin = time.perf_counter()
    warm = RequestServer(4, "lor")
    warm.add_replica(0.0)
    warm.serve(np.array([0.0]), np.array([1.0]))
    print(f"first serve() call (numba compile or cache load): {time.perf_counter() - begin:.2f} s")
    worst_lor = np.inf
    for label, slots, replicas, mean_s, util, batch_s in SCENARIOS:
        for routing in ("lor", "random", "central"):
            rps = bench_request(routing, slots, replicas, mean_s, util, batch_s)
            print(f"request-level {routing:7s} {label:32s} {rps / 1e6:6.2f} M requests/s")
            if routing == "lor":
                worst_lor = min(worst_lor, rps)
    begin = time.perf_counter()
    FluidServer(4, 0.04, 1.0, 0.25, np.full(1, 0.04)).step(np.ones(1), 1)
    print(f"first fluid step (numba compile or cache load): {time.perf_counter() - begin:.2f} s")
    init_s, replay_s = bench_fluid()
    print(
        f"fluid 14 days (1,209,600 steps, replicas change every 15): {replay_s:.2f} s "
        f"({1_209_600 / replay_s / 1e6:.2f} M steps/s), tables built in {init_s:.2f} s"
    )
    if worst_lor < TARGET_RPS:
        print(f"FAIL: request-level lor {worst_lor:,.0f} requests/s < {TARGET_RPS:,}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
