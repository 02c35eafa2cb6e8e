"""Stand-in what-if runners for the API tests: module-level (the spawned workers unpickle
them by name) and light to import (a worker imports this module, not the test's)."""

from __future__ import annotations

import time


def echo_runner(spec) -> dict:
    """Hands back what the API asked for."""
    return {"query": spec.query, "window_s": spec.window_s, "until_s": spec.until_s,
            "current": spec.current, "candidate": spec.candidate, "profile": spec.profile}


def slow_runner(spec) -> dict:
    time.sleep(2.0)
    return {"slept": True}


def failing_runner(spec) -> dict:
    raise ValueError("window: no samples in the window")
