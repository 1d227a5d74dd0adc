"""The packages' layering, read from the source: imports run one way,
runtime <- family <- {train, export} <- benchmarks, so the runtime an app ships
never pulls in Keras or the tools above it, and export never imports training."""
from __future__ import annotations

import ast

import pytest

from conftest import ROOT

PROJECT = ("runtime", "family", "train", "export", "benchmarks", "heatmap", "checks")
# What each package may import of the project's packages (itself always).
ALLOWED = {
    "runtime": set(),
    "family": {"runtime"},
    "train": {"runtime", "family"},
    "export": {"runtime", "family"},
    "heatmap": {"runtime"},
    "checks": {"runtime"},
    "benchmarks": {"runtime", "family", "train", "export"},
}
# Third-party packages the runtime (numpy plus one backend) must never import.
NOT_IN_RUNTIME = {"tensorflow", "keras", "tf2onnx", "onnx", "tf_keras"}


def _imports(path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the code
    (imports inside functions count: they run too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", list(ALLOWED))
def test_imports_run_one_way(package):
    wrong = {}
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    for path in files:
        bad = (_imports(path) & set(PROJECT)) - ALLOWED[package] - {package}
        if package == "runtime":
            bad |= _imports(path) & NOT_IN_RUNTIME
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"imports against the layering: {wrong}"


def test_the_checker_sees_function_level_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from train.data import read_pairs\n    import keras.layers\n")
    assert _imports(probe) == {"train", "keras"}
