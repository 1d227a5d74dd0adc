"""The artifact's metadata file (``artifact.json``), read into a typed, frozen config.

An artifact directory holds model files plus this one file, which records the
vocabulary and encoding rule, every graph's file, tensor names and sha256, the
versions that produced it, and export's parity results.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import embedded
from .errors import ArtifactError, VocabularyError
from .vocab import Vocabulary

ARTIFACT_FORMAT = "seq2seq-artifact"
ARTIFACT_VERSION = 4
# Version 1 (the one-layer LSTM, state "h" and "c" of latent_dim), 2 (no
# "attention" field) and 3 (float32 state only, no "memory" or "step") still load.
# Export writes 3 where the artifact needs nothing of 4, so runtimes that read 3 read it.
READABLE_VERSIONS = (1, 2, 3, 4)
METADATA_FILE = "artifact.json"
GRAPH_NAMES = ("encoder", "decoder_step", "greedy")
# Fixed tensor names; the decoder state's names come from the metadata ("state").
ENCODER_INPUTS = ("input_ids",)
GREEDY_INPUTS = ("input_ids",)
GREEDY_OUTPUTS = ("output_ids", "lengths")
GREEDY_PATHS = ("step", "fused")
# The file formats an artifact may hold, and the backend that runs each: ORT files
# (ONNX Runtime's own format, for its mobile and reduced builds) run on onnx.
FILE_FORMATS = {"onnx": "onnx", "ort": "onnx", "tflite": "tflite"}
# Attention models: tensors the encoder makes and every step reads unchanged, and
# the step's extra output, the weights over the input steps [batch, steps].
MEMORY = "memory"  # [batch, steps, units]: the encoder's outputs
MEMORY_MASK = "memory_mask"  # [batch, steps] float32, 1.0 on real (unpadded) steps
ATTENTION = "attention"
ATTENTION_KINDS = ("luong", "bahdanau")
# The dtypes a state or memory tensor may have.
DTYPES = ("float32", "int32")
# How the step graph was made: from the recurrent cells ("structured"), by cutting
# the model's graph and stepping a fixed-length prefix ("prefix"), or from a
# recognised Transformer decoder stack carrying its key/value caches ("cached").
STEP_KINDS = ("structured", "prefix", "cached")
# The steps whose encoder hands the step graph a memory of its own (listed).
CUT_STEPS = ("prefix", "cached")


@dataclass(frozen=True)
class StateTensor:
    """One tensor of the decoder state, ``[batch, units]``: per decoder layer of an
    RNN, ``h`` (and ``c`` for an LSTM), float32; for a prefix step, ``prefix`` (the
    tokens so far) and ``position``, int32. The encoder graph returns the decoder's
    initial state; the step graph takes it and returns it as ``NAME_out``."""
    name: str
    units: int
    dtype: str = "float32"

    def to_dict(self) -> dict:
        """The entry of ``artifact.json``'s ``state`` list."""
        out = {"name": self.name, "units": self.units}
        if self.dtype != "float32":
            out["dtype"] = self.dtype
        return out

    def contract(self) -> list:
        """The entry of the contract digest's ``state`` (a float32 one as version 3 had it)."""
        return [self.name, self.units] + ([self.dtype] if self.dtype != "float32" else [])


@dataclass(frozen=True)
class MemoryTensor:
    """A tensor the encoder makes and every step reads unchanged (a prefix step's
    encoder outputs and their mask): its name, the shape of one row and dtype."""
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        """The entry of ``artifact.json``'s ``memory`` list."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class AttentionSpec:
    """The decoder attends over the encoder's outputs (``memory``)."""
    kind: str  # "luong" (dot product) or "bahdanau" (additive)
    memory_units: int  # width of each encoder output
    # The encoder skips padding (Embedding mask_zero): the graphs pass memory_mask.
    masked: bool

    @property
    def memory_names(self) -> tuple[str, ...]:
        """The tensors the encoder makes and every step reads unchanged."""
        return (MEMORY, MEMORY_MASK) if self.masked else (MEMORY,)

    def to_dict(self) -> dict:
        """``artifact.json``'s ``attention`` field."""
        return {"kind": self.kind, "memory_units": self.memory_units, "masked": self.masked}


def graph_io(state: tuple[StateTensor, ...], attention: AttentionSpec | None = None,
             memory_tensors: tuple[MemoryTensor, ...] = ()
             ) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Input and output tensor names of each graph, for a decoder state (and
    memory: the encoder also returns it, the step also takes it; an attention
    model's by its ``AttentionSpec``, a prefix step's listed)."""
    names = tuple(s.name for s in state)
    memory = attention.memory_names if attention else tuple(m.name for m in memory_tensors)
    weights = (ATTENTION,) if attention else ()
    return {"encoder": (ENCODER_INPUTS, names + memory),
            "decoder_step": (("token",) + names + memory,
                             ("probs",) + tuple(f"{n}_out" for n in names) + ("next_token",)
                             + weights),
            "greedy": (GREEDY_INPUTS, GREEDY_OUTPUTS)}


def contract_digest(vocabulary: Vocabulary, graph: str, inputs, outputs,
                    state: tuple[StateTensor, ...], attention: AttentionSpec | None,
                    memory: tuple[MemoryTensor, ...] = ()) -> str:
    """sha256 of what a graph file must agree on with ``artifact.json``: the
    vocabulary, the graph's tensor names, the decoder state and memory. Export
    embeds it in each model file; the runtime recomputes it from the metadata.
    (Fields a version-3 artifact lacks are left out when empty, so its digests hold.)"""
    contract = {"vocabulary": vocabulary.to_dict(), "graph": graph, "inputs": list(inputs),
                "outputs": list(outputs), "state": [s.contract() for s in state],
                "attention": None if attention is None else [
                    attention.kind, attention.memory_units, attention.masked]}
    if memory:
        contract["memory"] = [[m.name, list(m.shape), m.dtype] for m in memory]
    text = json.dumps(contract, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GraphFile:
    """One model file of the artifact, as ``artifact.json``'s ``graphs`` list records it."""
    name: str  # "encoder", "decoder_step" or "greedy"
    format: str  # "onnx", "ort" or "tflite"
    precision: str  # "fp32", "int8", "fp16", "int8-full", "int8-io" or "int16x8"
    file: str  # relative to the artifact directory
    sha256: str
    bytes: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # TFLite: "xnnpack" (LiteRT's default CPU delegate) or "builtin" (LiteRT's own
    # kernels, for a file export found XNNPACK cannot prepare).
    kernels: str = "xnnpack"
    # int8-io: the inputs and outputs that cross the file's boundary as int8, each
    # ``(name, scale, zero_point)`` (real = scale * (q - zero_point)).
    quantized: tuple[tuple[str, float, int], ...] = ()

    def to_dict(self) -> dict:
        """The entry of ``artifact.json``'s ``graphs`` list (what ``load_config`` reads)."""
        out = {"name": self.name, "format": self.format, "precision": self.precision,
               "file": self.file, "sha256": self.sha256, "bytes": self.bytes,
               "inputs": list(self.inputs), "outputs": list(self.outputs)}
        if self.kernels != "xnnpack":
            out["kernels"] = self.kernels
        if self.quantized:
            out["int8_io"] = {n: {"scale": s, "zero_point": z} for n, s, z in self.quantized}
        return out


KERNELS = ("xnnpack", "builtin")


def _quantized(entry: dict) -> tuple[tuple[str, float, int], ...]:
    """A graph entry's ``int8_io`` (``{name: {scale, zero_point}}``), checked: only an
    int8-io graph has it, and it must; names among the graph's inputs and outputs,
    scales positive and finite, zero points int8."""
    given = entry.get("int8_io")
    file = entry.get("file")
    if (given is not None) != (entry.get("precision") == "int8-io"):
        raise ValueError(f"graph {file!r}: int8_io is recorded for int8-io graphs only, "
                         "and must be for them")
    if given is None:
        return ()
    if not isinstance(given, dict) or not given:
        raise ValueError(f"graph {file!r}: int8_io must be a non-empty object")
    names = set(entry.get("inputs", [])) | set(entry.get("outputs", []))
    out = []
    for name, q in given.items():
        if name not in names:
            raise ValueError(f"graph {file!r}: int8_io names {name!r}, not one of its "
                             "inputs or outputs")
        scale = q.get("scale") if isinstance(q, dict) else None
        zero = q.get("zero_point") if isinstance(q, dict) else None
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or \
                not 0 < scale < float("inf"):
            raise ValueError(f"graph {file!r}: int8_io {name!r} scale must be a positive "
                             f"number, got {scale!r}")
        if isinstance(zero, bool) or not isinstance(zero, int) or not -128 <= zero <= 127:
            raise ValueError(f"graph {file!r}: int8_io {name!r} zero_point must be an "
                             f"integer from -128 to 127, got {zero!r}")
        out.append((name, float(scale), zero))
    return tuple(out)


def _kernels(entry: dict) -> str:
    kernels = entry.get("kernels", KERNELS[0])
    if kernels not in KERNELS:
        raise ValueError(f"graph {entry.get('file')!r}: kernels must be one of {KERNELS}, "
                         f"got {kernels!r}")
    return kernels


@dataclass(frozen=True)
class ArtifactConfig:
    """``artifact.json`` read and validated (by ``load_config``), with its directory."""
    directory: Path
    version: int
    vocabulary: Vocabulary
    # The decoder state the graphs pass between calls, in order.
    state: tuple[StateTensor, ...]
    # What the model is (cell, layers, inputs), as export recorded it; for people.
    architecture: dict
    # Attention over the encoder's outputs, or None.
    attention: AttentionSpec | None
    graphs: tuple[GraphFile, ...]
    versions: dict
    parity: dict
    # Per "format/precision", the greedy path export measured as faster: "step" or "fused".
    greedy_path: dict
    # A prefix or cached step's memory (an attention model's is described by
    # ``attention``).
    memory: tuple[MemoryTensor, ...] = ()
    # How the step graph was made: "structured", "prefix" or "cached" (STEP_KINDS).
    step_kind: str = "structured"

    def has_graph(self, fmt: str, precision: str, name: str) -> bool:
        """The artifact lists graph ``name`` in format ``fmt`` at ``precision``."""
        return any((g.format, g.precision, g.name) == (fmt, precision, name)
                   for g in self.graphs)

    def graph(self, fmt: str, precision: str, name: str) -> GraphFile:
        """Graph ``name`` in format ``fmt`` at ``precision``; raises ArtifactError, naming the
        variants there are, when the artifact has none."""
        for g in self.graphs:
            if (g.format, g.precision, g.name) == (fmt, precision, name):
                return g
        have = sorted({f"{g.format}/{g.precision}" for g in self.graphs})
        raise ArtifactError(f"{self.directory}: no {fmt} {precision} {name} graph "
                            f"(the artifact has: {', '.join(have) or 'none'})")

    def variants(self) -> list[tuple[str, str]]:
        """The ``(format, precision)`` pairs that have at least one graph, sorted."""
        return sorted({(g.format, g.precision) for g in self.graphs})

    def path(self, graph: GraphFile) -> Path:
        """Where ``graph``'s file is: in the artifact directory."""
        return self.directory / graph.file


def sha256_file(path: Path) -> str:
    """sha256 (hex) of a file's contents, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _safe_relative(directory: Path, name: object) -> str:
    """A graph file must be a plain file name inside the artifact directory."""
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"{directory / METADATA_FILE}: graph file name {name!r} is invalid")
    p = PurePosixPath(name)
    if p.is_absolute() or len(p.parts) != 1 or name in (".", "..") or "\\" in name:
        raise ArtifactError(f"{directory / METADATA_FILE}: graph file {name!r} is outside "
                            "the artifact directory")
    return name


def _memory(entries) -> tuple[MemoryTensor, ...]:
    """artifact.json's ``memory`` list, each entry checked for its types (a bad one
    raises ValueError, which load_config reports)."""
    if entries is None:
        return ()
    if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
        raise ValueError(f"'memory' must be a list of objects, got {entries!r}"[:200])
    out = []
    for m in entries:
        name, shape, dtype = m.get("name"), m.get("shape"), m.get("dtype")
        if not (isinstance(name, str) and isinstance(dtype, str) and isinstance(shape, list)
                and all(type(x) is int for x in shape)):
            raise ValueError(f"memory entry {m!r} needs a name, a dtype and a shape of "
                             "integers"[:200])
        out.append(MemoryTensor(name, tuple(shape), dtype))
    return tuple(out)


def load_config(directory: str | Path, unproven: bool = False) -> ArtifactConfig:
    """Read and validate ``artifact.json``; raise ArtifactError naming what is wrong.
    An artifact whose export stopped before its parity proof passed is refused;
    ``unproven=True`` is for export itself, which loads it to run that proof."""
    directory = Path(directory)
    meta = directory / METADATA_FILE
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not an artifact directory (not found)")
    try:
        d = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{meta}: metadata file missing; is this an export "
                            "directory?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{meta}: corrupt metadata ({e})") from None
    except RecursionError:
        raise ArtifactError(f"{meta}: corrupt metadata (nested too deeply)") from None
    if not isinstance(d, dict) or d.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{meta}: not a {ARTIFACT_FORMAT} metadata file")
    parity = d.get("parity")
    if not unproven and isinstance(parity, dict) and parity.get("passed") is False:
        raise ArtifactError(f"{meta}: its export did not finish proving parity (parity."
                            "passed is false: killed or failed part way); re-export it")
    if d.get("version") not in READABLE_VERSIONS:
        raise ArtifactError(f"{meta}: artifact version {d.get('version')!r}, but this runtime "
                            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}; "
                            "re-export the model with this toolkit's python -m export")
    try:
        vocab = Vocabulary.from_dict(d["vocabulary"])
        if d["version"] == 1:
            latent = int(d["latent_dim"])
            state = (StateTensor("h", latent), StateTensor("c", latent))
            architecture = {"cell": "lstm", "layers": 1, "units": latent}
        else:
            state = tuple(StateTensor(str(s["name"]), int(s["units"]),
                                      str(s.get("dtype", "float32"))) for s in d["state"])
            architecture = dict(d["architecture"])
        memory = _memory(d.get("memory"))
        step = d.get("step")
        if step is not None and not isinstance(step, dict):
            raise ValueError(f"'step' must be an object, got {step!r}")
        step_kind = (step or {}).get("kind", "structured")
        graphs = tuple(
            GraphFile(name=g["name"], format=g["format"], precision=g["precision"],
                      file=_safe_relative(directory, g["file"]), sha256=g["sha256"],
                      bytes=int(g["bytes"]), inputs=tuple(g["inputs"]),
                      outputs=tuple(g["outputs"]), kernels=_kernels(g),
                      quantized=_quantized(g))
            for g in d["graphs"])
        greedy_path = dict(d.get("greedy_path") or {})
        attention = None
        if d.get("attention") is not None:
            a = d["attention"]
            attention = AttentionSpec(str(a["kind"]), int(a["memory_units"]),
                                      bool(a["masked"]))
    except VocabularyError as e:
        raise ArtifactError(f"{meta}: bad vocabulary: {e}") from None
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ArtifactError(f"{meta}: field missing or malformed: {e!r}") from None
    names = [s.name for s in state]
    every = names + [m.name for m in memory]
    if not state or len(set(every)) != len(every) or not all(
            n.isidentifier() and s.units > 0 and s.dtype in DTYPES
            for n, s in zip(names, state)):
        raise ArtifactError(f"{meta}: the decoder state {names} must be distinct names "
                            f"with positive units and a dtype among {DTYPES}")
    if not all(m.name.isidentifier() and m.dtype in DTYPES and all(x > 0 for x in m.shape)
               for m in memory):
        raise ArtifactError(f"{meta}: memory tensors must have names, positive shapes and "
                            f"a dtype among {DTYPES}: {[m.to_dict() for m in memory]}")
    if step_kind not in STEP_KINDS or (step_kind in CUT_STEPS) != bool(memory) or (
            memory and attention is not None):
        raise ArtifactError(f"{meta}: step kind {step_kind!r} must be one of {STEP_KINDS}; a "
                            "prefix or cached step lists its memory, and only it (not "
                            "attention)")
    if attention is not None and (attention.kind not in ATTENTION_KINDS
                                  or attention.memory_units < 1):
        raise ArtifactError(f"{meta}: attention kind must be one of {ATTENTION_KINDS} with "
                            f"positive memory_units, got {attention}")
    io = graph_io(state, attention, memory)
    for g in graphs:
        if g.name not in GRAPH_NAMES:
            raise ArtifactError(f"{meta}: unknown graph {g.name!r}")
        if g.format not in FILE_FORMATS:
            raise ArtifactError(f"{meta}: {g.file} has unknown format {g.format!r}")
        if (g.inputs, g.outputs) != io[g.name]:
            raise ArtifactError(f"{meta}: {g.file} lists inputs {list(g.inputs)} and outputs "
                                f"{list(g.outputs)}; the decoder state {names} needs "
                                f"{list(io[g.name][0])} and {list(io[g.name][1])}")
    if any(v not in GREEDY_PATHS for v in greedy_path.values()):
        raise ArtifactError(f"{meta}: greedy_path values must be one of {GREEDY_PATHS}")
    return ArtifactConfig(directory=directory, version=d["version"], vocabulary=vocab, state=state,
                          architecture=architecture, attention=attention, graphs=graphs,
                          versions=dict(d.get("versions", {})),
                          parity=dict(d.get("parity", {})), greedy_path=greedy_path,
                          memory=memory, step_kind=step_kind)


def read_graph(config: ArtifactConfig, graph: GraphFile, verify: bool = True) -> bytes:
    """The graph file's bytes, read once. It must be a regular file (not a link) inside
    the directory; with ``verify``, its size and sha256 must match the metadata's."""
    path = config.path(graph)
    if path.is_symlink():
        raise ArtifactError(f"{path}: is a symbolic link; artifacts hold plain files only")
    if not path.is_file():
        raise ArtifactError(f"{path}: model file missing")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror})") from None
    if verify:
        if len(data) != graph.bytes:
            raise ArtifactError(f"{path}: {len(data)} bytes, but the metadata records "
                                f"{graph.bytes} (truncated or replaced?)")
        if hashlib.sha256(data).hexdigest() != graph.sha256:
            raise ArtifactError(f"{path}: sha256 differs from the metadata's (corrupt or "
                                "tampered with)")
    check_contract(config, graph, data)
    return data


def check_contract(config: ArtifactConfig, graph: GraphFile, data: bytes) -> None:
    """The contract digest inside the file must match ``artifact.json``'s vocabulary,
    tensor names and state (version 3 artifacts carry one in every file)."""
    path = config.path(graph)
    try:
        found = embedded.contract_of(data, graph.format)
    except embedded.MalformedModel as e:
        raise ArtifactError(f"{path}: not a readable {graph.format} file ({e})") from None
    if found is None:
        if config.version >= 3:
            raise ArtifactError(f"{path}: carries no contract digest; re-export it with "
                                "this toolkit")
        return
    want = contract_digest(config.vocabulary, graph.name, graph.inputs, graph.outputs,
                           config.state, config.attention, config.memory)
    if found != want:
        raise ArtifactError(f"{path}: {METADATA_FILE} does not match this model file: its "
                            "vocabulary, tensor names or decoder state were changed after "
                            "export (the digest inside the file differs); re-export, or "
                            "restore the original metadata")
