"""Full-integer TFLite (``--quantize int8-full``): calibrated on held-out inputs the
checks do not judge, integer kernels only (read back by the LiteRT interpreter
itself, not by the op guard under test), and decoding within the gate on models
that have learned their task."""
from __future__ import annotations

import pytest

import runtime
from conftest import read_json, run_module
from runtime.errors import InputError

CHECKS, CALIBRATION = 120, 100


def _distinct_inputs(path) -> list[str]:
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        seen.setdefault(line.split("\t")[0], None)
    return list(seen)


def _checked(run) -> tuple[dict[str, set[str]], list[str]]:
    """The held-out references by input, and the first ``CHECKS`` distinct inputs
    (those export checked; the calibration took the ones after them)."""
    pairs: dict[str, set[str]] = {}
    for line in (run / "heldout.tsv").read_text(encoding="utf-8").splitlines():
        text, truth = line.split("\t")[:2]
        pairs.setdefault(text, set()).add(truth)
    return pairs, list(pairs)[:CHECKS]


def _interpreter_float_ops(path) -> list[str]:
    """Ops of the file's main graph that compute on a float tensor, as the LiteRT
    interpreter (no delegates) reports them; QUANTIZE (or a CAST) may read a float
    graph input, DEQUANTIZE (or a CAST) write a float graph output or loop operand;
    a CAST of integers to a float mask may feed QUANTIZE ops only."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()
    graph_in = {d["index"] for d in it.get_input_details()}
    graph_out = {d["index"] for d in it.get_output_details()}
    loop_operands = {i for op in ops if op["op_name"] == "WHILE" for i in op["inputs"]}

    def is_float(i):
        return i in tensors and tensors[i]["dtype"].__name__.startswith("float")

    # int8-io: a CAST of the ids to a float mask that only a QUANTIZE reads.
    readers: dict[int, set] = {}
    for op in ops:
        for i in op["inputs"]:
            readers.setdefault(i, set()).add(op["op_name"])
    mask = {o for op in ops if op["op_name"] == "CAST"
            and not any(is_float(i) for i in op["inputs"])
            for o in op["outputs"] if is_float(o) and readers.get(o) == {"QUANTIZE"}}
    graph_in |= mask
    graph_out |= mask
    bad = []
    for op in ops:
        name, ins, outs = op["op_name"], list(op["inputs"]), list(op["outputs"])
        if name == "WHILE":
            continue
        if name in ("QUANTIZE", "CAST") and all(i in graph_in for i in ins if is_float(i)) \
                and not any(is_float(i) for i in outs):
            continue
        if name in ("DEQUANTIZE", "CAST") and all(i in graph_out | loop_operands
                                                  for i in outs if is_float(i)) \
                and not any(is_float(i) for i in ins):
            continue
        if any(is_float(i) for i in ins + outs if i >= 0):
            bad.append(name)
    return bad


@pytest.fixture(scope="module")
def integer(learned, tmp_path_factory):
    """``integer(kind)``: (artifact with fp32, int8-full and int8-io TFLite, its run
    directory)."""
    made = {}

    def get(kind):
        if kind not in made:
            run = learned(kind)[0].parent
            out = tmp_path_factory.mktemp("integer") / kind
            done = run_module("export", str(run / "model.keras"), "--out", str(out),
                              "--quantize", "int8-full,int8-io",
                              "--check-samples", str(CHECKS),
                              "--calibration-inputs", str(CALIBRATION), timeout=900)
            assert done.returncode == 0, done.stderr[-3000:]
            made[kind] = out, run
        return made[kind]

    return get


@pytest.mark.parametrize("kind", ["plain", "attention"])
def test_full_integer_graphs_are_integer_and_calibrated_apart_from_the_checks(integer, kind):
    from export.errors import OpGuardError
    from export.opguard import check_tflite

    art, run = integer(kind)
    meta = read_json(art / "artifact.json")
    inputs = _distinct_inputs(run / "heldout.tsv")
    want = min(CALIBRATION, len(inputs) - CHECKS)
    assert want > 0
    cal = meta["calibration"]
    assert cal["inputs"] == want
    assert cal["source"] == f"heldout.tsv: {want} inputs after the {CHECKS} checked ones"
    assert cal["step_calls"]["greedy"] > 0 and cal["step_calls"]["teacher_forced"] > 0
    files = {g["name"]: art / g["file"] for g in meta["graphs"]
             if g["precision"] == "int8-full"}
    assert sorted(files) == ["decoder_step", "encoder", "greedy"]
    for name, path in files.items():
        assert _interpreter_float_ops(path) == [], name
    # The op guard's integer mode refuses what is not full-integer.
    fp32_step = art / "decoder_step.tflite"
    assert _interpreter_float_ops(fp32_step)  # the reference reader sees float ops
    with pytest.raises(OpGuardError, match="not full-integer"):
        check_tflite(fp32_step, allow_while=False, integer=True)


@pytest.mark.parametrize("kind", ["plain", "attention"])
def test_full_integer_decodes_within_the_gate(integer, kind):
    """On held-out inputs the calibration did not see, the int8-full step loop agrees
    with fp32 (which equals Keras) on at least 97% and loses at most 2 points of
    exact match against the truth; on the masked Bahdanau model too (before its
    padding scores kept an int8-sized range, 4 of 120 agreed). The fused graph,
    whose loop hands its state over in float, may lose more; export measures it
    as this test does and flags it."""
    art, run = integer(kind)
    meta = read_json(art / "artifact.json")
    pairs, texts = _checked(run)
    assert meta["accuracy"]["pairs"] == len(texts)

    def hits(out):
        return sum(o in pairs[t] for o, t in zip(out, texts)) / len(texts)

    base = hits(runtime.load(art, backend="tflite", greedy="step").translate(texts))
    fp32 = runtime.load(art, backend="tflite", greedy="step").translate(texts)
    step = runtime.load(art, backend="tflite", precision="int8-full", greedy="step")
    out = step.translate(texts)
    assert sum(a == b for a, b in zip(out, fp32)) / len(texts) >= 0.97
    assert hits(out) >= base - 0.02, (hits(out), base)
    fused = runtime.load(art, backend="tflite", precision="int8-full", greedy="fused")
    got = hits(fused.translate(texts))
    recorded = meta["accuracy"]["exact_match"]
    assert recorded["tflite/int8-full fused"] == pytest.approx(got)
    assert recorded["tflite/int8-full"] == pytest.approx(hits(out))
    flagged = {c["variant"] for c in meta["parity"]["checks"]
               if c["what"].startswith("exact match vs truth") and not c["ok"]}
    assert ("tflite/int8-full fused" in flagged) == (got < base - 0.01)
    # Beam search runs on it too, and its answers are real outputs.
    beams = step.translate(texts[:20], beam_size=4)
    assert sum(b in pairs[t] for b, t in zip(beams, texts)) >= 0.8 * 20


def _io_details(path) -> dict:
    """The file's signature inputs and outputs as LiteRT reads them: name -> (dtype
    name, (scale, zero point))."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return {n: (d["dtype"].__name__, tuple(d["quantization"]))
            for details in (runner.get_input_details(), runner.get_output_details())
            for n, d in details.items()}


@pytest.mark.parametrize("kind", ["plain", "attention"])
def test_int8_io_files_take_and_give_int8_and_the_artifact_records_their_scales(integer,
                                                                                kind):
    """--quantize int8-io: encoder and step have no float input or output (token ids
    stay int32), no float op inside, and artifact.json's scales and zero points are
    the file's own, as LiteRT reads them; no fused graph (ids in and out: it would
    be int8-full's), and artifact.json says so."""
    art, _ = integer(kind)
    meta = read_json(art / "artifact.json")
    graphs = {g["name"]: g for g in meta["graphs"] if g["precision"] == "int8-io"}
    assert sorted(graphs) == ["decoder_step", "encoder"]
    assert "int8-full's" in meta["not_written"]["tflite/int8-io greedy"]
    for name, g in graphs.items():
        path = art / g["file"]
        assert _interpreter_float_ops(path) == [], name
        io = _io_details(path)
        assert {dtype for dtype, _ in io.values()} <= {"int8", "int32"}, io
        int8 = {n: q for n, (dtype, q) in io.items() if dtype == "int8"}
        assert "probs" in int8 or name == "encoder"
        recorded = {n: (q["scale"], q["zero_point"]) for n, q in g["int8_io"].items()}
        assert recorded.keys() == int8.keys()
        for n, (scale, zero) in int8.items():
            assert recorded[n] == (pytest.approx(scale, rel=1e-6), zero), n


@pytest.mark.parametrize("kind", ["plain", "attention"])
def test_int8_io_decodes_within_the_gate(integer, kind):
    """The runtime quantizes the state at the int8-io file's boundary and
    dequantizes what comes back: on held-out inputs the calibration did not see,
    its greedy agrees with fp32 (Keras's answers) on at least 97%, loses at most 2
    points of exact match against the truth, and beam search runs on it; the
    figure export recorded is the one measured here."""
    art, run = integer(kind)
    meta = read_json(art / "artifact.json")
    pairs, texts = _checked(run)

    def hits(out):
        return sum(o in pairs[t] for o, t in zip(out, texts)) / len(texts)

    fp32 = runtime.load(art, backend="tflite", greedy="step").translate(texts)
    model = runtime.load(art, backend="tflite", precision="int8-io")
    out = model.translate(texts)
    assert sum(a == b for a, b in zip(out, fp32)) / len(texts) >= 0.97
    assert hits(out) >= hits(fp32) - 0.02, (hits(out), hits(fp32))
    assert meta["accuracy"]["exact_match"]["tflite/int8-io"] == pytest.approx(hits(out))
    beams = model.translate(texts[:20], beam_size=4)
    assert sum(b in pairs[t] for b, t in zip(beams, texts)) >= 0.8 * 20


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory):
    """(artifact with fp32, int8-full and int16x8 TFLite, run directory) of a one-hot
    LSTM that has learned the built-in dates: TF's 16x8 quantizer does not convert
    an Embedding encoder (see the next test)."""
    from conftest import LEARNED_TRAIN
    from train.__main__ import main

    run = tmp_path_factory.mktemp("sixteen") / "onehot"
    args = [a for a in LEARNED_TRAIN if a not in ("--mask",)]
    at = args.index("--embedding-dim")
    del args[at:at + 2]
    assert main([*args, "--out", str(run)]) == 0
    out = run / "artifact"
    done = run_module("export", str(run / "model.keras"), "--out", str(out), "--formats",
                      "tflite", "--quantize", "int8-full,int16x8", "--check-samples",
                      str(CHECKS), "--calibration-inputs", str(CALIBRATION), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, run


def test_int16x8_refuses_an_embedding_encoder_clearly_and_writes_nothing(integer, tmp_path):
    art, run = integer("plain")
    out = tmp_path / "art"
    done = run_module("export", str(run / "model.keras"), "--out", str(out), "--formats",
                      "tflite", "--quantize", "int16x8", "--no-fused", timeout=900)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "int16x8 converts only where" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_int16x8_has_sixteen_bit_activations_and_only_its_argmax_in_float(sixteen):
    """--quantize int16x8: int16 activations (LiteRT lists them), int8 weights; the
    encoder has no float op, the step only the DEQUANTIZE and ARG_MAX of its
    next_token (TF has no 16x8 ARG_MAX), which the op guard's plain integer mode
    refuses; the fused graph is not written, and artifact.json says why."""
    from ai_edge_litert.interpreter import Interpreter

    from export.errors import OpGuardError
    from export.opguard import check_tflite

    art, _ = sixteen
    meta = read_json(art / "artifact.json")
    files = {g["name"]: art / g["file"] for g in meta["graphs"] if g["precision"] == "int16x8"}
    assert sorted(files) == ["decoder_step", "encoder"]
    assert "tflite/int16x8 greedy" in meta["not_written"]
    for name, path in files.items():
        it = Interpreter(model_path=str(path))
        dtypes = {t["dtype"].__name__ for t in it.get_tensor_details()}
        assert "int16" in dtypes, (name, dtypes)
    assert _interpreter_float_ops(files["encoder"]) == []
    assert sorted(set(_interpreter_float_ops(files["decoder_step"]))) == ["ARG_MAX",
                                                                          "DEQUANTIZE"]
    check_tflite(files["decoder_step"], allow_while=False, integer=True,
                 argmax_in_float=True)
    with pytest.raises(OpGuardError, match="ARG_MAX"):
        check_tflite(files["decoder_step"], allow_while=False, integer=True)


def test_int16x8_is_nearer_fp32_than_int8_full_and_decodes_within_the_gate(sixteen):
    """Sixteen-bit activations are the point: on held-out inputs the step's
    probabilities lie nearer fp32's than int8-full's do, and its greedy decodes
    agree with fp32 (Keras's answers) on at least 97% and lose at most 2 points of
    exact match against the truth."""
    import numpy as np

    art, run = sixteen
    pairs, texts = _checked(run)
    models = {p: runtime.load(art, backend="tflite", precision=p, greedy="step")
              for p in ("fp32", "int8-full", "int16x8")}
    fp32 = models["fp32"]
    ids = fp32.vocabulary.encode_inputs(texts)
    start = np.full(len(texts), fp32.vocabulary.start_id, np.int32)
    probs = {p: m.backend.step(start, m.backend.encode(ids))[0] for p, m in models.items()}
    off = {p: float(np.max(np.abs(probs[p] - probs["fp32"]))) for p in ("int8-full", "int16x8")}
    assert off["int16x8"] < off["int8-full"], off

    def hits(out):
        return sum(o in pairs[t] for o, t in zip(out, texts)) / len(texts)

    want = fp32.translate(texts)
    out = models["int16x8"].translate(texts)
    assert sum(a == b for a, b in zip(out, want)) / len(texts) >= 0.97
    assert hits(out) >= hits(want) - 0.02


@pytest.mark.parametrize("edit, message", [
    (lambda g: g["int8_io"]["probs"].update(scale=g["int8_io"]["probs"]["scale"] * 2),
     "in the file"),
    (lambda g: g["int8_io"].pop("probs"), "records no scale"),
    (lambda g: g.pop("int8_io"), "int8_io is recorded for int8-io graphs only"),
    (lambda g: g["int8_io"]["probs"].update(zero_point=300), "zero_point must be"),
    (lambda g: g["int8_io"]["probs"].update(scale=-1.0), "scale must be a positive"),
    (lambda g: g["int8_io"]["probs"].update(scale=10 ** 400), "malformed"),
    (lambda g: g["int8_io"].update(nonsense={"scale": 1.0, "zero_point": 0}),
     "not one of its inputs or outputs"),
])
def test_int8_io_scales_that_disagree_with_the_file_are_refused(integer, tmp_path, edit,
                                                                 message):
    """A scale or zero point in artifact.json that is not the file's own, missing
    or malformed, is refused when the artifact loads, with an ArtifactError that
    names it; the ONNX backend has no int8-io variant to load."""
    import json
    import shutil

    from runtime.errors import ArtifactError

    art, _ = integer("plain")
    copy = tmp_path / "art"
    shutil.copytree(art, copy)
    meta = read_json(copy / "artifact.json")
    step = next(g for g in meta["graphs"]
                if g["precision"] == "int8-io" and g["name"] == "decoder_step")
    edit(step)
    (copy / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ArtifactError, match=message):
        runtime.load(copy, backend="tflite", precision="int8-io").translate(["x"])
    with pytest.raises(ArtifactError, match="no onnx int8-io"):
        runtime.load(art, precision="int8-io")


def test_int8_io_is_a_tflite_variant(tiny_run):
    done = run_module("export", str(tiny_run / "model.keras"), "--formats", "onnx",
                      "--quantize", "int8-io")
    assert done.returncode == 2 and "needs the tflite format" in done.stderr, done.stderr


@pytest.mark.parametrize("kind", ["plain", "attention"])
def test_static_int8_onnx_is_batch_independent_and_within_the_gate(integer, kind):
    """ONNX's int8-full (activation scales fixed at export) answers each input the
    same alone and in a batch of all of them, with no row-at-a-time fallback (the
    dynamic int8 needs one), and keeps within the gate against fp32 and the truth."""
    art, run = integer(kind)
    pairs, texts = _checked(run)
    fp32 = runtime.load(art, backend="onnx").translate(texts)
    model = runtime.load(art, backend="onnx", precision="int8-full")
    assert not model.backend.per_row
    # Its encoder is integer too: built from the unrolled cells, since ONNX Runtime
    # quantizes a fused LSTM op only dynamically (a static file would keep it float).
    import onnx

    ops = {n.op_type for n in onnx.load(str(art / "encoder.int8-full.onnx")).graph.node}
    assert not ops & {"LSTM", "GRU", "Loop", "Scan"} and "QLinearMatMul" in ops, ops
    meta = read_json(art / "artifact.json")
    assert meta.get("onnx_encoder_int8_full", meta["onnx_encoder"]) == "unrolled"
    batched = model.translate(texts, batch_size=len(texts))
    assert batched == [model.translate([t])[0] for t in texts]
    assert sum(a == b for a, b in zip(batched, fp32)) / len(texts) >= 0.97
    hits = sum(o in pairs[t] for o, t in zip(batched, texts))
    assert hits >= sum(o in pairs[t] for o, t in zip(fp32, texts)) - 0.02 * len(texts)


def test_int8_full_needs_calibration_inputs_and_an_unrolled_encoder(tiny_run, tmp_path):
    from export.pipeline import ExportOptions

    with pytest.raises(InputError, match="looped TFLite encoder cannot be full-integer"):
        ExportOptions(quantize=("int8-full",), tflite_encoder="loop").validate()
    # Only a TFLite file has that form: ONNX alone is not refused for it.
    ExportOptions(formats=("onnx",), quantize=("int8-full",), tflite_encoder="loop").validate()
    done = run_module("export", str(tiny_run / "model.keras"), "--out", str(tmp_path / "a"),
                      "--quantize", "int8-full", "--calibration-inputs", "0")
    assert done.returncode == 2 and "--calibration-inputs must be positive" in done.stderr
    assert not (tmp_path / "a").exists()


def test_strict_refuses_a_flagged_variant_and_writes_nothing(tiny_run, tmp_path, monkeypatch):
    """A quantized variant past its bound is written with a warning, or refused with
    strict. The bound is raised past 100% so that every variant is flagged."""
    from export import parity
    from export.errors import ParityError
    from export.pipeline import check_texts, export_artifact
    from runtime.vocab import Vocabulary

    vocab = Vocabulary.load(tiny_run / "vocab.json")
    texts = check_texts(vocab, tiny_run / "heldout.tsv", 20)
    monkeypatch.setattr(parity, "MIN_AGREEMENT", 1.01)
    logged = []
    kw = dict(formats=("tflite",), quantize=("int8",), texts=texts, fused=False,
              log=lambda *a, **k: logged.append(" ".join(map(str, a))))
    with pytest.raises(ParityError, match="tflite/int8"):
        export_artifact(tiny_run / "model.keras", vocab, tmp_path / "strict", strict=True, **kw)
    assert not (tmp_path / "strict").exists()
    export_artifact(tiny_run / "model.keras", vocab, tmp_path / "lenient", **kw)
    assert (tmp_path / "lenient" / "artifact.json").exists()
    assert any("WARNING: tflite/int8" in line for line in logged)



def test_onnx_int8_full_encoder_is_integer_where_fp32_has_the_fused_lstm_op(tiny_run,
                                                                            tmp_path):
    """The tiny model's fp32 ONNX encoder is one fused LSTM op, which ONNX Runtime's
    static quantizer leaves float; the int8-full encoder is built from the unrolled
    cells instead, every matrix product quantized, and answers as a batch."""
    import onnx

    out = tmp_path / "art"
    done = run_module("export", str(tiny_run / "model.keras"), "--out", str(out),
                      "--formats", "onnx", "--quantize", "int8-full", "--no-fused")
    assert done.returncode == 0, done.stderr[-2000:]
    meta = read_json(out / "artifact.json")
    assert meta["onnx_encoder"] == "dynamic" and meta["onnx_encoder_int8_full"] == "unrolled"
    ops = {n.op_type for n in onnx.load(str(out / "encoder.int8-full.onnx")).graph.node}
    assert "LSTM" not in ops and "QLinearMatMul" in ops, ops
    assert not (out / "encoder.unrolled.onnx").exists()
    texts = [line.split("\t")[0] for line in
             (tiny_run / "heldout.tsv").read_text(encoding="utf-8").splitlines()[:30]]
    model = runtime.load(out, backend="onnx", precision="int8-full")
    assert model.translate(texts, batch_size=30) == [model.translate([t])[0] for t in texts]
