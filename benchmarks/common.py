"""What the benchmark modules share: where the traces are, the machine line, and a scoreboard
of targets that prints a summary and turns into an exit code (0 = every target met)."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def traces_dir() -> Path:
    """$AUTOSCALER_TRACES_DIR, default ../shared/traces beside the project."""
    return Path(os.environ.get("AUTOSCALER_TRACES_DIR", ROOT.parent / "shared" / "traces"))


def trace_path(name: str) -> Path:
    """The directory of a recorded trace; exits with one clear line when it is missing."""
    path = traces_dir() / name
    if not (path / "series.csv").is_file():
        sys.exit(f"recorded trace {path} not found: set AUTOSCALER_TRACES_DIR to the shared "
                 "traces directory")
    return path


def machine_line() -> str:
    """Cores and versions: every figure is printed with the machine it was measured on."""
    import numpy

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return (f"machine: {cores} cores ({usable} usable), {platform.machine()}, "
            f"Python {platform.python_version()}, numpy {numpy.__version__}")


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain fixed-width table (first column left-aligned, others right-aligned)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


@dataclass
class Target:
    name: str
    measured: str
    limit: str
    met: bool


@dataclass
class Scoreboard:
    """Targets checked by one benchmark module."""

    title: str
    targets: list[Target] = field(default_factory=list)

    def check(self, name: str, met: bool, measured: str, limit: str) -> bool:
        self.targets.append(Target(name, measured, limit, bool(met)))
        return bool(met)

    def finish(self) -> int:
        """Print the targets table; 0 when every target was met, else 1."""
        print(f"\n{self.title}: targets")
        print_table(["target", "measured", "limit", "result"],
                    [[t.name, t.measured, t.limit, "met" if t.met else "MISSED"]
                     for t in self.targets])
        missed = [t for t in self.targets if not t.met]
        print(f"{len(self.targets) - len(missed)} met, {len(missed)} missed")
        return 1 if missed else 0


def replay_one(trace, spec: str, start_s: float, duration_s: float, *,
               profile: str = "small-model", fidelity: str = "request", seed: int = 0):
    """One policy replayed as `autoscaler simulate` would (same config), without the oracle."""
    from policies.registry import parse_policy_spec
    from simulator.compare import default_max_replicas
    from simulator.profiles import load_profile
    from simulator.replay import Replay, ReplayConfig
    from simulator.workload_view import WorkloadView

    prof = load_profile(profile)
    view = WorkloadView(trace, prof, start_s, start_s + duration_s, prof.slo_s)
    config = ReplayConfig(start_s=start_s, duration_s=duration_s, seed=seed, fidelity=fidelity,
                          max_replicas=default_max_replicas(view))
    return Replay(view, parse_policy_spec(spec), config).run()
