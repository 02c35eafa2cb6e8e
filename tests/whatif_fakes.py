"""Fake what-if runners for tests/test_whatif.py. They run in spawned workers, which import
this module to unpickle them: it imports nothing heavy, so a worker starts quickly."""

from __future__ import annotations

import os
import time
from pathlib import Path


def gated(path: str) -> dict:
    """Wait for `path` to exist (the test opens the gate), then report the worker's pid."""
    deadline = time.monotonic() + 60
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.02)
    return {"gate": path, "pid": os.getpid()}


def echo(spec: object) -> dict:
    return {"spec": spec}


def die(spec: object) -> dict:
    """The worker vanishes mid-job (as if OOM-killed)."""
    os._exit(3)
