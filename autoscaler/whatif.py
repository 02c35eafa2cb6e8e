"""What-if: replay a target's own history with its current policy, a candidate and the HPA alone.

Rules:
- A what-if is exactly `autoscaler record` (autoscaler/record.py, same grid, same rounding, same
  gap handling) into a temporary series.csv, then `autoscaler simulate` (simulator.compare) on
  it; the result names the two equivalent command lines, so anyone can reproduce the numbers.
- The recorded window is [until - window - warmup, until) on the step grid; the replay starts
  after the warmup (the forecasters' history) and runs for the window.
- Only a policy document's PredictiveConfig fields that differ from the defaults go into the
  replayed spec; the simulator fills the rest from the profile, as `simulate` does. `mode` and
  `dry_run` are not simulated.
- Replays run in a spawned process pool (WhatIfJobs), so a replay never holds the GIL of the
  API or of the control loop; at most `max_running_per_caller` jobs run or wait per caller.
Not pure: queries Prometheus, writes a temporary file, starts processes. `predictive_spec`,
`select_series` and `whatif_spec_for` are pure.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import shlex
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from autoscaler.errors import AutoscalerError
from autoscaler.metric_presets import MetricQueries
from autoscaler.policy_doc import defaults
from autoscaler.record import rfc3339

if TYPE_CHECKING:
    from autoscaler.settings import Settings, TargetConfig

# The replay's modules (record -> forecasting -> scipy, the simulator) are imported where they
# are used: a spawned worker then pays for them once, on its first replay, and the job
# bookkeeping stays importable in a fraction of a second.

log = logging.getLogger(__name__)

MAX_WARMUP_S = 2 * 86_400
"""Cap on the forecasters' history replayed before the window: more costs replay time and
Prometheus points without changing what the forecasters learn much [2 d]."""
NOT_SIMULATED = ("mode", "dry_run")


@dataclass(frozen=True)
class WhatIfSpec:
    """One what-if request, everything resolved (no settings, no clock).

    query: PromQL returning the target's request rate (1/s) as ONE series.
    window_s: replayed seconds. warmup_s: history before it, seconds. until_s: end, epoch s.
    step_s: trace interval, whole seconds. profile: simulator profile (preset or YAML file).
    current / candidate: flat policy documents (autoscaler/policy_doc.py).
    seed: seed of every random draw [0]. fill_gaps: "zero" | "linear" | None (fail on a gap)
    ["linear": a short scrape outage should not void a what-if]. fidelity: "request" | "fast" |
    None (the simulator's choice by request count) [None].
    """

    namespace: str
    name: str
    prometheus_url: str
    query: str
    window_s: int
    warmup_s: int
    until_s: float
    step_s: int
    profile: str
    current: dict[str, Any]
    candidate: dict[str, Any]
    seed: int = 0
    fill_gaps: str | None = "linear"
    fidelity: str | None = None


# -- pure helpers ----------------------------------------------------------------------------


def _spec_value(key: str, value: Any) -> str:
    if isinstance(value, tuple | list):
        # policies.registry cannot take a tuple from a spec string, and the simulator derives
        # this from the profile; replaying without it would silently answer another question.
        raise ValueError(f"{key}: a what-if cannot replay a non-default {key}")
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, float) else str(value)
    if any(c in text for c in ",:= \t\n"):
        raise ValueError(f"{key}: {text!r} cannot be written in a policy spec")
    return text


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list) and tuple(value) == tuple(default)
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default) and value == default
    return value == default


def predictive_spec(doc: Mapping[str, Any]) -> str:
    """`predictive:key=value,...` with the doc's PredictiveConfig fields that differ from the
    defaults (tick_s is the loop's, mode/dry_run are not simulated); ValueError on others."""
    params = []
    default = defaults()  # the document's defaults: PredictiveConfig's, without tick_s
    for key, value in doc.items():
        if key in NOT_SIMULATED or key == "tick_s":
            continue
        if key not in default:
            raise ValueError(f"{key}: not a policy field")
        if not _same(value, default[key]):
            params.append(f"{key}={_spec_value(key, value)}")
    return "predictive" + (":" + ",".join(params) if params else "")


def _label_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def select_series(query: str, labels: tuple[str, str], values: tuple[str, str], *,
                  allow_unlabelled: bool = False) -> str:
    """`query` (grouped by the two `labels`) narrowed to the series with `values`.

    PromQL has no label matcher on an expression, so the filter is `and on(labels)` against a
    one-element vector carrying the wanted labels (label_replace on vector(1)). With
    allow_unlabelled, a series without those labels also passes (a user's query owned by
    one target, e.g. `sum(rate(x[1m]))`: the controller attributes it the same way).
    """
    (la, lb), (va, vb) = labels, values
    wanted = (f'label_replace(label_replace(vector(1), "{la}", {_label_value(va)}, "", ""), '
              f'"{lb}", {_label_value(vb)}, "", "")')
    if allow_unlabelled:
        wanted = f"({wanted} or vector(1))"
    return f"({query}) and on({la}, {lb}) {wanted}"


def target_query(queries: MetricQueries, namespace: str, name: str, *, custom: bool) -> str:
    """The target's request-rate query for ONE series."""
    return select_series(queries.request_rate, queries.split_labels, (namespace, name),
                         allow_unlabelled=custom)


def whatif_spec_for(target_config: TargetConfig, settings: Settings,
                    candidate_doc: Mapping[str, Any], current_doc: Mapping[str, Any],
                    window_s: float, until_s: float, *, seed: int = 0,
                    fidelity: str | None = None) -> WhatIfSpec:
    """The spec of a what-if on `target_config` ending at `until_s` (epoch s, aligned down to
    the history step). Warmup = settings.history.days, capped at MAX_WARMUP_S."""
    # the loop's own PromQL, so the two cannot drift
    from autoscaler.target_state import queries_for

    step_s = max(1, round(settings.history.step_s))
    window = int(math.ceil(window_s / step_s)) * step_s
    if window <= 0:
        raise ValueError(f"window: must be positive, got {window_s:g} s")
    warmup = int(math.ceil(min(settings.history.days * 86_400, MAX_WARMUP_S) / step_s)) * step_s
    custom = target_config.request_rate_query is not None
    return WhatIfSpec(
        namespace=target_config.namespace, name=target_config.name,
        prometheus_url=settings.prometheus_url,
        query=target_query(queries_for(target_config), target_config.namespace,
                           target_config.name, custom=custom),
        window_s=window, warmup_s=warmup, until_s=float(math.floor(until_s / step_s) * step_s),
        step_s=step_s, profile=target_config.profile, current=dict(current_doc),
        candidate=dict(candidate_doc), seed=seed, fidelity=fidelity)


def json_safe(value: Any) -> Any:
    """What `simulate --json` writes (tuples as lists, numpy scalars as Python numbers),
    read back, with NaN/inf as None: strict JSON, as an HTTP body must be."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return json_safe(value.item())  # numpy scalars, without importing numpy here
    x = float(value)
    return x if math.isfinite(x) else None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def command_lines(spec: WhatIfSpec, policies: list[str], start_s: float,
                  duration_s: float) -> list[str]:
    """The `autoscaler record` and `autoscaler simulate` lines that give the same numbers."""
    q = shlex.quote
    rec = ["autoscaler", "record", "--prometheus", q(spec.prometheus_url), "--query",
           q(spec.query), "--since", f"{spec.window_s + spec.warmup_s}s", "--step",
           f"{spec.step_s}s", "--until", rfc3339(math.floor(spec.until_s))]
    if spec.fill_gaps is not None:
        rec += ["--fill-gaps", spec.fill_gaps]
    sim = ["autoscaler", "simulate", "--trace", "series.csv", "--start", _num(start_s),
           "--duration", _num(duration_s), "--profile", q(spec.profile)]
    for p in policies:
        sim += ["--policy", q(p)]
    sim += ["--seed", str(spec.seed)]
    if spec.fidelity is not None:
        sim += ["--fidelity", spec.fidelity]
    sim += ["--json", "whatif.json"]
    return [" ".join(rec) + " > series.csv", " ".join(sim)]


# -- the replay ------------------------------------------------------------------------------


def run_whatif(spec: WhatIfSpec) -> dict[str, Any]:
    """Record, replay hpa / current / candidate, and return the comparison (see module doc).

    Raises AutoscalerError (Prometheus), ValueError (window, policy) or SimulatorError."""
    from autoscaler.record import record
    from simulator.compare import SimulationRequest, run_comparison

    until_s = math.floor(spec.until_s)  # what `--until` (whole seconds) can express
    labels = {"hpa": "hpa", "current": predictive_spec(spec.current),
              "candidate": predictive_spec(spec.candidate)}
    policies = list(labels.values())
    with tempfile.TemporaryDirectory(prefix="whatif-") as tmp:
        path = Path(tmp) / "series.csv"
        with path.open("w") as out:
            rec = record(out, spec.prometheus_url, spec.query,
                         since_s=spec.window_s + spec.warmup_s, until_s=until_s,
                         step_s=spec.step_s, fill=spec.fill_gaps)
        # Trace time 0 is the first recorded value; with less history than asked, the replay
        # keeps its end and the warmup shrinks first.
        start_s = max(0.0, until_s - spec.window_s - rec.start_s)
        duration_s = min(float(spec.window_s), until_s - rec.start_s - start_s)
        request = SimulationRequest(trace=path, profile=spec.profile, policies=policies,
                                    start_s=start_s, duration_s=duration_s, seed=spec.seed,
                                    fidelity=spec.fidelity)
        comparison, _ = run_comparison(request)
    result = json_safe(comparison.to_json())
    result["trace"] = f"{spec.namespace}/{spec.name}"
    return {
        "comparison": result,
        "labels": labels,
        "command": command_lines(spec, policies, start_s, duration_s),
        # what was replayed, not what was asked: with less history the window is shorter
        "window": {"from": rfc3339(rec.start_s + start_s),
                   "until": rfc3339(rec.start_s + start_s + duration_s),
                   "warmup_s": start_s, "asked_s": spec.window_s,
                   "asked_warmup_s": spec.warmup_s, "recorded_from": rfc3339(rec.start_s)},
    }


# -- jobs ------------------------------------------------------------------------------------


class TooManyJobs(AutoscalerError):
    """The caller already has its maximum of running what-if jobs (the API answers 429)."""

    temporary = True


@dataclass(frozen=True)
class JobView:
    """One job as the API shows it. target: "namespace/name" of a WhatIfSpec (None for other
    specs). submitted_at/finished_at: RFC 3339 UTC. result: run_whatif's dict. error: one line.
    worker_pid: the process that ran it (None while running)."""

    job_id: str
    caller: str
    status: Literal["running", "done", "failed"]
    submitted_at: str
    target: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    worker_pid: int | None = None


def error_line(exc: BaseException, url: str) -> str:
    """A one-line reason for a failed job (never a traceback)."""
    if isinstance(exc, AutoscalerError):
        from autoscaler.record import one_line

        return one_line(exc, url)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_job(runner: Callable[[Any], dict[str, Any]], spec: Any
             ) -> tuple[int, str, dict[str, Any] | str]:
    """In the worker: (pid, "done", result) or (pid, "failed", one line). Only plain values
    cross the process boundary, so an exception that does not pickle cannot lose the reason."""
    try:
        return os.getpid(), "done", runner(spec)
    except Exception as e:
        from simulator.errors import SimulatorError

        if not isinstance(e, AutoscalerError | ValueError | SimulatorError | OSError):
            log.exception("what-if job failed unexpectedly")
        return os.getpid(), "failed", error_line(e, getattr(spec, "prometheus_url", ""))


class WhatIfJobs:
    """What-if jobs in a spawned process pool; finished ones kept (newest `keep`).

    max_running_per_caller: running or queued jobs per caller before TooManyJobs [2].
    workers: processes replaying at once [1]. keep: finished jobs remembered [100].
    runner: the replay, a module-level function (it is pickled) [run_whatif].
    clock: epoch seconds, for submitted_at/finished_at [time.time].
    """

    def __init__(self, max_running_per_caller: int = 2, workers: int = 1, keep: int = 100,
                 runner: Callable[[Any], dict[str, Any]] = run_whatif,
                 clock: Callable[[], float] = time.time) -> None:
        if max_running_per_caller < 1 or workers < 1 or keep < 0:
            raise ValueError("max_running_per_caller and workers must be >= 1, keep >= 0")
        self.max_running_per_caller = max_running_per_caller
        self.workers = workers
        self.keep = keep
        self.runner = runner
        self.clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when a job finishes
        self._running: dict[str, JobView] = {}
        self._futures: dict[str, Future] = {}
        self._finished: OrderedDict[str, JobView] = OrderedDict()
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    def submit(self, caller: str, spec: Any) -> str:
        """Queue a job and return its id at once; TooManyJobs when the caller is at its max."""
        with self._lock:
            if self._closed:
                raise RuntimeError("what-if jobs are shut down")
            mine = sum(1 for j in self._running.values() if j.caller == caller)
            if mine >= self.max_running_per_caller:
                raise TooManyJobs(f"{mine} what-if jobs of this caller are running; at most "
                                  f"{self.max_running_per_caller}", retry_after_s=30.0)
            job_id = uuid.uuid4().hex
            try:
                future = self._pool().submit(_run_job, self.runner, spec)
            except BrokenProcessPool:  # a worker died earlier (e.g. OOM-killed): start afresh
                self._executor = None
                future = self._pool().submit(_run_job, self.runner, spec)
            target = (f"{spec.namespace}/{spec.name}" if isinstance(spec, WhatIfSpec)
                      else None)
            self._running[job_id] = JobView(job_id, caller, "running", rfc3339(self.clock()),
                                            target)
            self._futures[job_id] = future
        future.add_done_callback(lambda f: self._finish(job_id, f))
        return job_id

    def _finish(self, job_id: str, future: Future) -> None:
        try:
            pid, status, payload = future.result()
        except BaseException as e:  # the worker died or the job was cancelled at shutdown
            pid, status, payload = None, "failed", f"the what-if worker failed: {error_line(e, '')}"
        with self._lock:
            job = self._running.pop(job_id, None)
            self._futures.pop(job_id, None)
            if job is None:
                return
            done = dataclasses.replace(
                job, status=status, finished_at=rfc3339(self.clock()), worker_pid=pid,
                result=payload if status == "done" else None,
                error=payload if status == "failed" else None)
            self._finished[job_id] = done
            while len(self._finished) > self.keep:
                self._finished.popitem(last=False)
            self._changed.notify_all()

    def get(self, job_id: str) -> JobView | None:
        """The job, or None when unknown (or dropped as one of the oldest finished)."""
        with self._lock:
            return self._running.get(job_id) or self._finished.get(job_id)

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobView | None:
        """Block until the job finished (or timeout_s passed); then get(job_id)."""
        with self._changed:
            self._changed.wait_for(lambda: job_id not in self._running, timeout=timeout_s)
            return self._running.get(job_id) or self._finished.get(job_id)

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting jobs; queued ones are cancelled (they end as failed). Without
        `wait`, running replays are stopped too (their workers terminated, the jobs end as
        failed): otherwise the interpreter's exit would still wait for the longest replay,
        and a SIGTERM would outlast a pod's grace period."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is None:
            return
        # the pool's own list; concurrent.futures has no public terminate before 3.14
        workers = [] if wait else list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=wait, cancel_futures=True)
        for process in workers:
            if process.is_alive():
                process.terminate()
