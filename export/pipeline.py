"""Export pipeline, in steps: options, locate, write each format, record, prove, promote."""
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
from runtime.metadata import (ARTIFACT_FORMAT, ARTIFACT_VERSION, METADATA_FILE, STEP_KINDS,
                              GraphFile, MemoryTensor, StateTensor, contract_digest,
                              graph_io, sha256_file)
from runtime.vocab import Vocabulary
from family.rundir import HELDOUT_FILE
from runtime import atomic as outdir

from . import convert, encoder_choice, opguard, parity
from .errors import ConversionError, OpGuardError, ParityError
from .formats import FORMATS, QUANTIZE, STATIC, TFLITE_ONLY



@dataclass
class ExportResult:
    """What an export wrote: the artifact directory, every parity check and the contents
    of its ``artifact.json``."""
    directory: Path
    checks: list[parity.Check]
    metadata: dict


def load_keras_model(path: Path):
    """A Keras model from a .keras or .h5 file (Keras 2 files adapted); raises ArtifactError
    for a SavedModel directory, a missing file or one Keras cannot load."""
    from . import legacy

    if path.is_dir() and (path / "saved_model.pb").is_file():
        raise ArtifactError(f"{path}: {legacy.SAVEDMODEL_HINT}")
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found")
    if path.suffix == ".keras" and not _is_zip(path):
        raise ArtifactError(f"{path}: not a Keras archive (a .keras file is a zip archive; "
                            "this one is damaged, truncated or something else)")
    _import_keras_hub(path)
    try:
        return legacy.load_model(path)  # Keras 2 (tf.keras) files adapted
    except Exception as e:  # Keras raises many types for a bad file
        reason = str(e).splitlines()[0][:300]
        hint = ("; for custom layers, pass --import MODULE (the module that registers "
                "them), or export the model in memory with export.export_model"
                if "Could not locate" in str(e) or "Unknown layer" in str(e) else "")
        raise ArtifactError(f"{path}: not a loadable Keras model: {reason}{hint}") from None


def _import_keras_hub(path: Path) -> None:
    """KerasHub registers its layers when imported: a .keras file that names them
    (``python -m train --arch transformer``'s) then loads without --import."""
    import zipfile

    if path.suffix != ".keras":
        return
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json") if "config.json" in archive.namelist() else b""
    if b'"keras_hub' in config:
        try:
            import keras_hub  # noqa: F401  (registers its layers)
        except ImportError:
            raise ArtifactError(f"{path}: the model uses KerasHub layers; pip install "
                                "keras-hub (it is in the train extra)") from None


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


def calibration_pairs(vocab: Vocabulary, path: Path | None, checked: list[str], count: int
                      ) -> tuple[list[str], list[list[str]] | None, str] | None:
    """Up to ``count`` inputs (and targets) for int8-full's calibration, from the same
    file as the checks but not among the ``checked`` inputs, so the accuracy the
    checks report is not measured on the calibration; without a file, random
    strings other than the checks'. None when the file has no further input."""
    if path is None:
        rng = random.Random(1)
        texts = [vocab.sample_text(rng.choice, rng.randint(1, vocab.max_input_length))
                 for _ in range(count)]
        return texts, None, f"{count} random strings (no check-texts file)"
    texts, targets = check_pairs(vocab, path, len(checked) + count)
    seen = set(checked)
    keep = [i for i, t in enumerate(texts) if t not in seen]
    if not keep:
        return None
    return ([texts[i] for i in keep], None if targets is None else [targets[i] for i in keep],
            f"{path.name}: {len(keep)} inputs after the {len(checked)} checked ones")


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


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"toolkit": runtime.__version__, "python": sys.version.split()[0]}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def export_artifact(model_path: str | Path, vocab: Vocabulary, out: str | Path,
                    formats=("onnx", "tflite"),
                    quantize=(), opset: int = convert.DEFAULT_OPSET,
                    texts: list[str] | None = None, force: bool = False,
                    fused: bool = True, tflite_encoder: str = "auto",
                    log=print, targets: list[list[str]] | None = None,
                    ort: bool = False, calibration=None, strict: bool = False,
                    step: str = "auto") -> ExportResult:
    """Write a verified artifact of the Keras file ``model_path`` to ``out``; nothing
    is promoted unless parity holds. ``texts``: the inputs the decodes are checked
    on (without them, 64 random strings); ``targets``, aligned with ``texts``: the
    right answers (a list of references per input), against which each variant's
    quality is reported. ``calibration``: (texts, targets or None, where from) for
    int8-full, best disjoint from ``texts`` (``calibration_pairs``). ``step``: see
    ``ExportOptions``."""
    model_path, out = Path(model_path), Path(out)
    options = ExportOptions(tuple(formats), tuple(quantize), opset, fused, tflite_encoder,
                            ort, strict, step).validate()
    outdir.check_target(out, METADATA_FILE, force)
    model = load_keras_model(model_path)
    source = {"file": model_path.name, "sha256": sha256_file(model_path)}
    return build(model, source, vocab, out, options, texts, log, targets, calibration)


def export_model(model, vocabulary: Vocabulary, out_dir: str | Path,
                 formats=("onnx", "tflite"), quantize=(), *, opset: int = convert.DEFAULT_OPSET,
                 texts: list[str] | None = None, force: bool = False, fused: bool = True,
                 tflite_encoder: str = "auto", log=print, ort: bool = False,
                 targets: list[list[str]] | None = None, calibration=None,
                 strict: bool = False, step: str = "auto") -> ExportResult:
    """Export an in-memory ``keras.Model`` (the one a notebook just trained) through
    the same pipeline as ``python -m export``: the same graphs, parity proof against
    Keras and atomic write. ``vocabulary``: a ``runtime.Vocabulary``, for example
    from ``export.keras_io_vocab.from_keras_io(...)``. Give ``texts`` (and
    ``targets``) for the proof the CLI runs on held-out pairs; without them the
    decodes are checked on 64 random strings. ``calibration``: (texts, targets or
    None, where from), the inputs int8-full's ranges come from (default: ``texts``).
    ``step``: "auto" (the structured RNN step where the model is of that family, else
    the cached step for a recognised Transformer decoder (KerasHub TransformerDecoder
    layers or Keras MultiHeadAttention calls), else the prefix step of its cut graph), "structured", "prefix" or "cached"; custom layers need
    no registration here, since the model is never reloaded from a file."""
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(f"export_model takes a keras.Model, got {type(model).__name__}")
    if not isinstance(vocabulary, Vocabulary):
        raise InputError("vocabulary must be a runtime.Vocabulary, got "
                         f"{type(vocabulary).__name__}")
    options = ExportOptions(tuple(formats), tuple(quantize), opset, fused, tflite_encoder,
                            ort, strict, step).validate()
    out = Path(out_dir)
    outdir.check_target(out, METADATA_FILE, force)
    source = {"file": None, "sha256": None, "note": f"in-memory keras.Model {model.name!r}"}
    return build(model, source, vocabulary, out, options, texts, log, targets, calibration)


@dataclass(frozen=True)
class ExportOptions:
    """What to write; ``validate`` refuses what cannot be written."""
    # File formats: "onnx" and/or "tflite".
    formats: tuple[str, ...] = ("onnx", "tflite")
    # Quantized variants besides fp32: "int8" (both formats, dynamic-range), "fp16"
    # (TFLite only), "int8-full" (both formats; static int8, calibrated: see
    # export/calibration.py) and "int8-io" (TFLite only: int8-full with int8 inputs
    # and outputs, their scales in artifact.json).
    quantize: tuple[str, ...] = ()
    # The ONNX opset the graphs are converted to.
    opset: int = convert.DEFAULT_OPSET
    # Also write the fused greedy graph (a whole greedy decode in one call).
    fused: bool = True
    # The TFLite encoder: "auto" (the faster of the two), "unrolled" or "loop".
    tflite_encoder: str = "auto"
    # ORT-format copies of the ONNX files, for ONNX Runtime Mobile.
    ort: bool = False
    # Refuse the export when a quantized variant is flagged (agreement with fp32 or
    # quality against the truth past its bound) instead of writing it with a warning.
    strict: bool = False
    # The step graph: "structured" (rebuilt from an RNN family model's cells), "prefix"
    # (the model's own graph cut, stepping a fixed-length prefix: any causal two-input
    # functional model), "cached" (a recognised Transformer decoder, its attention
    # keys and values as state: family/cached.py) or "auto" (structured for the RNN family, else cached where it
    # applies, else prefix).
    step: str = "auto"

    def validate(self) -> "ExportOptions":
        """Return self; raise InputError for an unknown TFLite encoder form, or ``ort``
        without the onnx format."""
        known = {"formats": FORMATS, "quantize": QUANTIZE}
        for name, choices in known.items():
            bad = [v for v in getattr(self, name) if v not in choices]
            if bad:
                raise InputError(f"{name} must be among {choices}, got {bad}")
        if not self.formats:
            raise InputError("formats is empty: choose onnx, tflite or both")
        only_tflite = [q for q in self.quantize if q in TFLITE_ONLY]
        if only_tflite and "tflite" not in self.formats:
            raise InputError(f"{', '.join(only_tflite)} variants are TFLite files: quantize "
                             f"{','.join(only_tflite)} needs the tflite format")
        if not isinstance(self.opset, int) or isinstance(self.opset, bool) or not (
                7 <= self.opset <= 21):
            raise InputError(f"opset must be an integer from 7 to 21, got {self.opset!r}")
        if self.tflite_encoder not in encoder_choice.CHOICES:
            raise InputError(f"TFLite encoder form must be one of {encoder_choice.CHOICES}, "
                             f"got {self.tflite_encoder!r}")
        if self.tflite_encoder == "loop" and set(STATIC) & set(self.quantize) and \
                "tflite" in self.formats:  # the form of a TFLite file only
            raise InputError("the looped TFLite encoder cannot be full-integer (TF's "
                             "calibration crashes on it): use --tflite-encoder auto or "
                             "unrolled with int8-full")
        if self.step not in ("auto",) + STEP_KINDS:
            raise InputError(f"step must be one of auto, {', '.join(STEP_KINDS)}, got "
                             f"{self.step!r}")
        if self.ort and "onnx" not in self.formats:
            raise InputError("ORT files are converted from the ONNX ones: --ort needs the "
                             "onnx format")
        return self

    @property
    def tflite_precisions(self) -> list[str]:
        """The TFLite precisions to write: "fp32", then the quantized ones asked for."""
        return ["fp32"] + [q for q in QUANTIZE if q in self.quantize]


class _Graphs:
    """What every format writer shares: the graph builder, the decoder state and
    tensor names, and the contract digest each file carries."""

    def __init__(self, parts, vocab: Vocabulary, staging: Path, why: str = ""):
        from family.cached import CachedParts
        from family.prefix import PrefixParts

        self.parts, self.vocab, self.staging = parts, vocab, staging
        # "structured", "prefix" or "cached"; the last two cut the model's graph.
        self.kind = ("cached" if isinstance(parts, CachedParts) else
                     "prefix" if isinstance(parts, PrefixParts) else "structured")
        self.prefix = self.kind != "structured"
        self.why = why  # why this step path was taken, for artifact.json
        if self.prefix:
            from .cached_graphs import CachedGraphBuilder
            from .prefix_graphs import PrefixGraphBuilder

            self.builder = (CachedGraphBuilder if self.kind == "cached" else
                            PrefixGraphBuilder)(parts, vocab)
            self.state = tuple(StateTensor(n, u, d) for n, u, d in zip(
                self.builder.state_names, self.builder.state_units, self.builder.state_dtypes))
            memory = self.builder.memory if self.kind == "cached" else parts.memory
            self.memory = tuple(MemoryTensor(n, shape, d) for n, shape, d in memory)
        else:
            from .graphs import GraphBuilder

            self.builder = GraphBuilder(parts, vocab)
            self.state = tuple(StateTensor(n, u) for n, u in zip(self.builder.state_names,
                                                               self.builder.state_units))
            self.memory = ()
        self.io = graph_io(self.state, self.builder.attention, self.memory)
        self.calibration = None  # a calibration.Calibration where int8-full is written
        # The ONNX int8-full encoder's form where it differs from the fp32 one's.
        self.onnx_int8_full_encoder: str | None = None
        self.skipped: dict[str, str] = {}  # graphs not written, and why (artifact.json)

    def contract(self, name: str) -> str:
        return contract_digest(self.vocab, name, *self.io[name], self.state,
                               self.builder.attention, self.memory)

    def onnx_props(self, name: str) -> dict:
        return convert.onnx_props(self.vocab.to_dict(), name, runtime.__version__,
                                  self.contract(name))

    def tflite_props(self, name: str) -> dict[str, str]:
        return {CONTRACT_KEY: self.contract(name)}

    def entry(self, name: str, fmt: str, precision: str, file: str, log=None) -> GraphFile:
        path = self.staging / file
        inputs, outputs = self.io[name]
        kernels = "xnnpack"
        if fmt == "tflite" and precision in STATIC:
            refusal = opguard.xnnpack_refusal(path)
            if refusal:
                kernels = "builtin"
                (log or print)(f"  {file}: XNNPACK cannot run it ({refusal}); recorded to "
                               "run on LiteRT's own kernels", flush=True)
        quantized = opguard.integer_boundary(path) if precision == "int8-io" else ()
        return GraphFile(name, fmt, precision, file, sha256_file(path), path.stat().st_size,
                         tuple(inputs), tuple(outputs), kernels, quantized)


def _tflite_file(name: str, precision: str) -> str:
    return f"{name}.tflite" if precision == "fp32" else f"{name}.{precision}.tflite"


def write_onnx(g: _Graphs, options: ExportOptions, log) -> tuple[list[GraphFile], str]:
    """The ONNX files (fp32, int8 if asked, the fused greedy graph): their entries,
    and the form the encoder took ("dynamic" or "unrolled")."""
    entries = []
    for name in ("encoder", "decoder_step"):
        log(f"converting {name} to ONNX (opset {options.opset})", flush=True)
        if name == "encoder":
            onnx_encoder = encoder_choice.write_onnx_encoder(
                g.builder, g.staging / "encoder.onnx", options.opset, g.onnx_props(name))
            log(f"  {onnx_encoder} encoder", flush=True)
        else:
            convert.to_onnx(g.builder.decoder_step(), g.staging / f"{name}.onnx",
                            options.opset, g.onnx_props(name))
        entries.append(g.entry(name, "onnx", "fp32", f"{name}.onnx"))
        if "int8" in options.quantize:
            convert.quantize_onnx(g.staging / f"{name}.onnx", g.staging / f"{name}.int8.onnx")
            entries.append(g.entry(name, "onnx", "int8", f"{name}.int8.onnx"))
        if "int8-full" in options.quantize:
            log(f"quantizing {name} statically for ONNX (int8-full)", flush=True)
            samples = g.calibration.encoder if name == "encoder" else g.calibration.step
            source = g.staging / f"{name}.onnx"
            if name == "encoder" and onnx_encoder == "dynamic":
                # ONNX Runtime quantizes a fused LSTM/GRU op only dynamically, so a
                # static file of it keeps the whole encoder float (measured: batch 64,
                # latent 256, 7.9 ms against 4.0 ms quantized from the unrolled cells).
                source = g.staging / "encoder.unrolled.onnx"
                convert.to_onnx(g.builder.encoder_fixed("unrolled"), source, options.opset,
                                g.onnx_props(name))
                g.onnx_int8_full_encoder = "unrolled"
            convert.quantize_onnx_static(source, g.staging / f"{name}.int8-full.onnx", samples)
            if source.name == "encoder.unrolled.onnx":
                source.unlink()
            entries.append(g.entry(name, "onnx", "int8-full", f"{name}.int8-full.onnx"))
    if options.fused:
        log("converting the fused greedy decode to ONNX", flush=True)
        convert.to_onnx(g.builder.greedy_fused(onnx_encoder), g.staging / "greedy.onnx",
                        options.opset, g.onnx_props("greedy"))
        entries.append(g.entry("greedy", "onnx", "fp32", "greedy.onnx"))
    return entries, onnx_encoder


def write_ort(g: _Graphs, onnx_entries: list[GraphFile], log) -> list[GraphFile]:
    """ORT-format copies of the ONNX files (one operator config for all of them)."""
    log("converting the ONNX files to ORT format (ONNX Runtime Mobile)", flush=True)
    paths = convert.to_ort([g.staging / e.file for e in onnx_entries], g.staging)
    return [g.entry(e.name, "ort", e.precision, path.name)
            for e, path in zip(onnx_entries, paths)]


def write_tflite(g: _Graphs, options: ExportOptions, log) -> tuple[list[GraphFile], dict]:
    """The TFLite files of every precision, each checked by the op guard (full-integer
    ones in its integer mode too): their entries, and the encoder form chosen per
    precision."""
    entries, encoder_forms = [], {}

    def calibration(precision: str, graph: str):
        # Set per conversion: tf.functions are traced when converted (see GraphBuilder).
        g.builder.first_step_shortcut = precision not in STATIC
        return getattr(g.calibration, graph) if precision in STATIC else None

    for precision in options.tflite_precisions:
        file = _tflite_file("encoder", precision)
        log(f"converting encoder to TFLite ({precision})", flush=True)
        form = encoder_choice.write_encoder(g.builder, g.staging, file, precision,
                                            options.tflite_encoder, g.tflite_props("encoder"),
                                            calibration(precision, "encoder"), log)
        encoder_forms[precision] = form
        if form["timing_us"]:
            log("  " + ", ".join(f"{k} {v:.0f} µs" for k, v in form["timing_us"].items())
                + f" per call: {form['style']} kept", flush=True)
        entries.append(g.entry("encoder", "tflite", precision, file, log))
    step_fn = g.builder.decoder_step(g.vocab.max_input_length)
    for precision in options.tflite_precisions:
        file = _tflite_file("decoder_step", precision)
        log(f"converting decoder_step to TFLite ({precision})", flush=True)
        opguard.convert_guarded(lambda: step_fn, g.staging / file, precision,
                                g.tflite_props("decoder_step"), calibration(precision, "step"),
                                False, log)
        entries.append(g.entry("decoder_step", "tflite", precision, file, log))
    for precision in options.tflite_precisions if options.fused else ():
        file = _tflite_file("greedy", precision)
        if precision == "int8-io":  # ids in, ids out: it would be int8-full's file
            g.skipped["tflite/int8-io greedy"] = ("a fused graph takes and returns token "
                                                  "ids only: int8-full's is the same file")
            continue
        log(f"converting the fused greedy decode to TFLite ({precision})", flush=True)
        style = encoder_forms[precision]["style"]
        try:
            opguard.convert_guarded(lambda: g.builder.greedy_fused(style), g.staging / file,
                                    precision, g.tflite_props("greedy"),
                                    calibration(precision, "fused"), True, log)
        except (OpGuardError, ConversionError) as e:
            # int16x8's calibration of the fused loop fails in TF's converter
            # (measured, TF 2.21: "Max and min for dynamic tensors should be
            # recorded during calibration"): the step loop serves it.
            if precision not in STATIC or (isinstance(e, ConversionError) and
                                           precision != "int16x8"):
                raise
            (g.staging / file).unlink(missing_ok=True)
            g.skipped[f"tflite/{precision} greedy"] = str(e).split("; int16x8 converts")[0]
            log(f"  not written: {e}; the step loop serves {precision} greedy", flush=True)
            continue
        entries.append(g.entry("greedy", "tflite", precision, file, log))
    return entries, encoder_forms


def write_graphs(g: _Graphs, options: ExportOptions, log) -> tuple[list[GraphFile], dict]:
    """Every format's files, and what the metadata records of how they were made."""
    entries, notes = [], {}
    writers = (write_onnx, write_tflite)
    if g.prefix:
        from . import prefix_export

        writers = (prefix_export.write_onnx, prefix_export.write_tflite)
    if "onnx" in options.formats:
        onnx_entries, notes["onnx_encoder"] = writers[0](g, options, log)
        notes["onnx_encoder_int8_full"] = g.onnx_int8_full_encoder
        entries += onnx_entries
        if options.ort:
            entries += write_ort(g, onnx_entries, log)
            notes["ort_required_operators"] = {
                "file": convert.ORT_CONFIG, "sha256": sha256_file(g.staging / convert.ORT_CONFIG)}
    if "tflite" in options.formats:
        tflite_entries, notes["tflite_encoder"] = writers[1](g, options, log)
        entries += tflite_entries
    return entries, {k: v for k, v in notes.items() if v is not None}


def _metadata(g: _Graphs, options: ExportOptions, entries: list[GraphFile], notes: dict,
              source: dict) -> dict:
    """artifact.json before the proof: the shared fields through the runtime's own
    types (what load_config reads), parity not passed."""
    attention = g.builder.attention
    step = {"kind": g.kind, "why": g.why}
    if g.prefix:
        step["prefix_length"] = g.parts.prefix_length
    return {
        "format": ARTIFACT_FORMAT, "version": _version(g),
        "vocabulary": g.vocab.to_dict(),
        "architecture": g.parts.describe(),
        "step": step,
        "state": [t.to_dict() for t in g.state],
        **({"memory": [m.to_dict() for m in g.memory]} if g.memory else {}),
        "attention": None if attention is None else attention.to_dict(),
        "opset": options.opset,
        "graphs": [e.to_dict() for e in entries], "versions": _versions(),
        "source_model": source,
        "encoder_note": "inputs are always padded to max_input_length by the "
                        "vocabulary's padding rule; " + (
                            "every graph takes exactly that many steps" if g.prefix else
                            "the TFLite encoder runs exactly that many steps, unrolled or "
                            "in a WHILE (tflite_encoder)"),
        "parity": {"passed": False},  # until the checks below pass
        **{k: notes[k] for k in ("tflite_encoder", "onnx_encoder", "onnx_encoder_int8_full",
                                 "ort_required_operators") if k in notes},
    }


def _version(g: _Graphs) -> int:
    """The artifact version to write: 4 where the artifact needs it (a cut step, or
    a recorded standardisation rule a version-3 reader would refuse), else 3."""
    vocab = g.vocab.to_dict()
    custom = isinstance(vocab["standardize"], dict) or "target_standardize" in vocab
    return ARTIFACT_VERSION if g.prefix or custom else 3


def _variants(graphs: list[dict]) -> list[tuple[str, str]]:
    """(format, precision) of every variant written, in the order the checks run."""
    formats, precisions = ("onnx", "ort", "tflite"), ("fp32",) + QUANTIZE
    found = {(g["format"], g["precision"]) for g in graphs}
    return sorted(found, key=lambda v: (formats.index(v[0]), precisions.index(v[1])))


def prove(staging: Path, metadata: dict, model, vocab: Vocabulary, texts: list[str],
          targets, log, strict: bool = False, prefix=None) -> list:
    """Every parity check against Keras; fills in the metadata's accuracy, greedy
    timing and path. Raises ParityError when a fatal check fails (``strict``: when
    any check fails, a quantized variant's flags included). ``prefix``: the
    ``PrefixParts`` of a model exported through the prefix step (its answers are the
    whole model's on the growing prefix, keras.io's decode loop), or the
    ``CachedParts`` of one exported through the cached step (the same answers)."""
    from family.cached import CachedParts
    from family.reference import ReferenceDecoder

    variants = _variants(metadata["graphs"])
    if prefix is not None:
        from family.prefix import PrefixReference

        from . import cached_parity, prefix_parity

        cached = isinstance(prefix, CachedParts)
        reference = PrefixReference(prefix.prefix if cached else prefix, vocab)
        graph_checks = cached_parity.graph_checks if cached else prefix_parity.graph_checks
    else:
        reference = ReferenceDecoder(model, vocab)
    checks = []
    for variant in variants:
        if variant[1] == "fp32" and prefix is not None:
            checks += graph_checks(staging, variant, prefix, vocab, texts)
        elif variant[1] == "fp32":
            checks += parity.graph_checks(staging, variant, reference, texts)
    decode, keras_out, outputs = parity.decode_checks(staging, variants, reference, texts,
                                                      judged_by_truth=bool(targets))
    checks += decode
    modes, beams = parity.mode_checks(staging, variants, texts, outputs, targets)
    checks += modes
    with_fused = sorted({(e["format"], e["precision"]) for e in metadata["graphs"]
                         if e["name"] == "greedy"})
    fused_out = {}
    if with_fused:
        fp32_out = {name.split("/")[0]: out for name, out in outputs.items()
                    if name.endswith("/fp32")}
        fused_checks, timing, fused_out = parity.fused_checks(staging, with_fused, texts,
                                                              keras_out, fp32_out)
        checks += fused_checks
        metadata["greedy_timing_us"] = timing
        metadata["greedy_path"] = {fmt: parity.fastest(t) for fmt, t in timing.items()}
    if targets:
        checks += _quality(metadata, vocab, {**outputs, **fused_out}, beams, targets)
    log(parity.table(checks))
    failed = [c for c in checks if (c.fatal or strict) and not c.ok]
    if failed:
        names = ", ".join(f"{c.variant} {c.what}" for c in failed)
        raise ParityError(f"{len(failed)} parity check(s) failed ({names})")
    for c in checks:
        if not c.ok:
            shown = f"{c.value:.1%}" if 0 <= c.value <= 1 else f"{c.value:.4g}"
            log(f"WARNING: {c.variant}: {c.what} holds for only {shown} "
                f"(bound {c.bound})", flush=True)
    metadata["parity"] = {"atol": parity.ATOL, "noise_factor": parity.NOISE_FACTOR,
                          "max_atol": parity.MAX_ATOL, "inputs": len(texts),
                          "checks": parity.as_json(checks), "passed": True}
    return checks


def _quality(metadata: dict, vocab: Vocabulary, outputs: dict, beams: dict, targets) -> list:
    """Each variant's greedy quality against the truth (step loops and fused graphs)
    and beam-4's on each step loop, recorded as ``accuracy``; for a pronunciation
    lexicon also as WER and PER (``lexicon``)."""
    from family.quality import is_lexicon, lexicon_rates

    char_level = vocab.target_unit == "char"
    lexicon = is_lexicon(vocab.unit, vocab.target_unit)
    truth, judged = parity.truth_checks(outputs, targets, char_level, lexicon)
    beam_quality = parity.truth_checks(beams, targets, char_level)[1]
    beam = f"beam{parity.BEAM_WIDTH}"
    metadata["accuracy"] = {
        "pairs": len(targets),
        "exact_match": {k: q.exact_match for k, q in judged.items()},
        "quality": {k: q.as_dict() for k, q in judged.items()},
        f"{beam}_quality": {k: q.as_dict() for k, q in beam_quality.items()}}
    if lexicon:
        metadata["accuracy"]["lexicon"] = {
            "greedy": {k: lexicon_rates(q) for k, q in judged.items()},
            beam: {k: lexicon_rates(q) for k, q in beam_quality.items()}}
    return truth


def build(model, source: dict, vocab: Vocabulary, out: Path, options: ExportOptions,
          texts: list[str] | None, log, targets=None, calibration=None) -> ExportResult:
    """Locate, write every format, record, prove, promote: nothing reaches ``out``
    unless every fatal check passed. ``calibration``: (texts, targets or None, where
    they came from) for full-integer variants; without it the check texts are used,
    and artifact.json says so."""
    options.validate()
    parts, why = locate_step(model, vocab, options.step, log)
    texts = texts or check_texts(vocab, None, 64)
    staging = outdir.staging_dir(out)
    try:
        g = _Graphs(parts, vocab, staging, why)
        if g.prefix:
            from . import prefix_export

            prefix_export.check_options(options)
        if options.tflite_encoder == "loop" and not g.builder.loopable:
            raise InputError("the looped TFLite encoder form needs one unidirectional encoder "
                             f"layer; this model's encoder is {parts.describe()['encoder_layers']}"
                             f" layer(s), bidirectional {parts.encoder[0].bidirectional} (use "
                             "--tflite-encoder auto or unrolled)")
        started = time.monotonic()
        if set(STATIC) & set(options.quantize):
            g.calibration = _calibrate(g, vocab, texts, targets, calibration, log)
        entries, notes = write_graphs(g, options, log)
        metadata = _metadata(g, options, entries, notes, source)
        if g.calibration is not None:
            metadata["calibration"] = g.calibration.record
        if g.skipped:
            metadata["not_written"] = g.skipped
        write_metadata(staging, metadata)
        log(f"converted in {time.monotonic() - started:.1f}s; checking parity against Keras",
            flush=True)
        try:
            checks = prove(staging, metadata, model, vocab, texts, targets, log,
                           options.strict, parts if g.prefix else None)
        except ParityError as e:
            raise ParityError(f"{e}; no artifact written to {out}") from None
        write_metadata(staging, metadata)
        outdir.promote(staging, out)
    except BaseException:
        outdir.discard(staging)
        raise
    return ExportResult(out, checks, metadata)


def locate_step(model, vocab: Vocabulary, step: str, log) -> tuple[object, str]:
    """The model's parts for the step path ``step`` ("auto", "structured", "prefix",
    "cached"), and why that path was taken. "auto" takes the structured RNN step
    where the model is of that family and cuts the graph otherwise, with the cached
    step where its decoder is recognised; a cut must also prove causal on the Keras
    model. Raises ModelShapeError (both reasons, for "auto") when neither applies."""
    from family.errors import ModelShapeError
    from family.prefix import check_causal, locate_prefix
    from family.structure import check_vocabulary, locate

    refusal = None
    if step not in ("prefix", "cached"):
        try:
            parts = locate(model)
        except ModelShapeError as e:
            if step == "structured":
                raise
            refusal = e
        else:
            check_vocabulary(parts, vocab)
            return parts, "a model of the RNN family: its cells rebuilt as one step"
    try:
        try:
            parts = locate_prefix(model, vocab)
            check_causal(parts, vocab)
        except (ModelShapeError, VocabularyError):
            raise
        except Exception as e:  # the model's own layers, run on probe inputs
            raise ModelShapeError(f"the model fails when its layers run on the vocabulary's "
                                  f"ids: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
                                  ) from None
    except ModelShapeError as e:
        if refusal is None:
            raise
        raise ModelShapeError(f"{refusal}. Nor does the prefix step apply: {e}") from None
    why = (f"asked for (--step {step})" if refusal is None else
           f"no structured step ({_found(refusal)})")
    log(f"the graph cut after {len(parts.encoder_nodes)} encoder call(s), "
        f"{len(parts.crossing)} tensor(s) crossing, a {parts.prefix_length}-token prefix; "
        "proven causal", flush=True)
    if step == "prefix":
        return parts, why
    from family.cached import locate_cached

    try:
        cached = locate_cached(parts)
    except ModelShapeError as e:
        if step == "cached":
            raise
        log(f"prefix step (O(t^2) a sentence), not cached: {_found(e)}", flush=True)
        return parts, f"{why}; not cached ({_found(e)})"
    log(f"cached step: {len(cached.caches)} self-attention key/value cache(s) as state, "
        f"{len(cached.crosses)} cross-attention(s) computed once", flush=True)
    return cached, why


def _found(error: Exception) -> str:
    """What a step path's refusal found, without the long list of what it expects."""
    text = str(error)
    return ("found " + text.rsplit("; found ", 1)[1] if "; found " in text else text)[:240]


def _calibrate(g: _Graphs, vocab: Vocabulary, texts, targets, calibration, log):
    """The calibration set: the given one, else the check texts (recorded as such)."""
    from .calibration import build_calibration

    if calibration is None:
        calibration = (texts, targets, "the check texts (the inputs the parity checks "
                                       "decode)")
    cal_texts, cal_targets, where = calibration
    log(f"calibrating the full-integer graphs on {len(cal_texts)} inputs ({where})",
        flush=True)
    return build_calibration(g.builder, vocab, list(cal_texts), cal_targets, where)


def write_metadata(directory: Path, metadata: dict) -> None:
    """Write ``metadata`` as ``directory``'s ``artifact.json`` (UTF-8 JSON), in place."""
    (directory / METADATA_FILE).write_text(
        json.dumps(metadata, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def run(args) -> int:
    """Export as ``python -m export``'s parsed ``args`` ask and print what was written;
    returns 0. Raises VocabularyError when no vocabulary is found, and whatever the
    export raises."""
    model_path = Path(args.model)
    vocab_path = Path(args.vocab) if args.vocab else model_path.parent / "vocab.json"
    if not args.vocab and not vocab_path.exists():
        raise VocabularyError(f"no vocabulary: {vocab_path} does not exist; pass --vocab FILE "
                              "(format in docs/training.md)")
    vocab = Vocabulary.load(vocab_path)
    out = Path(args.out) if args.out else model_path.parent / "artifact"
    texts_path = Path(args.check_texts) if args.check_texts else None
    if texts_path is None and (model_path.parent / HELDOUT_FILE).exists():
        texts_path = model_path.parent / HELDOUT_FILE
    texts, targets = check_pairs(vocab, texts_path, args.check_samples)
    calibration = None
    if set(STATIC) & set(args.quantize):
        calibration = calibration_pairs(vocab, texts_path, texts, args.calibration_inputs)
    result = export_artifact(model_path, vocab, out, args.formats, args.quantize, args.opset,
                             texts, args.force, fused=not args.no_fused,
                             tflite_encoder=args.tflite_encoder, targets=targets,
                             ort=args.ort, calibration=calibration, strict=args.strict,
                             step=args.step)
    sizes = ", ".join(f"{g['file']} {g['bytes'] / 1024:.0f} KiB"
                      for g in result.metadata["graphs"])
    print(f"wrote {out}/ ({sizes}, {METADATA_FILE})")
    for variant, path in result.metadata.get("greedy_path", {}).items():
        t = result.metadata["greedy_timing_us"][variant]
        print(f"greedy on {variant}: {path} path by default (per sentence, batch 1: step "
              f"loop {t['step']:.0f} µs, fused graph {t['fused']:.0f} µs)")
    return 0
