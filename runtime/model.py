"""``runtime.load``: an exported artifact as a text-to-text model."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import decoding
from .decoding import DecodeOptions
from .alignment import AttentionMap, attention_map
from .backends import BACKENDS, DEVICES, Backend, create
from .errors import ArtifactError, BackendError, InputError
from .metadata import FILE_FORMATS, GREEDY_PATHS, ArtifactConfig, load_config, read_graph
from .vocab import Vocabulary

# int8-full: full-integer graphs (float at the boundary); int8-io: full-integer TFLite
# with int8 inputs and outputs, quantized and dequantized by the backend.
# int16x8: int16 activations, int8 weights (TFLite).
PRECISIONS = ("fp32", "int8", "fp16", "int8-full", "int8-io", "int16x8")


class Seq2SeqModel:
    """A loaded artifact. ``translate`` and ``stream`` are safe to call from many
    threads at once (each call keeps its own state)."""

    def __init__(self, config: ArtifactConfig, backend: Backend, precision: str,
                 fused: bool = False):
        self.config = config
        self.backend = backend
        self.precision = precision
        # Greedy decoding runs the fused one-call graph instead of the step loop.
        self.fused = fused
        self._greedy_options = decoding.DecodeOptions().validate(
            config.vocabulary.max_output_length)

    @property
    def vocabulary(self) -> Vocabulary:
        """The artifact's vocabulary and encoding rule."""
        return self.config.vocabulary

    @property
    def has_attention(self) -> bool:
        """The model attends over the encoder's outputs (its step returns weights)."""
        return self.config.attention is not None

    # -- high level -----------------------------------------------------
    def translate(self, texts: Sequence[str], beam_size: int = 1,
                  max_length: int | None = None, *, length_penalty: float = 1.0,
                  temperature: float = 0.0, top_k: int = 0, seed: int | None = None,
                  unknown: str = "error", too_long: str = "error",
                  batch_size: int = 64, return_attention: bool = False) -> list:
        """Decode each text. Greedy by default; ``beam_size > 1`` runs beam search;
        ``temperature > 0`` samples (with ``top_k`` and ``seed``).

        ``unknown="skip"`` drops characters (or words) outside the vocabulary instead
        of raising InputError, ``unknown="unk"`` maps them to the vocabulary's
        unknown token; ``too_long="truncate"`` cuts inputs to the model's
        maximum instead of raising. An empty list gives an empty list.

        ``return_attention=True`` (attention models, greedy decoding) returns an
        ``AttentionMap`` per text instead of a string: the output, its tokens and
        each one's weights over the input tokens (the step loop runs, since the
        fused graph returns no weights).
        """
        vocab = self.config.vocabulary
        if (type(beam_size) is int and beam_size == 1 and max_length is None  # the hot path
                and temperature == 0.0 and type(temperature) in (int, float) and top_k == 0
                and type(top_k) is int and length_penalty == 1.0 and seed is None
                and type(length_penalty) in (int, float)):
            options = self._greedy_options
        else:
            options = decoding.DecodeOptions(beam_size, max_length, length_penalty,
                                             temperature, top_k, seed).validate(
                                                 vocab.max_output_length)
        if type(batch_size) is not int or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if return_attention and not self.has_attention:
            raise InputError(f"{self.config.directory}: this model has no attention, so "
                             "return_attention=True has no weights to return")
        if return_attention and (options.beam_size > 1 or options.temperature > 0):
            raise InputError("return_attention=True works with greedy decoding only")
        ids = vocab.encode_inputs(texts, unknown, too_long)
        steps = options.steps(vocab.max_output_length)
        if return_attention:
            maps: list[AttentionMap] = []
            for lo in range(0, len(ids), batch_size):
                chunk = ids[lo:lo + batch_size]
                found = decoding.greedy(self.backend, chunk, vocab.start_id, vocab.end_id,
                                        steps, attention=True)
                maps += [attention_map(vocab, row, out, w) for row, (out, w) in zip(chunk, found)]
            return maps
        results: list[list[int]] = []
        # Only sampling needs a generator (making one costs more than a decode step).
        rng = np.random.default_rng(options.seed) if options.temperature > 0 else None
        for lo in range(0, len(ids), batch_size):
            chunk = ids[lo:lo + batch_size]
            if options.temperature > 0:
                results += decoding.sample(self.backend, chunk, vocab.start_id, vocab.end_id,
                                           steps, options.temperature, options.top_k, rng)
            elif options.beam_size > 1:
                results += decoding.beam_search(self.backend, chunk, vocab.start_id,
                                                vocab.end_id, steps, options.beam_size,
                                                options.length_penalty)
            elif self.fused:
                results += decoding.fused_greedy(self.backend, chunk, steps)
            else:
                results += decoding.greedy(self.backend, chunk, vocab.start_id, vocab.end_id,
                                           steps)
        return [vocab.join_target(seq) for seq in results]

    def stream(self, text: str, max_length: int | None = None, *,
               unknown: str = "error", too_long: str = "error") -> Iterator[str]:
        """Greedy decode of one text, yielding each token as it is decoded (words after
        the first come with their separating space, so the pieces join to the
        ``translate`` string)."""
        if not isinstance(text, str):
            raise InputError(f"stream() takes one string, got {type(text).__name__}")
        options = decoding.DecodeOptions(max_length=max_length).validate(
            self.vocabulary.max_output_length)
        vocab = self.vocabulary
        ids = vocab.encode_inputs([text], unknown, too_long)
        separator = ""
        for token in decoding.stream_greedy(self.backend, ids, vocab.start_id, vocab.end_id,
                                            options.steps(vocab.max_output_length)):
            yield separator + vocab.target_tokens[token]
            separator = vocab.separator

    def score(self, texts: Sequence[str], outputs: Sequence[str], *,
              length_penalty: float = 1.0, unknown: str = "error",
              too_long: str = "error") -> np.ndarray:
        """The score beam search ranks by, of each ``outputs[i]`` as the answer to
        ``texts[i]``: sum(log p) / length ** length_penalty, teacher-forced through
        the step graph (length counts the end token, unless the output fills the
        model's maximum). Useful for rescoring and for judging a decode."""
        if isinstance(texts, str) or isinstance(outputs, str) or len(texts) != len(outputs):
            raise InputError("score() takes two lists of strings of the same length")
        DecodeOptions(length_penalty=length_penalty).validate(
            self.vocabulary.max_output_length)
        if not texts:
            return np.zeros(0)
        vocab = self.vocabulary
        ids = vocab.encode_inputs(texts, unknown, too_long)
        steps = vocab.max_output_length
        targets = []
        for out in outputs:
            if not isinstance(out, str):
                raise InputError(f"score() outputs must be strings, got {type(out).__name__}")
            seq = vocab.encode_target(out)[:-1]
            if len(seq) > steps:
                raise InputError(f"output {out[:40]!r} is longer than the model's maximum "
                                 f"of {steps} tokens")
            targets.append(seq)
        sums, lengths = decoding.sequence_scores(self.backend, ids, targets, vocab.start_id,
                                                 vocab.end_id, steps)
        return sums / lengths ** float(length_penalty)

    # -- low level, for apps that write their own loop ------------------
    def encode(self, texts: Sequence[str], unknown: str = "error", too_long: str = "error"):
        """The decoder's initial state after the encoder: a tuple of arrays, one row per
        text, named by ``config.state`` (for a one-layer LSTM: ``h0``, ``c0``), then
        for an attention model the memory (and ``memory_mask``)."""
        return self.backend.encode(self.vocabulary.encode_inputs(texts, unknown, too_long))

    def step(self, tokens, state, return_attention: bool = False):
        """One decoder step: token ids ``[batch]`` and the state ->
        ``(probs, state, argmax)``, and the attention weights ``[batch, input steps]``
        as a fourth item with ``return_attention=True`` (attention models)."""
        if return_attention and not self.has_attention:
            raise InputError("this model has no attention, so there are no weights to return")
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or not len(tokens) or (
                tokens.dtype != np.int32 and not np.issubdtype(tokens.dtype, np.integer)):
            raise InputError(f"step() takes a non-empty 1-D array of token ids, got "
                             f"{tokens.dtype} of shape {tokens.shape}")
        ids = tokens.tolist()  # min/max of a list: numpy's reductions cost more per call
        low, high, size = min(ids), max(ids), self.vocabulary.target_size
        if low < 0 or high >= size:
            raise InputError(f"step(): token ids must be in [0, {size}), got {low}..{high}")
        state = self._checked_state(len(tokens), state)
        probs, state, nxt, weights = self.backend.step(tokens.astype(np.int32, copy=False),
                                                       state)
        return (probs, state, nxt, weights) if return_attention else (probs, state, nxt)

    def _checked_state(self, batch: int, state) -> tuple:
        """The state as ``encode`` returns it, or an InputError naming the tensor
        that is not: an engine's own message would name none of it."""
        c = self.config
        # (name, dtype, shape of one row or None where only the rank is fixed)
        specs = [(s.name, s.dtype, (s.units,)) for s in c.state]
        if c.attention:  # encoder outputs over every (padded) input step, and the mask
            steps = self.vocabulary.max_input_length
            specs += [(n, "float32", row) for n, row in zip(
                c.attention.memory_names, ((steps, c.attention.memory_units), (steps,)))]
        else:
            specs += [(m.name, m.dtype, tuple(m.shape)) for m in c.memory]
        if not isinstance(state, (tuple, list)):
            raise InputError(f"step() takes the state as the tuple encode() returns, got "
                             f"{type(state).__name__}")
        state = tuple(state)
        if len(state) != len(specs):
            raise InputError(f"step() takes the {len(specs)} state tensors that encode() "
                             f"returns ({', '.join(n for n, _, _ in specs)}), got {len(state)}")
        for value, (name, dtype, row) in zip(state, specs):
            if not isinstance(value, np.ndarray) or value.dtype != dtype or (
                    value.shape != (batch, *row)):
                got = (f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
                       else type(value).__name__)
                want = f"[{', '.join(map(str, (batch, *row)))}]"
                raise InputError(f"state tensor {name!r} must be a {dtype} array of shape "
                                 f"{want}, as encode() returns it; got {got}")
        return state


def load(directory: str | Path, backend: str = "onnx", device: str = "cpu",
         threads: int = 1, precision: str = "fp32", verify: bool = True,
         greedy: str = "auto", file_format: str | None = None, *,
         unproven: bool = False) -> Seq2SeqModel:
    """Load an artifact written by ``python -m export``.

    ``backend``: "onnx" (ONNX Runtime) or "tflite" (LiteRT); ``device``: "cpu" or
    "cuda" (onnx only; an error, never a silent CPU fallback, where CUDA is not
    available); ``precision``: "fp32", or a quantized variant the artifact has.
    ``verify=False`` skips checking each model file's size and sha256 against the
    metadata (faster cold start for files you already trust); links and files
    outside the directory are refused either way. ``greedy``: "fused" runs
    greedy decoding as one call of the fused graph, "step" as a Python loop over
    the step graph, "auto" takes whichever export measured as faster for this
    backend (the step loop where the artifact has no fused graph). Beam search,
    sampling and streaming always use the step loop. ``unproven=True`` loads an
    artifact whose parity proof has not passed (export's own checks use it).
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of "
                         f"{', '.join(PRECISIONS)}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    if greedy not in GREEDY_PATHS + ("auto",):
        raise InputError(f"greedy must be auto, step or fused, got {greedy!r}")
    fmt = file_format or backend
    if FILE_FORMATS.get(fmt) != backend:
        raise InputError(f"file_format {fmt!r} does not run on the {backend} backend; "
                         "onnx runs onnx or ort files, tflite runs tflite files")
    config = load_config(directory, unproven)
    has_fused = config.has_graph(fmt, precision, "greedy")
    if greedy == "fused" and not has_fused:
        raise ArtifactError(f"{config.directory}: no fused {fmt} {precision} greedy "
                            "graph; re-export, or use greedy='step'")
    fused = greedy == "fused" or (greedy == "auto" and has_fused and
                                  config.greedy_path.get(f"{fmt}/{precision}") == "fused")
    blobs = {}
    for name in ("encoder", "decoder_step") + (("greedy",) if fused else ()):
        graph = config.graph(fmt, precision, name)
        blobs[name] = (read_graph(config, graph, verify), str(config.path(graph)),
                       graph.inputs, graph.outputs)
    # ONNX int8 graphs quantize activations per batch: run them a row at a time.
    builtin = frozenset(name for name in blobs
                        if config.graph(fmt, precision, name).kernels == "builtin")
    quantized = {name: config.graph(fmt, precision, name).quantized for name in blobs}
    impl = create(backend, blobs, device, threads,
                  per_row=backend == "onnx" and precision == "int8", builtin=builtin,
                  quantized={k: v for k, v in quantized.items() if v})
    return Seq2SeqModel(config, impl, precision, fused)
