"""`make bench`: run every benchmarks/bench_*.py as `python -m benchmarks.bench_x`, print a
summary table, exit non-zero when any module missed a target (its exit code was not 0).

Each module runs in its own process so that one crash, sys.exit or numba state cannot affect
the others; its output streams through as it runs. `python -m benchmarks.run_all NAME...` runs
only the named modules (e.g. `simulator quality`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import machine_line, print_table  # noqa: E402


def modules(only: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in only}
        unknown = wanted - set(names)
        if unknown:
            sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))} "
                     f"(have: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    return names


def main(argv: list[str] | None = None) -> int:
    names = modules(sys.argv[1:] if argv is None else argv)
    print(machine_line())
    rows, failed = [], 0
    for name in names:
        print(f"\n===== benchmarks.{name} =====", flush=True)
        begin = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent)
        elapsed = time.perf_counter() - begin
        failed += rc != 0
        rows.append([name, f"{elapsed:.1f} s",
                     "targets met" if rc == 0 else f"MISSED (exit {rc})"])
    print("\n===== summary =====")
    print(machine_line())
    print_table(["benchmark", "wall", "result"], rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
