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


COMMANDS = ("train", "export", "export.keras_io_vocab", "runtime", "runtime.corpus", "heatmap",
            "benchmarks", "benchmarks.variants", "benchmarks.synthetic", "benchmarks.corpus",
            "benchmarks.quality", "benchmarks.training", "benchmarks.prefix", "benchmarks.cached",
            "benchmarks.scaling",
            "benchmarks.transformer_artifact")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_reports_the_toolkit_version(command):
    from conftest import run_module

    import runtime

    done = run_module(command, "--version", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"python -m {command} (seq2seq-edge {runtime.__version__})"


def test_runtime_and_corpus_commands_share_their_decode_options():
    """Declared once (runtime.cli), so both commands take the same flags."""
    from runtime.__main__ import parser as runtime_parser
    from runtime.corpus.__main__ import parser as corpus_parser

    def flags(p):
        return {s for a in p._actions for s in a.option_strings}

    shared = {"--backend", "--precision", "--threads", "--beam", "--length-penalty",
              "--max-length", "--skip-unknown", "--unk", "--truncate", "--version"}
    assert shared <= flags(runtime_parser()) and shared <= flags(corpus_parser())


def _undocumented(package: str) -> list[str]:
    """Public module-level functions and classes, and public methods of public
    classes, of ``package`` that have no docstring."""
    missing = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name[0] == "_":
                continue
            if ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(ROOT)}:{node.name}")
            for member in node.body if isinstance(node, ast.ClassDef) else ():
                if (isinstance(member, ast.FunctionDef) and member.name[0] != "_"
                        and ast.get_docstring(member) is None):
                    missing.append(f"{path.relative_to(ROOT)}:{node.name}.{member.name}")
    return missing


@pytest.mark.parametrize("package", ["runtime", "export"])
def test_every_public_name_has_a_docstring(package):
    assert _undocumented(package) == []
