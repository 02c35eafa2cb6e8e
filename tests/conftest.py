"""Shared fixtures: where the recorded traces are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Shared fixtures of real components: Prometheus (from the Debian package) and the project's
# own test Kubernetes API server (tests/kubeserver).
pytest_plugins = ["tests.prom_fixtures", "tests.kubeserver_fixtures"]


def traces_dir() -> Path:
    """$AUTOSCALER_TRACES_DIR, default ../shared/traces beside the project."""
    return Path(os.environ.get("AUTOSCALER_TRACES_DIR", PROJECT_ROOT.parent / "shared" / "traces"))


@pytest.fixture(scope="session")
def traces() -> Path:
    path = traces_dir()
    if not (path / "worldcup98" / "series.csv").is_file():
        pytest.fail(
            f"recorded traces not found at {path}: set AUTOSCALER_TRACES_DIR to the shared "
            "traces directory (CI has it at ../shared/traces)"
        )
    return path
