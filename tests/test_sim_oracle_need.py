"""The oracle's compiled need search equals the plain trial-and-error search it implements."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.arrivals import counts_per_second
from simulator.fluid import FluidServer
from simulator.oracle_need import need_fast
from simulator.profiles import load_profile
from simulator.workload_view import WorkloadView
from simulator.workloads import make_workload


def reference_need(fluid: FluidServer, per_s: np.ndarray, interval_s: int, max_replicas: int,
                   max_miss: float, service_mean_s: float, slots: int) -> np.ndarray:
    """Interval by interval: fork the fluid queue, try counts upward, keep the first that holds."""
    out = []
    previous = 0
    for k in range(math.ceil(per_s.size / interval_s)):
        block = per_s[k * interval_s:(k + 1) * interval_s]
        arrivals = float(block.sum())
        floor = math.floor(arrivals / max(1, block.size) * service_mean_s / slots)
        n = max(1, min(previous, floor) if previous else floor)
        while True:
            trial = fluid.fork()
            before = trial.within_slo
            trial.step(block, n)
            if arrivals <= 0 or trial.within_slo - before >= (fluid.f_slo - max_miss) * arrivals \
                    or n >= max_replicas:
                break
            n += 1
        fluid, previous = trial, n
        out.append(n)
    return np.array(out)


@pytest.mark.parametrize(("workload", "profile", "max_replicas"), [
    pytest.param("flash-crowd", "small-model", 60, id="flash-crowd-small-model"),
    pytest.param("llm-bursty", "llm-7b", 60, id="llm-bursty-llm-7b"),
    pytest.param("flash-crowd", "small-model", 4, id="capped-at-max-replicas"),
])
def test_compiled_search_equals_reference(workload: str, profile: str,
                                          max_replicas: int) -> None:
    trace = make_workload(workload, 0, duration_s=6 * 3600)
    prof = load_profile(profile)
    view = WorkloadView(trace, prof, 0.0, trace.end_s, prof.slo_s)
    need = need_fast(view, 15.0, 0.001, max_replicas, "lor")
    fluid = FluidServer(prof.slots, view.service_mean_s, view.service_scv, view.slo_s,
                        view.slo_component_sample_s, routing="lor")
    ref = reference_need(fluid, counts_per_second(trace, 0.0, trace.end_s), 15, max_replicas,
                         0.001, view.service_mean_s, prof.slots)
    assert np.array_equal(need, ref)
    assert need.max() > need.min()  # the demand moved: the search had work to do
