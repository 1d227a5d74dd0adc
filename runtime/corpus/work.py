"""What every worker does, on either engine: hold one loaded model and translate
a shard's lines, turning a line that cannot be translated into an empty output
and a reason instead of failing the shard."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError


@dataclass(frozen=True)
class CorpusOptions:
    """How every worker loads the model and decodes its lines."""
    backend: str = "onnx"  # "onnx" or "tflite"
    precision: str = "fp32"  # or a quantized variant the artifact has
    threads: int = 1  # backend threads per worker
    batch_size: int = 64  # texts per decode call
    beam_size: int = 1  # 1: greedy
    max_length: int | None = None  # most output tokens; None: the model's maximum
    # Per line: "error" rejects a line with units outside the vocabulary; "skip"
    # drops those units; "unk" maps them to the unknown token.
    unknown: str = "error"
    too_long: str = "error"  # "error" rejects a line that is too long; "truncate" cuts it
    # Beam search ranks finished outputs by sum(log p) / length ** length_penalty.
    length_penalty: float = 1.0

    def as_dict(self) -> dict:
        """The options as a plain dict (for the manifest and for Ray actors)."""
        return asdict(self)


class ShardTranslator:
    """One loaded model; called with a shard's texts, returns (outputs, reasons):
    the reason is None for a translated line, else why it was rejected (its
    output is then empty)."""

    def __init__(self, artifact: str, options: CorpusOptions):
        import runtime

        self.options = options
        self.model = runtime.load(artifact, backend=options.backend,
                                  precision=options.precision, threads=options.threads)

    def __call__(self, texts: list[str]) -> tuple[list[str], list[str | None]]:
        o = self.options
        vocab = self.model.vocabulary
        reasons: list[str | None] = [None] * len(texts)
        good = []
        for i, text in enumerate(texts):
            try:
                vocab.encode_inputs([text], o.unknown, o.too_long)
                good.append(i)
            except InputError as e:
                reasons[i] = str(e).replace("input 0 ", "the line ", 1)
        outputs = [""] * len(texts)
        if good:
            done = self.model.translate([texts[i] for i in good], o.beam_size, o.max_length,
                                        length_penalty=o.length_penalty,
                                        unknown=o.unknown, too_long=o.too_long,
                                        batch_size=o.batch_size)
            for i, out in zip(good, done):
                outputs[i] = out
        return outputs, reasons
