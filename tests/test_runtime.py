"""Runtime: parity with Keras on both backends, decoding modes, threads, bad input."""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from conftest import ROOT, run_module
from runtime.errors import ArtifactError, BackendError, InputError

BACKENDS = ("onnx", "tflite")


@pytest.fixture(scope="module", params=BACKENDS)
def model(request, tiny_artifact):
    return runtime.load(tiny_artifact, backend=request.param)


def test_greedy_equals_keras_reference(model, reference, heldout):
    assert model.translate(heldout) == reference.greedy(heldout)


def test_batch_equals_one_by_one(model, heldout):
    texts = heldout[:12]
    assert model.translate(texts, batch_size=5) == [model.translate([t])[0] for t in texts]


def test_stream_yields_the_greedy_string(model, heldout):
    for text in heldout[:5]:
        assert "".join(model.stream(text)) == model.translate([text])[0]


def test_beam_one_is_greedy_and_beam_is_never_worse(model, heldout):
    texts = heldout[:8]
    assert model.translate(texts, beam_size=1) == model.translate(texts)
    vocab = model.vocabulary

    def logprob(text, out):
        h, c = model.encode([text])
        token, total = vocab.start_id, 0.0
        for tid in vocab.encode_target(out):
            probs, h, c, _ = model.step([token], h, c)
            total += float(np.log(probs[0, tid]))
            token = tid
        return total / (len(out) + 1)

    for text, greedy, beam in zip(texts, model.translate(texts),
                                  model.translate(texts, beam_size=4)):
        assert logprob(text, beam) >= logprob(text, greedy) - 1e-6


def test_sampling_is_seeded(model, heldout):
    texts = heldout[:6]
    a = model.translate(texts, temperature=1.5, top_k=5, seed=3)
    assert a == model.translate(texts, temperature=1.5, top_k=5, seed=3)
    assert all(len(s) <= model.vocabulary.max_output_length for s in a)
    # Top-1 sampling is greedy decoding.
    assert model.translate(texts, temperature=1.0, top_k=1, seed=0) == model.translate(texts)


def test_eight_threads_equal_serial(model, heldout):
    texts = heldout[:20]
    serial = [model.translate([t])[0] for t in texts]
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(model.translate, [t]) for t in texts * 4]
        parallel = [j.result()[0] for j in jobs]
    assert parallel == serial * 4


def test_low_level_encode_and_step(model, heldout):
    h, c = model.encode(heldout[:2])
    assert h.shape == c.shape == (2, model.config.latent_dim)
    probs, h2, c2, nxt = model.step([model.vocabulary.start_id] * 2, h, c)
    assert probs.shape == (2, model.vocabulary.target_size)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert nxt.tolist() == probs.argmax(axis=1).tolist()


@pytest.mark.parametrize("call, message", [
    (lambda m: m.translate(["€€"]), "outside the vocabulary: '€'"),
    (lambda m: m.translate([""]), "input 0 is empty"),
    (lambda m: m.translate(["1 mai 2000" * 20]), "at most"),
    (lambda m: m.translate([3]), "input 0 is int"),
    (lambda m: m.translate("1 mai 2000"), "list of strings"),
    (lambda m: m.translate(["1 mai 2000"], beam_size=0), "beam_size"),
    (lambda m: m.translate(["1 mai 2000"], beam_size=10_000), "beam_size"),
    (lambda m: m.translate(["1 mai 2000"], max_length=0), "max_length"),
    (lambda m: m.translate(["1 mai 2000"], max_length=10_000), "max_length"),
    (lambda m: m.translate(["1 mai 2000"], temperature=-1), "temperature"),
    (lambda m: m.translate(["1 mai 2000"], beam_size=2, temperature=1), "not both"),
    (lambda m: list(m.stream(["x"])), "one string"),
])
def test_bad_input_raises_input_error(model, call, message):
    with pytest.raises(InputError, match=message):
        call(model)


def test_input_policies(model, heldout):
    text = heldout[0]
    assert model.translate(["€" + text + "€"], unknown="skip") == model.translate([text])
    long = text + " " * 200
    out = model.translate([long], too_long="truncate")
    assert len(out) == 1 and len(out[0]) <= model.vocabulary.max_output_length
    assert model.translate([]) == []
    assert all(len(s) <= 3 for s in model.translate(heldout[:5], max_length=3))


def test_cuda_on_a_cpu_machine_is_a_clear_error(tiny_artifact):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendError, match="cuda"):
        runtime.load(tiny_artifact, device="cuda")
    with pytest.raises(BackendError, match="CPU only"):
        runtime.load(tiny_artifact, backend="tflite", device="cuda")


def test_load_errors(tiny_artifact, tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        runtime.load(tmp_path / "missing")
    with pytest.raises(BackendError, match="unknown backend"):
        runtime.load(tiny_artifact, backend="torch")
    with pytest.raises(ArtifactError, match="no onnx int8"):
        runtime.load(tiny_artifact, precision="int8")
    broken = tmp_path / "art"
    shutil.copytree(tiny_artifact, broken)
    data = bytearray((broken / "decoder_step.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "decoder_step.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="decoder_step.onnx: sha256"):
        runtime.load(broken)
    (broken / "encoder.tflite").unlink()
    with pytest.raises(ArtifactError, match="encoder.tflite: model file missing"):
        runtime.load(broken, backend="tflite")
    meta = json.loads((broken / "artifact.json").read_text())
    meta["version"] = 99
    (broken / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="version 99"):
        runtime.load(broken)
    (broken / "artifact.json").unlink()
    with pytest.raises(ArtifactError, match="metadata file missing"):
        runtime.load(broken)


def test_runtime_never_imports_tensorflow(tiny_artifact, heldout):
    """With tensorflow and keras made unimportable, the runtime still works."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'train', 'export'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import runtime
for backend in ('onnx', 'tflite'):
    model = runtime.load({str(tiny_artifact)!r}, backend=backend)
    print(model.translate({heldout[:3]!r}))
assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("[") == 2


def test_cli(tiny_artifact, heldout):
    done = run_module("runtime", str(tiny_artifact), *heldout[:2], "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["input"] for r in rows] == heldout[:2]
    expected = runtime.load(tiny_artifact).translate(heldout[:3])
    done = run_module("runtime", str(tiny_artifact), "--backend", "tflite", "--beam", "1",
                      "--greedy", "fused", input="\n".join(heldout[:3]) + "\n")
    assert done.stdout.splitlines() == expected
    # Texts may also follow options.
    done = run_module("runtime", str(tiny_artifact), "--backend", "tflite", heldout[0])
    assert done.returncode == 0 and done.stdout.splitlines() == expected[:1]
    done = run_module("runtime", str(tiny_artifact), "abc€")
    assert done.returncode == 2 and "outside the vocabulary" in done.stderr
    assert "Traceback" not in done.stderr


def test_beam_search_matches_exhaustive_search(tmp_path):
    """On a tiny vocabulary and length, a beam wide enough to keep everything finds
    the same best sequence as scoring every possible output."""
    from test_export import _keras_io_model

    from export.pipeline import export_artifact

    vocab = _keras_io_model(tmp_path, 6, "abc ", "\t\nxy", 4, 3, seed=5)
    export_artifact(tmp_path / "s2s_model.keras", vocab, tmp_path / "art", formats=("onnx",),
                    texts=["a", "bc", "cab"], log=lambda *a, **k: None)
    model = runtime.load(tmp_path / "art")
    V, L, end = vocab.target_size, vocab.max_output_length, vocab.end_id

    def score(text, seq):
        h, c = model.encode([text])
        token, total = vocab.start_id, 0.0
        for tid in seq:
            probs, h, c, _ = model.step([token], h, c)
            total += float(np.log(max(probs[0, tid], 1e-30)))
            token = tid
        return total / len(seq)

    for text in ("a", "bc", "cab", "c"):
        candidates = []
        for n in range(1, L + 1):
            for seq in itertools.product(range(V), repeat=n):
                ends = [i for i, t in enumerate(seq) if t == end]
                if (ends == [n - 1]) or (not ends and n == L):
                    candidates.append(seq)
        best = max(candidates, key=lambda s: score(text, s))
        want = vocab.decode_target(list(best) + [end])
        assert model.translate([text], beam_size=V ** L) == [want]


@pytest.mark.parametrize("backend, blocked, extra", [("onnx", "onnxruntime", "[runtime]"),
                                                      ("tflite", "ai_edge_litert", "[litert]")])
def test_missing_backend_package_is_a_clear_error(tiny_artifact, backend, blocked, extra):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {blocked!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import runtime
try:
    runtime.load({str(tiny_artifact)!r}, backend={backend!r})
except runtime.BackendError as e:
    print('BackendError:', e)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("BackendError:") and extra in done.stdout
