"""The layering rule of DESIGN.md, enforced on the source itself.

forecasting imports none of the other packages; policies imports only forecasting; the
simulator never imports the service; the pure core reads no clock, network or global random
state.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("autoscaler", "forecasting", "policies", "simulator")

FORBIDDEN_PACKAGES = {
    "forecasting": {"policies", "simulator", "autoscaler"},
    "policies": {"simulator", "autoscaler"},
    "simulator": {"autoscaler"},
}
# Modules and attributes that read the wall clock, the network, the disk or global randomness.
IMPURE_MODULES = {"time", "socket", "requests", "httpx", "urllib", "http", "random", "os",
                  "pathlib", "subprocess", "kubernetes", "prometheus_api_client", "shutil"}
IMPURE_CALLS = {"open", "datetime.now", "datetime.utcnow", "date.today",
                "np.random.seed", "np.random.rand", "np.random.randn", "np.random.random",
                "np.random.normal", "np.random.poisson", "np.random.uniform",
                "np.random.choice", "np.random.randint", "np.random.default_rng"}


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _calls(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            out.add(ast.unparse(node.func))
    return out


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN_PACKAGES))
def test_package_imports_only_lower_layers(package: str) -> None:
    offenders = []
    for path in _modules(package):
        for name in _imports(ast.parse(path.read_text())):
            if name.split(".")[0] in FORBIDDEN_PACKAGES[package]:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


@pytest.mark.parametrize("package", ["forecasting", "policies"])
def test_core_is_pure(package: str) -> None:
    offenders = []
    for path in _modules(package):
        tree = ast.parse(path.read_text())
        for name in _imports(tree):
            if name.split(".")[0] in IMPURE_MODULES:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
        for call in _calls(tree) & IMPURE_CALLS:
            offenders.append(f"{path.relative_to(ROOT)} calls {call}")
    assert offenders == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    """The check itself can fail: an impure snippet is flagged."""
    tree = ast.parse("import time\nfrom simulator import x\nimport numpy as np\nnp.random.seed(1)\n")
    assert "time" in _imports(tree) and "simulator" in _imports(tree)
    assert "np.random.seed" in _calls(tree)
