"""Scale and memory of the live control loop against a real Prometheus (issue 3, Targets).

Run from the project root: `python -m benchmarks.bench_controller [--targets N]
[--memory-targets M] [--ticks T]`. Needs the Debian package `prometheus` (promtool too).

What runs: a Prometheus on 127.0.0.1 (started with tests/prom_fixtures' helpers), backfilled
with `promtool tsdb create-blocks-from openmetrics` with one `http_requests_total` counter per
synthetic (namespace, deployment): a daily shape with a per-target level, amplitude and phase,
log-normal noise, at 60 s for `DATA_DAYS` days ending an hour before the wall clock. The
Controller runs in dry run without Kubernetes (cluster=None, actuator=None) on a virtual clock,
with the `generic` preset (one grouped query per kind for all targets) and the product's default
forecaster ("auto"), 3 days of history at 60 s.

1. Scale (N targets, default 1,000): cold start (first history read), one fit per target
   (the hourly refit's work), then steady ticks 15 s apart with the refits spread as the service
   spreads them. Figures: tick wall and decision time per target (tick wall / N), fit time per
   target, memory per target (RSS delta / N). Targets: tick wall + its share of refits < 15 s;
   refit + tick work per hour < 3600 s x usable cores.
2. Flat memory (M targets, default 20, for T = 10,000 ticks, i.e. 41.7 h of virtual time with
   refits hourly): RSS sampled every 1,000 ticks; growth after the warm-up (first 2,000 ticks,
   which fill the bounded decision logs) must stay under 5 %. Fewer targets than in (1) because
   10,000 ticks x 1,000 targets would take hours of wall time; per-target state is the same.

Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler.loop import Controller  # noqa: E402
from autoscaler.metrics import ControllerMetrics  # noqa: E402
from autoscaler.prometheus_source import PrometheusSource  # noqa: E402
from autoscaler.settings import Settings  # noqa: E402
from benchmarks.common import Scoreboard, machine_line, print_table  # noqa: E402
from tests.prom_fixtures import RunningPrometheus, _binaries, _om_series  # noqa: E402

STEP_S = 60
DAY_S = 86_400
TICK_S = 15.0
REFIT_S = 3600.0
HISTORY_DAYS = 3
BLOCK_S = 7200  # promtool's block length
DATA_DAYS = 5  # 3 days of history + the memory run's 41.7 h + margin
NAMESPACES = 20
GROWTH_LIMIT = 0.05
WARMUP_TICKS = 2000
SAMPLE_EVERY = 1000
STEADY_TICKS = 20
SEED = 20_260_301


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def target_names(n: int) -> list[tuple[str, str]]:
    return [(f"team-{i % NAMESPACES:02d}", f"model-{i:04d}") for i in range(n)]


def synthetic_counts(n: int, samples: int, sample_s: np.ndarray, rng: np.random.Generator
                     ) -> np.ndarray:
    """(n, samples) cumulative request counts: a daily shape with per-target level (1..500
    rps, log-uniform), amplitude, phase and 10 % log-normal noise per minute."""
    level = np.exp(rng.uniform(np.log(1.0), np.log(500.0), n))[:, None]
    amp = rng.uniform(0.3, 0.8, n)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None]
    day = 2 * np.pi * (sample_s[None, :] % DAY_S) / DAY_S
    rate = level * (1 + amp * np.sin(day + phase)) * rng.lognormal(0, 0.1, (n, samples))
    return np.cumsum(np.round(rate * STEP_S), axis=1)


def start_prometheus(workdir: Path, n: int, end_s: int) -> RunningPrometheus:
    """Backfill `n` targets' counters for DATA_DAYS days ending at end_s, then serve them."""
    _, promtool = _binaries()
    samples = DATA_DAYS * DAY_S // STEP_S
    sample_s = end_s - STEP_S * np.arange(samples)[::-1]
    counts = synthetic_counts(n, samples, sample_s, np.random.default_rng(SEED))
    began = time.perf_counter()
    (workdir / "data").mkdir()
    # promtool re-reads its whole input once per 2 h block, so one input file per aligned
    # 2 h window keeps the backfill linear in the samples; two promtools run at once.
    window = np.floor_divide(sample_s, BLOCK_S)
    names = target_names(n)
    running: list[tuple[subprocess.Popen, Path]] = []
    for w in np.unique(window):
        sel = window == w
        om = workdir / f"synthetic-{int(w)}.om"
        with om.open("w") as f:
            f.write("# HELP http_requests Requests served.\n# TYPE http_requests counter\n")
            for i, (ns, dep) in enumerate(names):
                lines = _om_series("http_requests_total", f'namespace="{ns}",deployment="{dep}"',
                                   counts[i, sel], sample_s[sel])
                f.write("\n".join(lines) + "\n")
            f.write("# EOF\n")
        running.append((subprocess.Popen(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om),
             str(workdir / "data")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), om))
        while len(running) >= 2 or (running and w == window[-1]):
            proc, path = running.pop(0)
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                sys.exit(f"promtool backfill failed: {err.decode()[-2000:]}")
            path.unlink()
    del counts
    print(f"backfill: {n} targets x {samples} samples in {time.perf_counter() - began:.0f} s",
          flush=True)
    server = RunningPrometheus(workdir, "global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    wait_idle(server.proc.pid)
    return server


def wait_idle(pid: int, limit_s: float = 300.0) -> None:
    """Wait until Prometheus (compacting the backfilled blocks at start) uses < 5 % of a core,
    so that it does not compete with the measured loop."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = cpu_s(pid)
        time.sleep(3.0)
        if (cpu_s(pid) - before) / 3.0 < 0.05:
            return
    print(f"warning: prometheus still busy after {limit_s:.0f} s", flush=True)


def make_controller(url: str, names: list[tuple[str, str]], start_s: float) -> Controller:
    settings = Settings(tick_s=TICK_S, dry_run=True, refit_interval_s=REFIT_S, targets=[
        {"namespace": ns, "name": dep, "preset": "generic"} for ns, dep in names])
    source = PrometheusSource(url, step_s=STEP_S, history_points=HISTORY_DAYS * DAY_S // STEP_S,
                              timeout_s=300.0)
    return Controller(settings.for_standalone().targets_config(), source, actuator=None,
                      cluster=None, metrics=ControllerMetrics(), tick_s=TICK_S,
                      refit_interval_s=REFIT_S, history_s=HISTORY_DAYS * DAY_S, start_s=start_s)


def check_decisions(records: dict, n: int) -> None:
    """Guard against measuring a loop that does nothing: every target decided on a forecast."""
    reasons: dict[str, int] = {}
    for r in records.values():
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    errors = sum(v for k, v in reasons.items() if k.startswith("error"))
    if len(records) != n or errors:
        sys.exit(f"the loop did not decide for every target: {len(records)}/{n}, {reasons}")
    print(f"decision reasons at the last tick: {reasons}", flush=True)


def bench_scale(url: str, n: int, start_s: float, board: Scoreboard) -> None:
    cores = usable_cores()
    gc.collect()
    rss0 = rss_bytes()
    controller = make_controller(url, target_names(n), start_s)
    now = start_s
    began = time.perf_counter()
    controller.tick(now)  # cold start: reads the whole history (chunked), no model yet
    cold_s = time.perf_counter() - began
    fits = []
    for key in controller.refit_due(now):
        began = time.perf_counter()
        ok = controller.refit(key, now)
        fits.append(time.perf_counter() - began)
        if not ok:
            sys.exit(f"fit failed for {key}: {controller.targets[key].forecaster.last_failure}")
    fit_s = np.asarray(fits)
    ticks, refit_walls = [], []
    for _ in range(STEADY_TICKS):
        now += TICK_S
        began = time.perf_counter()
        records = controller.tick(now)
        ticks.append(time.perf_counter() - began)
        # The refits the service spreads onto this tick (refit_due after the first round is
        # empty for an hour; run the average share, n / ticks per hour, to measure it).
        share = int(np.ceil(n * TICK_S / REFIT_S))
        keys = list(controller.targets)[len(refit_walls) * share % n:][:share]
        began = time.perf_counter()
        for key in keys:
            controller.refit(key, now)
        refit_walls.append(time.perf_counter() - began)
    check_decisions(records, n)
    gc.collect()
    rss1 = rss_bytes()
    tick_s = np.asarray(ticks)
    per_hour_s = (REFIT_S / TICK_S) * tick_s.mean() + n * fit_s.mean()
    worst_tick_s = tick_s.max() + max(refit_walls)
    print(f"\n1. scale: {n} targets, 15 s tick, hourly refits, dry run, no Kubernetes")
    print_table(["figure", "value"], [
        ["cold start tick (history read of 3 d)", f"{cold_s:.2f} s"],
        ["steady tick wall, median / max", f"{np.median(tick_s):.3f} / {tick_s.max():.3f} s"],
        ["decision time per target (tick wall / targets)",
         f"{1e3 * np.median(tick_s) / n:.3f} ms"],
        ["fit time per target, median / p95 / max",
         f"{1e3 * np.median(fit_s):.1f} / {1e3 * np.quantile(fit_s, 0.95):.1f} / "
         f"{1e3 * fit_s.max():.1f} ms"],
        ["refits per tick when spread over the hour", f"{int(np.ceil(n * TICK_S / REFIT_S))}"],
        ["worst tick + its refits", f"{worst_tick_s:.3f} s"],
        ["work per hour (240 ticks + n fits)", f"{per_hour_s:.0f} s of {REFIT_S * cores:.0f} "
                                               f"core-s ({100 * per_hour_s / (REFIT_S * cores):.1f} %)"],
        ["memory per target (RSS delta / targets)", f"{(rss1 - rss0) / n / 1024:.0f} KiB"],
        ["RSS with all targets", f"{rss1 / 2**20:.0f} MiB"],
    ])
    board.check(f"{n} targets: tick + spread refits < 15 s", worst_tick_s < TICK_S,
                f"{worst_tick_s:.2f} s", "15 s")
    board.check(f"{n} targets: refit + tick work per hour", per_hour_s < REFIT_S * cores,
                f"{per_hour_s:.0f} s", f"{REFIT_S * cores:.0f} s ({cores} cores)")


def bench_memory(url: str, m: int, n_ticks: int, start_s: float, board: Scoreboard) -> None:
    controller = make_controller(url, target_names(m), start_s)
    samples: list[tuple[int, int]] = []
    now = start_s
    began = time.perf_counter()
    for i in range(1, n_ticks + 1):
        for key in controller.refit_due(now):
            controller.refit(key, now)
        records = controller.tick(now)
        now += TICK_S
        if i % SAMPLE_EVERY == 0:
            gc.collect()
            samples.append((i, rss_bytes()))
            print(f"  tick {i}: RSS {samples[-1][1] / 2**20:.1f} MiB, "
                  f"{time.perf_counter() - began:.0f} s", flush=True)
    check_decisions(records, m)
    base = next(r for i, r in samples if i >= WARMUP_TICKS)
    after = [r for i, r in samples if i > WARMUP_TICKS]
    growth = (max(after) - base) / base if after else 0.0
    hist = controller.source._cache  # noqa: SLF001 - the cache whose growth we bound
    points = max(len(c.values) for c in hist.values())
    print(f"\n2. flat memory: {m} targets, {n_ticks} ticks ({n_ticks * TICK_S / 3600:.1f} h "
          f"virtual), refits hourly, RSS every {SAMPLE_EVERY} ticks")
    print_table(["tick", "RSS MiB"], [[str(i), f"{r / 2**20:.1f}"] for i, r in samples])
    print(f"growth after tick {WARMUP_TICKS}: {100 * growth:+.2f} % "
          f"({(max(after) - base) / 2**20 if after else 0.0:+.1f} MiB) "
          f"(history cache {points} points per target)")
    board.check(f"RSS growth over {n_ticks} ticks ({m} targets)", growth < GROWTH_LIMIT,
                f"{100 * growth:+.2f} %", f"< {100 * GROWTH_LIMIT:.0f} %")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=1000)
    p.add_argument("--memory-targets", type=int, default=20)
    p.add_argument("--ticks", type=int, default=10_000)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    print(machine_line(), flush=True)
    board = Scoreboard("bench_controller")
    end_s = (int(time.time()) // STEP_S) * STEP_S - 3600 + 30
    # Start where 3 days of history exist; the memory run ends before the data does.
    start_s = float(end_s - DATA_DAYS * DAY_S + HISTORY_DAYS * DAY_S + 600)
    if 0 < args.ticks < WARMUP_TICKS + SAMPLE_EVERY:
        sys.exit(f"--ticks must be 0 or at least {WARMUP_TICKS + SAMPLE_EVERY}")
    if start_s + args.ticks * TICK_S > end_s:
        sys.exit(f"--ticks {args.ticks} runs past the backfilled data")
    # Each part has its own Prometheus holding only its targets, so that the memory run's
    # grouped queries do not carry the scale run's 1,000 series on every tick.
    parts = []
    if args.targets > 0:
        parts.append((args.targets, lambda url: bench_scale(url, args.targets, start_s, board)))
    if args.ticks > 0 and args.targets == 0:
        parts.append((args.memory_targets, lambda url: bench_memory(
            url, args.memory_targets, args.ticks, start_s, board)))
    for n, run in parts:
        workdir = Path(tempfile.mkdtemp(prefix="bench-controller-"))
        try:
            server = start_prometheus(workdir, n, int(end_s))
            try:
                run(server.url)
            finally:
                server.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.ticks > 0 and args.targets > 0:
        # A fresh process, so that RSS is not padded by the scale run's freed heap (which
        # would hide growth by being reused).
        sys.stdout.flush()
        rc = subprocess.call([sys.executable, "-m", "benchmarks.bench_controller", "--targets",
                              "0", "--memory-targets", str(args.memory_targets), "--ticks",
                              str(args.ticks)], cwd=ROOT)
        board.check("memory run (own process, its own targets above)", rc == 0,
                    f"exit {rc}", "exit 0")
    print(machine_line())
    return board.finish()


if __name__ == "__main__":
    sys.exit(main())
