"""Child processes of the tests (this module has no tests): stopped the way Kubernetes stops a
pod, SIGTERM then a bounded wait, and never left running when a test fails."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def reaped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`proc` for the block; killed (and waited for) if it still runs when the block ends."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


def stop(proc: subprocess.Popen, timeout_s: float) -> str:
    """SIGTERM, then the process' output once it has exited (a hang past timeout_s raises
    TimeoutExpired, and `reaped` kills it)."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout_s)
    return out
