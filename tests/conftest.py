"""Shared fixtures: real tiny models, trained and exported once per test session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--samples", "800", "--epochs", "3", "--latent-dim", "32", "--batch-size", "32",
              "--test-size", "40", "--seed", "1", "--quiet"]


def run_module(module: str, *args: str, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m module`` the way a user would, from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=kw.pop("cwd", ROOT),
                          capture_output=True, text=True, timeout=timeout, env=env, **kw)


def signal_part_way(module_args: list[str], watch: Path, pattern: str, sig: int,
                    timeout: float = 240) -> subprocess.Popen:
    """Start ``python -m ...``, wait until ``watch.glob(pattern)`` finds a file (the
    run is part way), then send ``sig``. Returns the process, still to be waited on."""
    proc = subprocess.Popen([sys.executable, "-m", *module_args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not list(watch.glob(pattern)):
        time.sleep(0.1)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    proc.send_signal(sig)
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny model trained on the built-in data through train's own main()."""
    from train.__main__ import main

    out = tmp_path_factory.mktemp("run") / "tiny"
    assert main([*TINY_TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tiny_run) -> Path:
    """The tiny model exported to ONNX and TFLite, parity proven."""
    from export.pipeline import check_texts, export_artifact
    from runtime.vocab import Vocabulary

    vocab = Vocabulary.load(tiny_run / "vocab.json")
    texts = check_texts(vocab, tiny_run / "heldout.tsv", 40)
    out = tiny_run / "artifact"
    export_artifact(tiny_run / "model.keras", vocab, out, texts=texts, log=lambda *a, **k: None)
    return out


@pytest.fixture(scope="session")
def heldout(tiny_run) -> list[str]:
    lines = (tiny_run / "heldout.tsv").read_text(encoding="utf-8").splitlines()
    return [ln.split("\t")[0] for ln in lines]


@pytest.fixture(scope="session")
def reference(tiny_run):
    import keras

    from runtime.vocab import Vocabulary
    from family.reference import ReferenceDecoder

    model = keras.models.load_model(tiny_run / "model.keras")
    return ReferenceDecoder(model, Vocabulary.load(tiny_run / "vocab.json"))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def quantized_artifact(tiny_run, tmp_path_factory) -> Path:
    """The tiny model exported with its int8, fp16 and full-integer variants as well."""
    from export.pipeline import check_texts, export_artifact
    from runtime.vocab import Vocabulary

    vocab = Vocabulary.load(tiny_run / "vocab.json")
    texts = check_texts(vocab, tiny_run / "heldout.tsv", 40)
    out = tmp_path_factory.mktemp("quantized") / "artifact"
    export_artifact(tiny_run / "model.keras", vocab, out, quantize=("int8", "fp16", "int8-full"),
                    texts=texts, log=lambda *a, **k: None)
    return out


# Models that have learned their task (greedy exact match about 99% on the built-in
# dates, in about 20 s each): beam search's faults show only on such models.
LEARNED_TRAIN = ["--samples", "6000", "--epochs", "10", "--latent-dim", "64",
                 "--embedding-dim", "16", "--mask", "--optimizer", "adam",
                 "--learning-rate", "0.005", "--test-size", "300", "--seed", "3", "--quiet"]
LEARNED_KINDS = {"plain": [], "attention": ["--attention", "bahdanau", "--latent-dim", "48"]}


@pytest.fixture(scope="session")
def learned(tmp_path_factory):
    """``learned(kind)``: (artifact directory, held-out (input, truth) pairs) of a
    trained and exported model, "plain" or "attention" (Bahdanau), made once."""
    made: dict[str, tuple[Path, list[tuple[str, str]]]] = {}

    def get(kind: str):
        if kind not in made:
            from export.pipeline import check_texts, export_artifact
            from runtime.vocab import Vocabulary
            from train.__main__ import main

            run = tmp_path_factory.mktemp("learned") / kind
            assert main([*LEARNED_TRAIN, *LEARNED_KINDS[kind], "--out", str(run)]) == 0
            vocab = Vocabulary.load(run / "vocab.json")
            export_artifact(run / "model.keras", vocab, run / "artifact",
                            texts=check_texts(vocab, run / "heldout.tsv", 300),
                            log=lambda *a, **k: None)
            lines = (run / "heldout.tsv").read_text(encoding="utf-8").splitlines()
            made[kind] = run / "artifact", [tuple(ln.split("\t")[:2]) for ln in lines]
        return made[kind]

    return get


# The model family, each member trained briefly by ``python -m train`` and exported
# once per session (parity does not depend on what the weights learned). Shared by
# the family's Keras tests and the JavaScript runtime's golden cases.
FAMILY = {
    "gru": ["--cell", "gru"],
    "embedding-mask-right-padding": ["--embedding-dim", "8", "--mask", "--padding", "right"],
    "bidirectional-gru-embedding": ["--cell", "gru", "--bidirectional", "--embedding-dim", "8"],
    "stacked-bidirectional-lstm-mask": ["--layers", "2", "--bidirectional",
                                        "--embedding-dim", "8", "--mask"],
    "stacked-gru": ["--cell", "gru", "--layers", "2"],
    "word-inputs": ["--unit", "word", "--embedding-dim", "8", "--mask"],
    "deep-encoder-last-state": ["--layers", "2", "--handoff", "last"],
    "gru-reset-before-logits": ["--cell", "gru", "--no-reset-after", "--logits"],
    # Digits in, number words out: word-level outputs, joined with spaces.
    "word-outputs": ["--data", "@digits-to-words", "--target-unit", "word",
                     "--embedding-dim", "8", "--mask"],
}
# Attention: Luong over a one-hot unmasked encoder (attends to padding too); Bahdanau
# over a masked bidirectional Embedding encoder (padding gets exactly zero weight).
ATTENTION_SMALL = ["--builtin", "numbers", "--samples", "700", "--epochs", "2",
                   "--latent-dim", "24", "--batch-size", "32", "--test-size", "30", "--seed",
                   "2", "--quiet"]
ATTENTION = {"luong": ["--attention", "luong"],
             "bahdanau": ["--attention", "bahdanau", "--embedding-dim", "8", "--mask",
                          "--bidirectional", "--padding", "right"]}


def _made(tmp_path_factory, name: str, train_args: list[str], checks: int):
    """Train with ``train_args`` and export: (run directory ``.../NAME``, export
    result, check texts)."""
    from export.pipeline import check_texts, export_artifact
    from runtime.vocab import Vocabulary
    from train.__main__ import main

    out = tmp_path_factory.mktemp(name) / name
    assert main([*train_args, "--out", str(out)]) == 0
    vocab = Vocabulary.load(out / "vocab.json")
    texts = check_texts(vocab, out / "heldout.tsv", checks)
    result = export_artifact(out / "model.keras", vocab, out / "artifact", texts=texts,
                             log=lambda *a, **k: None)
    return out, result, texts


def _digits_to_words(tmp_path_factory) -> Path:
    """A pair file of the built-in number data turned around: "4012" -> "four
    thousand twelve"."""
    from train.data import number_pairs

    path = tmp_path_factory.getbasetemp() / "digits-to-words.tsv"
    if not path.exists():
        path.write_text("".join(f"{b}\t{a}\n" for a, b in number_pairs(600, seed=4)),
                        encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def family(tmp_path_factory):
    """``family(name)``: (run directory, export result, check texts) of a FAMILY member."""
    made: dict = {}

    def get(name: str):
        if name not in made:
            args = [str(_digits_to_words(tmp_path_factory)) if a == "@digits-to-words" else a
                    for a in FAMILY[name]]
            made[name] = _made(tmp_path_factory, name, [
                *TINY_TRAIN, "--samples", "400", "--epochs", "1", *args], 40)
        return made[name]

    return get


@pytest.fixture(scope="session")
def attention(tmp_path_factory):
    """``attention(kind)``: (run directory, export result, check texts) of an
    attention model ("luong" or "bahdanau") trained on the number words."""
    made: dict = {}

    def get(kind: str):
        if kind not in made:
            made[kind] = _made(tmp_path_factory, kind, [*ATTENTION_SMALL, *ATTENTION[kind]], 30)
        return made[kind]

    return get


NODE_MODULES = ROOT / "web" / "node_modules"


def need_node() -> None:
    import shutil

    if shutil.which("node") is None:
        pytest.skip("Node.js not found (the JavaScript runtime's tests need it)")
    if not (NODE_MODULES / "onnxruntime-node").is_dir():
        pytest.skip("web/node_modules missing: run `make web-setup` (npm install --ignore-scripts)")


def replay_in_node(artifact: Path, texts: list[str], cases: Path) -> dict:
    """Write the Python runtime's golden cases for ``artifact`` to ``cases`` and replay
    them in Node (web/golden.mjs); fail on any difference. Returns Node's summary."""
    from checks.golden import write_cases

    need_node()
    write_cases(artifact, texts, cases)
    done = subprocess.run(["node", str(ROOT / "web" / "golden.mjs"), str(artifact), str(cases)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["failures"] == 0 and summary["strings"] > 0, summary
    return summary
