"""Export pipeline: locate, convert, guard, write metadata, prove parity, promote."""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import runtime
from runtime.errors import ArtifactError, DataError, InputError, VocabularyError
from runtime.embedded import CONTRACT_KEY
from runtime.metadata import (ARTIFACT_FORMAT, ARTIFACT_VERSION, METADATA_FILE, StateTensor,
                              contract_digest, graph_io, sha256_file)
from runtime.vocab import Vocabulary
from family.rundir import HELDOUT_FILE
from runtime import atomic as outdir

from . import convert, encoder_choice, opguard, parity
from .errors import ParityError



@dataclass
class ExportResult:
    directory: Path
    checks: list[parity.Check]
    metadata: dict


def load_keras_model(path: Path):
    from . import legacy

    if path.is_dir() and (path / "saved_model.pb").is_file():
        raise ArtifactError(f"{path}: {legacy.SAVEDMODEL_HINT}")
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found")
    if path.suffix == ".keras" and not _is_zip(path):
        raise ArtifactError(f"{path}: not a Keras archive (a .keras file is a zip archive; "
                            "this one is damaged, truncated or something else)")
    try:
        return legacy.load_model(path)  # Keras 2 (tf.keras) files adapted
    except Exception as e:  # Keras raises many types for a bad file
        raise ArtifactError(f"{path}: not a loadable Keras model: "
                            f"{str(e).splitlines()[0][:300]}") from None


def _is_zip(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def check_texts(vocab: Vocabulary, path: Path | None, limit: int, seed: int = 0) -> list[str]:
    """Inputs for the greedy parity check: from a file, else random strings."""
    return check_pairs(vocab, path, limit, seed)[0]


def check_pairs(vocab: Vocabulary, path: Path | None, limit: int, seed: int = 0
                ) -> tuple[list[str], list[str] | None]:
    """Inputs for the parity checks and, where the file gives every one a target
    (``input<TAB>target``, as heldout.tsv), the targets as the model writes them,
    so each variant's exact match against the truth can be reported. Without a
    file: random strings and no targets."""
    if path is None:
        rng = random.Random(seed)
        return [vocab.sample_text(rng.choice, rng.randint(1, vocab.max_input_length))
                for _ in range(min(limit, 64))], None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: check-texts file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e})") from None
    rows = [ln.split("\t") for ln in lines]
    rows = [r for r in rows if r[0].strip() and _encodable(vocab, r[0])]
    if not rows:
        raise DataError(f"{path}: no usable inputs (empty, too long, or characters "
                        "outside the vocabulary)")
    # Lines of one input (an input with alternative targets) are one case, with every
    # target a right answer.
    cases: dict[str, list] = {}
    for r in rows:
        if r[0] in cases or len(cases) < limit:
            cases.setdefault(r[0], []).append(_as_written(vocab, r[1]) if len(r) > 1 else None)
    targets = list(cases.values())
    if any(None in t for t in targets):
        targets = None  # a target missing or unwritable: strings checked, truth not
    return list(cases), targets


def _as_written(vocab: Vocabulary, target: str) -> str | None:
    """The target as the model would write it (words single-spaced), or None when
    it has tokens outside the vocabulary or does not fit."""
    try:
        ids = vocab.encode_target(target)
    except InputError:
        return None
    return vocab.decode_target(ids) if len(ids) <= vocab.max_output_length else None


def _encodable(vocab: Vocabulary, text: str) -> bool:
    try:
        vocab.encode_inputs([text])
    except InputError:
        return False
    return True


def _tflite_file(name: str, precision: str) -> str:
    return f"{name}.tflite" if precision == "fp32" else f"{name}.{precision}.tflite"


def _graph_entry(directory: Path, io: dict, name: str, fmt: str, precision: str,
                 file: str) -> dict:
    path = directory / file
    inputs, outputs = io[name]
    return {"name": name, "format": fmt, "precision": precision, "file": file,
            "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "inputs": list(inputs), "outputs": list(outputs)}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"toolkit": runtime.__version__, "python": sys.version.split()[0]}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def export_artifact(model_path: Path, vocab: Vocabulary, out: Path, formats=("onnx", "tflite"),
                    quantize=(), opset: int = convert.DEFAULT_OPSET,
                    texts: list[str] | None = None, force: bool = False,
                    fused: bool = True, tflite_encoder: str = "auto",
                    log=print, targets: list[list[str]] | None = None,
                    ort: bool = False) -> ExportResult:
    """Write a verified artifact of the Keras file ``model_path`` to ``out``; nothing
    is promoted unless parity holds. ``targets``, aligned with ``texts``: the
    right answers (a list of references per input), against which each variant's
    quality is reported."""
    _check_options(tflite_encoder)
    outdir.check_target(out, METADATA_FILE, force)
    model = load_keras_model(model_path)
    source = {"file": model_path.name, "sha256": sha256_file(model_path)}
    return _export(model, source, vocab, out, formats, quantize, opset, texts, fused,
                   tflite_encoder, log, targets, ort)


def export_model(model, vocabulary: Vocabulary, out_dir: str | Path,
                 formats=("onnx", "tflite"), quantize=(), *, opset: int = convert.DEFAULT_OPSET,
                 texts: list[str] | None = None, force: bool = False, fused: bool = True,
                 tflite_encoder: str = "auto", log=print, ort: bool = False) -> ExportResult:
    """Export an in-memory ``keras.Model`` (the one a notebook just trained) through
    the same pipeline as ``python -m export``: the same graphs, parity proof against
    Keras and atomic write. ``vocabulary``: a ``runtime.Vocabulary``, for example
    from ``export.vocabulary.from_keras_io(...)``."""
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(f"export_model takes a keras.Model, got {type(model).__name__}")
    if not isinstance(vocabulary, Vocabulary):
        raise InputError("vocabulary must be a runtime.Vocabulary, got "
                         f"{type(vocabulary).__name__}")
    _check_options(tflite_encoder)
    out = Path(out_dir)
    outdir.check_target(out, METADATA_FILE, force)
    source = {"file": None, "sha256": None, "note": f"in-memory keras.Model {model.name!r}"}
    return _export(model, source, vocabulary, out, tuple(formats), tuple(quantize), opset,
                   texts, fused, tflite_encoder, log, ort=ort)


def _check_options(tflite_encoder: str) -> None:
    if tflite_encoder not in encoder_choice.CHOICES:
        raise InputError(f"TFLite encoder form must be one of {encoder_choice.CHOICES}, "
                         f"got {tflite_encoder!r}")


def _export(model, source: dict, vocab: Vocabulary, out: Path, formats, quantize, opset,
            texts, fused, tflite_encoder, log, targets=None, ort=False) -> ExportResult:
    from family.reference import ReferenceDecoder
    from family.structure import check_vocabulary, locate

    from .graphs import GraphBuilder

    if ort and "onnx" not in formats:
        raise InputError("ORT files are converted from the ONNX ones: --ort needs the onnx "
                         "format")
    parts = locate(model)
    check_vocabulary(parts, vocab)
    texts = texts or check_texts(vocab, None, 64)
    builder = GraphBuilder(parts, vocab)
    if tflite_encoder == "loop" and not builder.loopable:
        raise InputError("the looped TFLite encoder form needs one unidirectional encoder "
                         f"layer; this model's encoder is {parts.describe()['encoder_layers']} "
                         f"layer(s), bidirectional {parts.encoder[0].bidirectional} (use "
                         "--tflite-encoder auto or unrolled)")
    state = tuple(StateTensor(n, u) for n, u in zip(builder.state_names, builder.state_units))
    io = graph_io(state, builder.attention)

    def contract(name: str) -> str:
        return contract_digest(vocab, name, *io[name], state, builder.attention)

    def tfl_meta(name: str) -> dict[str, str]:
        return {CONTRACT_KEY: contract(name)}

    staging = outdir.staging_dir(out)
    try:
        graphs: list[dict] = []
        variants: list[tuple[str, str]] = []
        vocab_dict = vocab.to_dict()
        started = time.monotonic()
        if "onnx" in formats:
            for name in ("encoder", "decoder_step"):
                log(f"converting {name} to ONNX (opset {opset})", flush=True)
                props = convert.onnx_props(vocab_dict, name, runtime.__version__,
                                           contract(name))
                if name == "encoder":
                    onnx_encoder = encoder_choice.write_onnx_encoder(
                        builder, staging / "encoder.onnx", opset, props)
                    log(f"  {onnx_encoder} encoder", flush=True)
                else:
                    convert.to_onnx(builder.decoder_step(), staging / f"{name}.onnx", opset,
                                    props)
                graphs.append(_graph_entry(staging, io, name, "onnx", "fp32", f"{name}.onnx"))
                if "int8" in quantize:
                    convert.quantize_onnx(staging / f"{name}.onnx", staging / f"{name}.int8.onnx")
                    graphs.append(_graph_entry(staging, io, name, "onnx", "int8",
                                               f"{name}.int8.onnx"))
            if fused:
                log("converting the fused greedy decode to ONNX", flush=True)
                convert.to_onnx(builder.greedy_fused(onnx_encoder), staging / "greedy.onnx",
                                opset, convert.onnx_props(vocab_dict, "greedy",
                                                          runtime.__version__,
                                                          contract("greedy")))
                graphs.append(_graph_entry(staging, io, "greedy", "onnx", "fp32", "greedy.onnx"))
            onnx_variants = [("onnx", "fp32")] + ([("onnx", "int8")] if "int8" in quantize
                                                 else [])
            variants += onnx_variants
            if ort:
                log("converting the ONNX files to ORT format (ONNX Runtime Mobile)", flush=True)
                onnx_graphs = [g for g in graphs if g["format"] == "onnx"]
                paths = convert.to_ort([staging / g["file"] for g in onnx_graphs], staging)
                for g, path in zip(onnx_graphs, paths):  # one config for all of them
                    graphs.append(_graph_entry(staging, io, g["name"], "ort", g["precision"],
                                               path.name))
                variants += [("ort", p) for _, p in onnx_variants]
        if "tflite" in formats:
            tfl_precisions = ["fp32"] + [q for q in ("int8", "fp16") if q in quantize]
            encoder_forms = {}
            for precision in tfl_precisions:
                file = _tflite_file("encoder", precision)
                log(f"converting encoder to TFLite ({precision})", flush=True)
                form = encoder_choice.write_encoder(builder, staging, file, precision,
                                                    tflite_encoder, tfl_meta("encoder"))
                encoder_forms[precision] = form
                if form["timing_us"]:
                    log("  " + ", ".join(f"{k} {v:.0f} µs" for k, v in form["timing_us"].items())
                        + f" per call: {form['style']} kept", flush=True)
                graphs.append(_graph_entry(staging, io, "encoder", "tflite", precision, file))
            step_fn = builder.decoder_step(vocab.max_input_length)
            for precision in tfl_precisions:
                file = _tflite_file("decoder_step", precision)
                log(f"converting decoder_step to TFLite ({precision})", flush=True)
                convert.to_tflite(step_fn, staging / file, precision, tfl_meta("decoder_step"))
                opguard.check_tflite(staging / file, allow_while=False)
                graphs.append(_graph_entry(staging, io, "decoder_step", "tflite", precision, file))
            if fused:
                for precision in tfl_precisions:
                    file = _tflite_file("greedy", precision)
                    fn = builder.greedy_fused(encoder_forms[precision]["style"])
                    log(f"converting the fused greedy decode to TFLite ({precision})",
                        flush=True)
                    convert.to_tflite(fn, staging / file, precision, tfl_meta("greedy"))
                    opguard.check_tflite(staging / file, allow_while=True)
                    graphs.append(_graph_entry(staging, io, "greedy", "tflite", precision, file))
            variants += [("tflite", p) for p in tfl_precisions]
        metadata = {
            "format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION,
            "vocabulary": vocab_dict,
            "architecture": parts.describe(),
            "state": [{"name": t.name, "units": t.units} for t in state],
            "attention": None if builder.attention is None else {
                "kind": builder.attention.kind, "memory_units": builder.attention.memory_units,
                "masked": builder.attention.masked},
            "opset": opset,
            "graphs": graphs, "versions": _versions(),
            "source_model": source,
            "encoder_note": "inputs are always padded to max_input_length by the "
                            "vocabulary's padding rule; the TFLite encoder runs exactly "
                            "that many steps, unrolled or in a WHILE (tflite_encoder)",
            "parity": {"passed": False},  # until the checks below pass
        }
        if "tflite" in formats:
            metadata["tflite_encoder"] = encoder_forms
        if "onnx" in formats:
            metadata["onnx_encoder"] = onnx_encoder
        if ort:
            config_path = staging / convert.ORT_CONFIG
            metadata["ort_required_operators"] = {"file": convert.ORT_CONFIG,
                                                  "sha256": sha256_file(config_path)}
        write_metadata(staging, metadata)
        log(f"converted in {time.monotonic() - started:.1f}s; checking parity against Keras",
            flush=True)
        reference = ReferenceDecoder(model, vocab)
        checks = []
        for variant in variants:
            if variant[1] == "fp32":
                checks += parity.graph_checks(staging, variant, reference, texts)
        decode, keras_out, outputs = parity.decode_checks(staging, variants, reference, texts,
                                                          judged_by_truth=bool(targets))
        checks += decode
        fp32_out = {name.split("/")[0]: out for name, out in outputs.items()
                    if name.endswith("/fp32")}
        modes, beams = parity.mode_checks(staging, variants, texts, outputs, targets)
        checks += modes
        if targets:
            char_level = vocab.target_unit == "char"
            truth, judged = parity.truth_checks(outputs, targets, char_level)
            checks += truth
            beam_quality = parity.truth_checks(beams, targets, char_level)[1]
            metadata["accuracy"] = {
                "pairs": len(targets),
                "exact_match": {k: q.exact_match for k, q in judged.items()},
                "quality": {k: q.as_dict() for k, q in judged.items()},
                f"beam{parity.BEAM_WIDTH}_quality": {k: q.as_dict()
                                                     for k, q in beam_quality.items()}}
        if fused:
            with_fused = sorted({(g["format"], g["precision"]) for g in graphs
                                 if g["name"] == "greedy"})
            fused_checks, timing = parity.fused_checks(staging, with_fused, texts, keras_out,
                                                       fp32_out)
            checks += fused_checks
            metadata["greedy_timing_us"] = timing
            metadata["greedy_path"] = {fmt: parity.fastest(t) for fmt, t in timing.items()}
        log(parity.table(checks))
        failed = [c for c in checks if c.fatal and not c.ok]
        if failed:
            names = ", ".join(f"{c.variant} {c.what}" for c in failed)
            raise ParityError(f"{len(failed)} parity check(s) failed ({names}); no artifact "
                              f"written to {out}")
        for c in checks:
            if not c.ok:
                log(f"WARNING: {c.variant}: {c.what} holds for only {c.value:.1%} "
                    f"(bound {c.bound})", flush=True)
        metadata["parity"] = {"atol": parity.ATOL, "inputs": len(texts),
                              "checks": parity.as_json(checks), "passed": True}
        write_metadata(staging, metadata)
        outdir.promote(staging, out)
    except BaseException:
        outdir.discard(staging)
        raise
    return ExportResult(out, checks, metadata)


def write_metadata(directory: Path, metadata: dict) -> None:
    (directory / METADATA_FILE).write_text(
        json.dumps(metadata, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def run(args) -> int:
    model_path = Path(args.model)
    vocab_path = Path(args.vocab) if args.vocab else model_path.parent / "vocab.json"
    if not args.vocab and not vocab_path.exists():
        raise VocabularyError(f"no vocabulary: {vocab_path} does not exist; pass --vocab FILE "
                              "(format in README)")
    vocab = Vocabulary.load(vocab_path)
    out = Path(args.out) if args.out else model_path.parent / "artifact"
    texts_path = Path(args.check_texts) if args.check_texts else None
    if texts_path is None and (model_path.parent / HELDOUT_FILE).exists():
        texts_path = model_path.parent / HELDOUT_FILE
    texts, targets = check_pairs(vocab, texts_path, args.check_samples)
    result = export_artifact(model_path, vocab, out, args.formats, args.quantize, args.opset,
                             texts, args.force, fused=not args.no_fused,
                             tflite_encoder=args.tflite_encoder, targets=targets,
                             ort=args.ort)
    sizes = ", ".join(f"{g['file']} {g['bytes'] / 1024:.0f} KiB"
                      for g in result.metadata["graphs"])
    print(f"wrote {out}/ ({sizes}, {METADATA_FILE})")
    for variant, path in result.metadata.get("greedy_path", {}).items():
        t = result.metadata["greedy_timing_us"][variant]
        print(f"greedy on {variant}: {path} path by default (per sentence, batch 1: step "
              f"loop {t['step']:.0f} µs, fused graph {t['fused']:.0f} µs)")
    return 0
