"""Runtime: parity with Keras on both backends, decoding modes, threads, bad input."""
from __future__ import annotations

import itertools
import json
import os
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
# Every runtime test names the greedy path it runs: export picks one by timing,
# so "auto" would test whichever the machine's noise favoured.
PATHS = [(b, g) for b in BACKENDS for g in ("step", "fused")]


@pytest.fixture(scope="module", params=PATHS, ids=[f"{b}-{g}" for b, g in PATHS])
def model(request, tiny_artifact):
    backend, greedy = request.param
    loaded = runtime.load(tiny_artifact, backend=backend, greedy=greedy)
    assert loaded.fused == (greedy == "fused")
    return loaded


def test_greedy_equals_keras_reference(model, reference, heldout):
    assert model.translate(heldout) == reference.greedy(heldout)


def test_batch_equals_one_by_one(model, heldout):
    texts = heldout[:12]
    assert model.translate(texts, batch_size=5) == [model.translate([t])[0] for t in texts]


def test_stream_yields_keras_greedy_string(model, heldout, reference):
    texts = heldout[:5]
    assert ["".join(model.stream(t)) for t in texts] == reference.greedy(texts)


def _logprobs(model, text: str, out: str):
    """Per-step probabilities of ``out`` (then the end token, if it fits) given
    ``text``, by teacher forcing through the low-level API."""
    vocab = model.vocabulary
    ids = vocab.encode_target(out)[:vocab.max_output_length]  # the end token, if it fits
    state = model.encode([text])
    token, rows = vocab.start_id, []
    for tid in ids:
        probs, state, _ = model.step([token], state)
        rows.append((probs[0], tid))
        token = tid
    return rows


def test_sampling_is_seeded_and_varies_with_the_seed(model, heldout):
    texts = heldout[:6]
    a = model.translate(texts, temperature=1.5, top_k=5, seed=3)
    assert a == model.translate(texts, temperature=1.5, top_k=5, seed=3)
    assert all(len(s) <= model.vocabulary.max_output_length for s in a)
    # Hot sampling is close to uniform: other seeds give other outputs, not greedy's.
    hot = [tuple(model.translate(texts, temperature=5.0, seed=s)) for s in range(4)]
    assert len(set(hot)) == 4
    assert all(list(h) != model.translate(texts) for h in hot)


def test_sampling_draws_from_the_tempered_distribution(model, heldout):
    """One token drawn 3000 times at temperatures 0.5, 1 and 2: each token's share is
    within 5 standard errors of p ** (1 / T) renormalised (the definition), and a low
    temperature puts more mass on the most likely token, a high one less."""
    vocab = model.vocabulary
    text = heldout[0]
    probs = model.step([vocab.start_id], model.encode([text]))[0][0].astype(float)
    top = int(probs.argmax())
    shares = {}
    for temperature in (0.5, 1.0, 2.0):
        drawn = model.translate([text] * 3000, temperature=temperature, seed=11, max_length=1)
        ids = [vocab.target_index[d] if d else vocab.end_id for d in drawn]
        counts = np.bincount(ids, minlength=vocab.target_size) / len(ids)
        want = probs ** (1 / temperature)
        want /= want.sum()
        bound = 5 * np.sqrt(want * (1 - want) / len(ids)) + 1e-3
        assert (np.abs(counts - want) <= bound).all(), (temperature, counts, want)
        shares[temperature] = counts[top]
    assert shares[0.5] > shares[1.0] > shares[2.0]


@pytest.mark.parametrize("backend,greedy", PATHS, ids=[f"{b}-{g}" for b, g in PATHS])
def test_near_zero_temperature_sampling_is_greedy(learned, backend, greedy):
    """At T = 1e-3 a token 20 temperatures behind the best in log-probability is
    drawn with odds below e^-20 (2e-9): on inputs whose every greedy step leads by
    that much, sampling must give greedy's strings. On a model that has learned its
    task nearly every input is such; a briefly trained one has near-ties, where
    either token is a right draw."""
    temperature = 1e-3
    artifact, pairs = learned("plain")
    model = runtime.load(artifact, backend=backend, greedy=greedy)
    heldout = [a for a, _ in pairs[:60]]

    def decisive(text: str, out: str) -> bool:
        for probs, tid in _logprobs(model, text, out):
            logp = np.log(np.maximum(probs, 1e-30))
            if logp[tid] - np.delete(logp, tid).max() < 20 * temperature:
                return False
        return True

    texts = [t for t, g in zip(heldout, model.translate(heldout)) if decisive(t, g)]
    assert len(texts) >= 45
    for seed in range(3):
        assert (model.translate(texts, temperature=temperature, seed=seed)
                == model.translate(texts))


def test_top_1_sampling_is_greedy(model, heldout):
    texts = heldout[:6]
    assert model.translate(texts, temperature=1.0, top_k=1, seed=0) == model.translate(texts)


def test_top_k_never_samples_outside_the_k_most_likely(model, heldout):
    k = 3
    seen_rank = 0
    for seed, text in enumerate(heldout[:6]):
        out = model.translate([text], temperature=5.0, top_k=k, seed=seed)[0]
        for probs, tid in _logprobs(model, text, out):
            rank = int((probs > probs[tid]).sum())  # tokens strictly more likely
            assert rank < k, (text, out, rank)
            seen_rank = max(seen_rank, rank)
    assert seen_rank == k - 1  # hot enough that the k-th token was drawn too


def test_eight_threads_equal_serial(model, heldout):
    texts = heldout[:20]
    serial = [model.translate([t])[0] for t in texts]
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(model.translate, [t]) for t in texts * 4]
        parallel = [j.result()[0] for j in jobs]
    assert parallel == serial * 4


def test_low_level_encode_and_step(model, heldout):
    state = model.encode(heldout[:2])
    assert [s.name for s in model.config.state] == ["h0", "c0"]
    assert [a.shape for a in state] == [(2, s.units) for s in model.config.state]
    probs, state2, nxt = model.step([model.vocabulary.start_id] * 2, state)
    assert len(state2) == 2 and not any(np.array_equal(a, b) for a, b in zip(state, state2))
    assert probs.shape == (2, model.vocabulary.target_size)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert nxt.tolist() == probs.argmax(axis=1).tolist()


@pytest.mark.parametrize("change, message", [
    (lambda s: (s[0].astype(np.float64), s[1]), "'h0' must be a float32 array of shape "
                                               r"\[2, \d+\].*got float64"),
    (lambda s: s[:1], "takes the 2 state tensors that encode\\(\\) returns \\(h0, c0\\), got 1"),
    (lambda s: (s[0], s[1][:1]), "'c0' must be .* shape \\[2, "),
    (lambda s: (s[0][:, :-1], s[1]), "'h0' must be .* got float32 \\(2, "),
    (lambda s: (s[0].tolist(), s[1]), "'h0' must be .*got list"),
    (lambda s: None, "the tuple encode\\(\\) returns, got NoneType"),
    (lambda s: s[0], "the tuple encode\\(\\) returns, got ndarray"),
])
def test_a_step_on_a_state_unlike_encodes_names_the_tensor(model, heldout, change, message):
    """The engine's own error would name neither the tensor nor what it should be."""
    state = model.encode(heldout[:2])
    with pytest.raises(InputError, match=message):
        model.step([model.vocabulary.start_id] * 2, change(state))
    with pytest.raises(InputError, match="1-D array of token ids"):
        model.step([[model.vocabulary.start_id]] * 2, state)
    with pytest.raises(InputError, match="non-empty 1-D array"):
        model.step([], state)
    size = model.vocabulary.target_size
    with pytest.raises(InputError, match=rf"in \[0, {size}\), got 1..{size}"):
        model.step([1, size], state)


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
    (lambda m: m.translate(["1 mai 2000"], temperature=1, seed=-1), "seed"),
    (lambda m: m.translate(["1 mai 2000"], temperature=1, seed=1.5), "seed"),
    (lambda m: m.score(["1 mai 2000"], ["2000", "x"]), "same length"),
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
    with pytest.raises(ArtifactError, match="version 99.*re-export"):
        runtime.load(broken)
    (broken / "artifact.json").unlink()
    with pytest.raises(ArtifactError, match="metadata file missing"):
        runtime.load(broken)


TF_FREE_SCRIPT = """
import contextlib, io, json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'train', 'export',
                                  'benchmarks'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import runtime
from runtime.__main__ import main
art, texts = sys.argv[1], json.loads(sys.argv[2])
out = {}
for backend in ('onnx', 'tflite'):
    for greedy in ('step', 'fused'):
        model = runtime.load(art, backend=backend, greedy=greedy)
        out[backend + '-' + greedy] = model.translate(texts)
    out[backend + '-beam'] = model.translate(texts, beam_size=3)
    out[backend + '-sample'] = model.translate(texts, temperature=1.2, top_k=4, seed=7)
    out[backend + '-stream'] = [''.join(model.stream(t)) for t in texts]
    cli = io.StringIO()
    with contextlib.redirect_stdout(cli):
        assert main([art, '--backend', backend, '--beam', '2', *texts]) == 0
    out[backend + '-cli-beam2'] = cli.getvalue().splitlines()
loaded = sorted({m.split('.')[0] for m in sys.modules} &
                {'tensorflow', 'keras', 'tf2onnx', 'train', 'export', 'benchmarks'})
print(json.dumps({'outputs': out, 'forbidden_loaded': loaded}))
"""


def test_runtime_never_imports_tensorflow(tiny_artifact, heldout):
    """With tensorflow, keras and the other packages made unimportable, every mode
    of the runtime (greedy step and fused, beam, sampling, stream, the CLI) still
    gives the answers it gives in a full environment."""
    texts = heldout[:3]
    done = subprocess.run([sys.executable, "-c", TF_FREE_SCRIPT, str(tiny_artifact),
                           json.dumps(texts)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["forbidden_loaded"] == []
    got = result["outputs"]
    for backend in BACKENDS:
        step = runtime.load(tiny_artifact, backend=backend, greedy="step")
        assert got[f"{backend}-step"] == got[f"{backend}-fused"] == step.translate(texts)
        assert got[f"{backend}-stream"] == step.translate(texts)
        assert got[f"{backend}-beam"] == step.translate(texts, beam_size=3)
        assert got[f"{backend}-cli-beam2"] == step.translate(texts, beam_size=2)
        assert got[f"{backend}-sample"] == step.translate(texts, temperature=1.2, top_k=4,
                                                          seed=7)


def test_runtime_extra_alone_in_a_fresh_venv_decodes(tiny_artifact, heldout, tmp_path):
    """``pip install ".[runtime]"`` into an empty venv brings numpy and onnxruntime,
    nothing of TensorFlow, and decodes as the full environment does."""
    import venv

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", ".cache"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    # Without PYTHONPATH (the mutation runner sets it to its tree): the installed
    # package must be the one imported.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([py, "-m", "pip", "install", "--quiet", f"{src}[runtime]"],
                          capture_output=True, text=True, timeout=600, env=clean)
    assert done.returncode == 0, done.stderr[-3000:]
    code = ("import json, sys, importlib.util as u; import runtime; "
            "m = runtime.load(sys.argv[1], greedy='step'); "
            "print(json.dumps({'out': m.translate(json.loads(sys.argv[2])), "
            "'file': runtime.__file__, "
            "'absent': [p for p in ('tensorflow', 'keras', 'ai_edge_litert', 'tf2onnx') "
            "if u.find_spec(p) is None]}))")
    texts = heldout[:5]
    done = subprocess.run([py, "-c", code, str(tiny_artifact), json.dumps(texts)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert str(env_dir) in result["file"]  # the installed package, not the checkout
    assert result["absent"] == ["tensorflow", "keras", "ai_edge_litert", "tf2onnx"]
    assert result["out"] == runtime.load(tiny_artifact, greedy="step").translate(texts)


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


def test_beam_search_matches_exhaustive_search_for_each_length_penalty(tmp_path):
    """On a tiny vocabulary and length, a beam wide enough to keep everything finds
    the same best sequence as scoring every possible output with
    sum(log p) / length ** length_penalty (length counts the end token)."""
    from test_export import _keras_io_model

    from export.pipeline import export_artifact

    vocab = _keras_io_model(tmp_path, 6, "abc ", "\t\nxy", 4, 3, seed=5)
    export_artifact(tmp_path / "s2s_model.keras", vocab, tmp_path / "art", formats=("onnx",),
                    texts=["a", "bc", "cab"], fused=False, log=lambda *a, **k: None)
    model = runtime.load(tmp_path / "art")
    V, L, end = vocab.target_size, vocab.max_output_length, vocab.end_id
    candidates = []
    for n in range(1, L + 1):
        for seq in itertools.product(range(V), repeat=n):
            ends = [i for i, t in enumerate(seq) if t == end]
            if (ends == [n - 1]) or (not ends and n == L):
                candidates.append(seq)

    def logprob(text, seq):
        state = model.encode([text])
        token, total = vocab.start_id, 0.0
        for tid in seq:
            probs, state, _ = model.step([token], state)
            total += float(np.log(max(probs[0, tid], 1e-30)))
            token = tid
        return total

    winners = {}
    for text in ("a", "bc", "cab", "c"):
        totals = {seq: logprob(text, seq) for seq in candidates}
        for penalty in (0.0, 1.0, 2.0):
            best = max(candidates, key=lambda s: totals[s] / len(s) ** penalty)
            want = vocab.decode_target(list(best) + [end])
            got = model.translate([text], beam_size=V ** L, length_penalty=penalty)
            assert got == [want], (text, penalty)
            winners.setdefault(text, set()).add(best)
    # The penalties change the answer somewhere, so ignoring them would be caught.
    assert any(len(w) > 1 for w in winners.values())


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


@pytest.mark.parametrize("backend, greedy", PATHS)
def test_version_1_artifacts_still_load_and_decode_as_keras(backend, greedy):
    """An artifact written before the decoder state became data (version 1: one LSTM,
    state "h" and "c") loads with that state and gives the Keras answers recorded
    when it was made."""
    art = ROOT / "tests" / "data" / "artifact-v1"
    want = json.loads((art / "keras.json").read_text(encoding="utf-8"))
    model = runtime.load(art, backend=backend, greedy=greedy)
    assert [(s.name, s.units) for s in model.config.state] == [("h", 8), ("c", 8)]
    texts = want["texts"]
    assert model.translate(texts) == want["greedy"]
    state = model.encode(texts)
    np.testing.assert_allclose(state[0], want["h"], atol=1e-5)
    np.testing.assert_allclose(state[1], want["c"], atol=1e-5)
    probs, _, _ = model.step([model.vocabulary.start_id] * len(texts), state)
    np.testing.assert_allclose(probs, want["first_step_probs"], atol=1e-5)


def test_commands_drop_native_noise_and_pass_everything_else(tiny_artifact, heldout):
    """The CLIs filter known start-up noise of the native libraries from stderr;
    real warnings, errors and tracebacks still get through, in order."""
    done = run_module("runtime", str(tiny_artifact), "--backend", "tflite", heldout[0])
    assert done.returncode == 0 and "XNNPACK" not in done.stderr
    done = run_module("runtime", str(tiny_artifact), "--backend", "tflite", "€")
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    script = ("from runtime.console import quiet_native_noise\n"
              "import os\nquiet_native_noise()\n"
              "os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on.\\n"
              "a real warning\\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
              "raise RuntimeError('boom')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "a real warning" and lines[-1] == "RuntimeError: boom"
    assert "oneDNN" not in done.stderr and "XNNPACK" not in done.stderr
    shown = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env={**os.environ, "SEQ2SEQ_NATIVE_LOGS": "1"})
    assert "oneDNN" in shown.stderr
