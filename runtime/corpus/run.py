"""``translate_corpus``: plan the shards, run them on an engine, assemble the output."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, InputError
from ..metadata import METADATA_FILE
from .engines import ShardDone, run_local, run_ray
from ..decoding import DecodeOptions
from .shards import OutputLock, ShardStore, fingerprint
from .sources import read_inputs
from .work import CorpusOptions, ShardTranslator

ENGINES = ("local", "ray")


@dataclass
class Summary:
    """What ``translate_corpus`` did: ``lines`` translated by this run, ``rejects`` in the
    whole output, the engine's wall-clock ``seconds``, and per-worker totals."""
    lines: int = 0
    rejects: int = 0
    seconds: float = 0.0
    shards: int = 0
    resumed_shards: int = 0  # done by an earlier run, not redone
    # Per worker: lines and seconds spent on them.
    workers: dict = field(default_factory=dict)

    @property
    def lines_per_s(self) -> float:
        """``lines`` per second of ``seconds``; 0.0 when ``seconds`` is 0."""
        return self.lines / self.seconds if self.seconds else 0.0


def translate_corpus(artifact: str | Path, source: str | Path, out: str | Path,
                     options: CorpusOptions = CorpusOptions(), *, engine: str = "local",
                     workers: int = 1, shard_size: int = 1000, column: str | None = None,
                     address: str | None = None, force: bool = False,
                     progress=None, log=print) -> Summary:
    """Translate every input of ``source`` into ``out`` (line i answers input i);
    lines that cannot be translated get an empty output and a row in
    ``out.rejects.tsv``. Resumes a run killed part way. One run at a time per
    ``out``: a second one is refused at once, ``force`` or not."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    if workers < 1 or shard_size < 1:
        raise InputError("workers and shard_size must be positive")
    artifact, out = Path(artifact), Path(out)
    meta = artifact / METADATA_FILE
    if not meta.is_file():
        raise DataError(f"{artifact}: not an artifact directory ({METADATA_FILE} missing)")
    # Everything that can be refused is refused before any file is made: the model
    # loads here once (a broken one fails now, not in every worker) with the options.
    check_options(ShardTranslator(str(artifact), options))
    store = ShardStore(out)
    with OutputLock(out):
        store.check_outputs(force)
        texts = read_inputs(Path(source), column, log)
        if not texts:
            raise DataError(f"{source}: no inputs")
        return _run(artifact, meta, texts, options, store, engine, workers, shard_size,
                    address, force, progress, log)


def check_options(translator: ShardTranslator) -> None:
    """Raise InputError for options the translator's model cannot run: decode options out
    of range, ``unknown="unk"`` without an unknown token, or a bad batch size."""
    o, vocab = translator.options, translator.model.vocabulary
    DecodeOptions(o.beam_size, o.max_length, o.length_penalty).validate(vocab.max_output_length)
    if o.unknown == "unk" and vocab.unknown_token is None:
        raise InputError("--unk needs a vocabulary with an unknown token; this one has none "
                         "(use --skip-unknown)")
    if type(o.batch_size) is not int or o.batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {o.batch_size!r}")


def _run(artifact, meta, texts, options, store, engine, workers, shard_size, address,
         force, progress, log) -> Summary:
    shards = (len(texts) + shard_size - 1) // shard_size
    manifest = {"inputs": len(texts), "fingerprint": fingerprint(texts),
                "artifact": hashlib.sha256(meta.read_bytes()).hexdigest(),
                "options": options.as_dict(), "shard_size": shard_size, "shards": shards}
    resumed = store.open(manifest, force)
    lines = {i: (i * shard_size, min(len(texts), (i + 1) * shard_size)) for i in range(shards)}
    done = store.done(lines, log) if resumed else set()
    plan = {i: span for i, span in lines.items() if i not in done}
    summary = Summary(shards=shards, resumed_shards=len(done))
    if resumed:
        log(f"resuming: {len(done)} of {shards} shards already done", flush=True)
    started = time.perf_counter()

    def on_done(shard: ShardDone) -> None:
        summary.lines += shard.lines
        summary.rejects += shard.rejects
        lines, seconds = summary.workers.get(shard.worker, (0, 0.0))
        summary.workers[shard.worker] = (lines + shard.lines, seconds + shard.seconds)
        if progress:
            progress(summary, len(texts), time.perf_counter() - started)

    if plan:
        if engine == "local":
            run_local(str(artifact), options, texts, plan, store, workers, on_done, log)
        else:
            run_ray(str(artifact), options, texts, plan, store, workers, address, on_done, log)
    summary.seconds = time.perf_counter() - started
    _, summary.rejects = store.assemble(texts, shards)
    return summary
