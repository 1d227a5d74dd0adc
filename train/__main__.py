"""``python -m train``: fit the seed's LSTM encoder-decoder and report held-out accuracy."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from family import rundir
from runtime import atomic as outdir
from runtime.cli import add_version
from runtime.errors import Seq2SeqError

from .errors import TrainingError

DEFAULTS = dict(samples=30000, epochs=8, batch_size=64, latent_dim=256, seed=0,
                test_size=500, val_split=0.1, patience=3, val_decode=500)
# --epochs is an upper bound: the built-in generated sets learn within the demo's 8;
# real data (a file, the CMU dictionary) trains until the validation metric stops
# improving for --patience epochs.
EPOCHS_REAL_DATA = 100


def positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0 or value == float("inf"):  # NaN fails the first test
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train an encoder-decoder (by default the seed's one-hot LSTM; see the "
                    "architecture options) on a tab-separated pair file "
                    "(keras.io / manythings.org format) or, by default, on a built-in "
                    "data set made offline (dates in seven languages -> ISO 8601 from "
                    "CLDR, or number words -> digits). "
                    "Writes model.keras, vocab.json, heldout.tsv, history.json, loss.png and "
                    "train.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_version(p)
    p.add_argument("--data", metavar="FILE", help="input<TAB>target[<TAB>...] UTF-8 file; "
                   "omit for a built-in data set (--builtin)")
    p.add_argument("--builtin", choices=("dates", "numbers", "cmudict"), default="dates",
                   help="the built-in data set used without --data: dates in seven "
                        "languages -> ISO 8601; English number words up to millions "
                        "-> digits (long inputs: a task where attention matters); or "
                        "cmudict, the CMU Pronouncing Dictionary (words -> ARPAbet "
                        "phones, from the cmudict package; a fixed split by word, "
                        "reported as WER and PER)")
    p.add_argument("--stress", choices=("keep", "drop"), default="keep",
                   help="cmudict only: keep the vowels' stress digits (AO1; 69 phones) "
                        "or drop them (AO; 39 phones, as the published CMUdict results do)")
    p.add_argument("--samples", type=positive(int), default=None,
                   help=f"pairs to use (file: the first N; built-in: N generated, "
                        f"default {DEFAULTS['samples']}; cmudict: N words, default all)")
    p.add_argument("--epochs", type=positive(int), default=None,
                   help=f"at most this many epochs; training stops earlier when "
                        f"--patience epochs bring no better one (default "
                        f"{DEFAULTS['epochs']} for the generated dates and numbers, "
                        f"{EPOCHS_REAL_DATA} for a file or cmudict)")
    p.add_argument("--batch-size", type=positive(int), default=DEFAULTS["batch_size"])
    p.add_argument("--latent-dim", type=positive(int), default=DEFAULTS["latent_dim"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--optimizer", choices=("rmsprop", "adam"), default=None,
                   help="rmsprop as in keras.io's example; adam often learns faster "
                        "(default: rmsprop, adam for --arch transformer)")
    p.add_argument("--learning-rate", type=positive(float), default=None, metavar="LR",
                   help="the starting learning rate (default 0.001; with --resume, the "
                        "rate saved with the earlier run's best epoch)")
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="E",
                   help="mix each one-hot target with the uniform distribution by E "
                        "(Keras's CategoricalCrossentropy label_smoothing; a regulariser "
                        "for a model that overfits, e.g. 0.1; default 0)")
    p.add_argument("--schedule", choices=("plateau", "none"), default="plateau",
                   help="plateau: halve the learning rate when the validation loss has "
                        "not fallen for half --patience epochs (at least 1), down to "
                        "1/64 of the start; none: keep it")
    p.add_argument("--monitor", choices=("exact-match", "loss"), default="exact-match",
                   help="what makes an epoch the best (kept, and the one early stopping "
                        "waits to beat): exact-match greedy-decodes --val-decode "
                        "validation inputs after every epoch (ties go to the lower "
                        "validation loss); loss is the validation loss alone (always, "
                        "under --strategy multiworker)")
    p.add_argument("--val-decode", type=positive(int), default=DEFAULTS["val_decode"],
                   metavar="N", help="validation inputs decoded after every epoch for "
                                     "--monitor exact-match")
    p.add_argument("--out", default="runs/latest", metavar="DIR", help="output directory")
    p.add_argument("--force", action="store_true", help="replace a finished output directory")
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="go on training the run in directory RUN (finished or stopped "
                        "with Ctrl-C) from its best epoch, with its data, split, model "
                        "and optimizer state; only --epochs (the upper bound on all "
                        "epochs, earlier ones included), --patience, --learning-rate, "
                        "--schedule, --monitor, --val-decode and --out may be given")
    p.add_argument("--test-size", type=positive(int), default=None,
                   help="held-out inputs (with all their targets), never trained on, for "
                        "the quality report (default: 10%% of the distinct inputs, at most "
                        f"{DEFAULTS['test_size']}; cmudict's split is fixed)")
    p.add_argument("--val-split", type=float, default=None,
                   help=f"fraction of the distinct inputs used for validation (early "
                        f"stopping; default {DEFAULTS['val_split']}; cmudict's split "
                        f"is fixed)")
    p.add_argument("--patience", type=positive(int), default=DEFAULTS["patience"],
                   help="epochs without a better one (see --monitor) before stopping")
    p.add_argument("--padding", choices=("left", "right"), default=None,
                   help="where input padding goes: left (text ends on the last encoder "
                        "step; learns far better for an RNN; the default) or right "
                        "(keras.io; the only choice for --arch transformer, whose "
                        "positions count from the first token)")
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                   default="default",
                   help="mirrored: tf.distribute.MirroredStrategy over all local GPUs "
                        "(one replica on a CPU-only machine); multiworker: "
                        "MultiWorkerMirroredStrategy across the machines TF_CONFIG lists "
                        "(run the same command on each; only the chief writes --out)")
    arch = p.add_argument_group("architecture (default: the seed's one-hot LSTM)")
    arch.add_argument("--arch", choices=("rnn", "transformer"), default="rnn",
                      help="rnn: the recurrent family below; transformer: keras.io's "
                           "KerasHub encoder-decoder (TokenAndPositionEmbedding, "
                           "TransformerEncoder and TransformerDecoder layers; "
                           "--embedding-dim is its width, default 128; --layers a side, "
                           "default 2), exported with a cached decoder step")
    arch.add_argument("--heads", type=positive(int), default=4,
                      help="transformer: attention heads per layer")
    arch.add_argument("--ff-dim", type=positive(int), default=512, metavar="D",
                      help="transformer: the feed-forward block's inner width")
    arch.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    arch.add_argument("--layers", type=positive(int), default=None,
                      help="layers on each side (default 1; 2 for --arch transformer); "
                           "RNN: encoder layer i starts decoder layer i")
    arch.add_argument("--handoff", choices=("each", "last"), default="each",
                      help="each: encoder layer i starts decoder layer i; last: a deep "
                           "encoder hands only its top layer's state to a one-layer decoder")
    arch.add_argument("--bidirectional", action="store_true",
                      help="bidirectional encoder (the decoder is twice as wide)")
    arch.add_argument("--embedding-dim", type=int, default=0, metavar="D",
                      help="Embedding of width D on both sides (0: one-hot inputs)")
    arch.add_argument("--unit", choices=("char", "word"), default="char",
                      help="input tokens: characters, or words (lowercased, ASCII "
                           "punctuation stripped, split on whitespace, as Keras "
                           "TextVectorization does; unknown words map to [UNK])")
    arch.add_argument("--target-unit", choices=("char", "word"), default=None,
                      help="output tokens (default: as --unit for a --data file; char for "
                           "the built-in data, whose answers are one word each); words "
                           "are joined with spaces and framed by [start] / [end]")
    arch.add_argument("--no-reset-after", dest="reset_after", action="store_false",
                      help="GRU: the original cell (reset gate before the recurrent "
                           "product), not Keras 3's default reset_after=True")
    arch.add_argument("--logits", action="store_true",
                      help="a linear Dense giving logits (trained from_logits) instead of "
                           "softmax")
    arch.add_argument("--attention", choices=("luong", "bahdanau"), default=None,
                      help="the decoder attends over the encoder's outputs: luong "
                           "(keras.layers.Attention, dot product) or bahdanau "
                           "(AdditiveAttention), then Concatenate and Dense(tanh)")
    arch.add_argument("--mask", action="store_true",
                      help="Embedding(mask_zero=True): the encoder skips padding; needs "
                           "--embedding-dim. Batches are then padded only to their own "
                           "longest input (much faster on data of mixed lengths)")
    arch.add_argument("--dropout", type=float, default=None, metavar="P",
                      help="dropout while training (the exported graphs do not change): "
                           "RNN: Keras's input dropout inside every recurrent layer, "
                           "default 0; transformer: every layer's dropout, default 0.1")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _given(argv: list[str] | None) -> set[str]:
    """The options present on the command line (not defaulted)."""
    p = parser()
    for action in p._actions:  # argparse's own list; SUPPRESS leaves absent ones out
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(sys.argv[1:] if argv is None else argv)))


def _flags() -> dict[str, str]:
    """Each option's destination -> its flag as a user types it."""
    return {a.dest: a.option_strings[0] for a in parser()._actions if a.option_strings}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    previous = None
    if args.resume:
        from . import resume

        try:
            previous = resume.load(args.resume)
            resume.merge(args, _given(argv), previous, _flags())
        except Seq2SeqError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        args.learning_rate = args.learning_rate or 1e-3
        # The plateau schedule's floor is 1/64 of this, through every later resume.
        args.first_learning_rate = args.learning_rate
    if not args.data and args.builtin == "cmudict":
        for flag, value in (("--test-size", args.test_size), ("--val-split", args.val_split)):
            if value is not None:
                parser().error(f"{flag}: the CMU dictionary's split is fixed (by word; "
                               "see docs/training.md), so results compare across runs")
    if args.stress != "keep" and (args.data or args.builtin != "cmudict"):
        parser().error("--stress applies to --builtin cmudict only")
    if args.val_split is None and (args.data or args.builtin != "cmudict"):
        args.val_split = DEFAULTS["val_split"]  # cmudict's stays None: its split is fixed
    if args.val_split is not None and not 0 < args.val_split < 1:
        parser().error(f"--val-split must be between 0 and 1, got {args.val_split}")
    _architecture_defaults(args)
    if not 0 <= args.dropout < 1:
        parser().error(f"--dropout must be at least 0 and below 1, got {args.dropout}")
    if not 0 <= args.label_smoothing < 1:
        parser().error(f"--label-smoothing must be at least 0 and below 1, got "
                       f"{args.label_smoothing}")
    if args.epochs is None:
        real = bool(args.data) or args.builtin == "cmudict"
        args.epochs = EPOCHS_REAL_DATA if real else DEFAULTS["epochs"]
    if args.embedding_dim < 0:
        parser().error(f"--embedding-dim must be 0 (one-hot) or positive, got "
                       f"{args.embedding_dim}")
    if args.mask and not args.embedding_dim:
        parser().error("--mask needs --embedding-dim D (masking applies to Embedding "
                       "inputs)")
    try:
        return run(args, previous)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# RNN-only options and their defaults: refused with --arch transformer when changed.
RNN_ONLY = {"cell": "lstm", "bidirectional": False, "attention": None, "handoff": "each",
            "reset_after": True}


def _architecture_defaults(args) -> None:
    """Fill in the defaults that depend on --arch; refuse what does not apply."""
    transformer = args.arch == "transformer"
    if transformer:
        given = [f"--{k.replace('_', '-')}" for k, v in RNN_ONLY.items()
                 if getattr(args, k) != v]
        if given:
            parser().error(f"{', '.join(given)}: options of the recurrent family (--arch "
                           "rnn), not of --arch transformer")
        if args.padding == "left":
            parser().error("--padding left: a transformer's positions count from the first "
                           "token, so its inputs are padded on the right")
        if not args.embedding_dim:
            args.embedding_dim = 128
        if args.embedding_dim % args.heads:
            parser().error(f"--embedding-dim {args.embedding_dim}: the width must divide by "
                           f"the {args.heads} heads")
    elif args.heads != 4 or args.ff_dim != 512:
        parser().error("--heads and --ff-dim are for --arch transformer")
    args.layers = args.layers or (2 if transformer else 1)
    args.padding = args.padding or ("right" if transformer else "left")
    args.optimizer = args.optimizer or ("adam" if transformer else "rmsprop")
    args.dropout = (0.1 if transformer else 0.0) if args.dropout is None else args.dropout


def run(args, previous=None) -> int:
    import shutil
    import tempfile

    from family import quality

    from . import data, distribution, fit

    role = (distribution.role_from_tf_config(os.environ.get("TF_CONFIG"))
            if args.strategy == "multiworker" else distribution.Role(True, "chief"))
    out = Path(args.out)
    scratch = None
    if role.chief:
        outdir.check_target(out, rundir.MODEL_FILE, args.force)
    else:  # trains in step with the chief; writes nothing a user could take for the result
        scratch = Path(tempfile.mkdtemp(prefix="seq2seq-worker-"))
        out = scratch / "run"
    try:
        return _run(args, out, role, data, distribution, fit, quality, previous)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _load(args, data):
    """The data's name, its train, validation and held-out pairs, and the split's
    rule where it is fixed."""
    if not args.data and args.builtin == "cmudict":
        from . import cmudict

        parts = cmudict.split(cmudict.load(args.stress), args.samples)
        stress = "" if args.stress == "keep" else ", stress digits dropped"
        return (f"built-in cmudict (the CMU Pronouncing Dictionary, cmudict "
                f"{cmudict.version()}{stress})", *parts, cmudict.SPLIT_RULE)
    if args.data:
        loaded = data.read_pairs(args.data, limit=args.samples)
        pairs = loaded.pairs
        source = str(args.data)
        if loaded.skipped_long:
            print(f"skipped {loaded.skipped_long} pairs longer than "
                  f"{data.DEFAULT_MAX_CHARS} characters", file=sys.stderr)
    elif args.builtin == "numbers":
        pairs = data.number_pairs(args.samples or DEFAULTS["samples"], seed=args.seed)
        source = "built-in numbers"
    else:
        pairs = data.date_pairs(args.samples or DEFAULTS["samples"], seed=args.seed)
        source = "built-in dates"
    test_size = args.test_size
    if test_size is None:  # sized from the data, so a small file still trains
        test_size = data.default_test_size(pairs, DEFAULTS["test_size"])
        if test_size < DEFAULTS["test_size"]:
            print(f"held-out set: {test_size} inputs (10% of the distinct inputs; "
                  "--test-size sets it)", flush=True)
    return (source, *data.split(pairs, test_size, args.val_split, args.seed),
            f"seeded shuffle of the distinct inputs (--seed {args.seed}); {test_size} "
            f"held out, {args.val_split:g} of all the distinct inputs validate")


def _fit(args, arch, vocab, model, train_pairs, val_pairs, staging: Path, config, data,
         fit, previous=None):
    """Keras's fit on length-bucketed batches, choosing the best epoch by
    ``config.monitor`` on a fixed sample of the validation inputs."""
    import random

    ids = bool(arch.embedding_dim)
    train = fit.Batches(vocab, train_pairs, args.batch_size, ids, trim_inputs=arch.mask,
                        shuffle=True, seed=args.seed)
    val = fit.Batches(vocab, val_pairs, args.batch_size, ids, trim_inputs=arch.mask,
                      shuffle=False)
    groups = data.group(val_pairs)
    # A fixed sample, whatever --seed: with cmudict's fixed split the model choice
    # then depends on the training alone.
    sample = random.Random(0).sample(groups, min(args.val_decode, len(groups)))
    inputs = "inputs and targets" if arch.mask else "targets (an unmasked encoder reads its padding)"
    print(f"batches padded to their own longest {inputs}: {train.padded_share():.0%} of "
          f"the steps are padding ({train.padded_share(False):.0%} if padded to the "
          f"longest pair); best epoch by validation {args.monitor}"
          + (f" ({len(sample)} inputs decoded per epoch)" if args.monitor == "exact-match"
             else ""), flush=True)
    earlier = None
    if previous is not None:  # the bar a new epoch must clear, measured as it will be
        logs = fit.start_logs(model, val, config.monitor, vocab, sample)
        print(f"the starting model (epoch {previous.best_epoch}): validation loss "
              f"{logs['val_loss']:.4f}" + (f", exact match {logs['val_exact_match']:.1%}"
                                          if "val_exact_match" in logs else ""), flush=True)
        earlier = fit.Earlier(previous.epochs, previous.best_epoch, logs)
    return fit.fit(model, train, val, staging, config, sample, earlier)


def _resumed_model(args, previous, keras):
    """The earlier run's best model, compiled, with its optimizer's state; the
    learning rate set anew where --learning-rate was given."""
    path = previous.directory / rundir.MODEL_FILE
    try:
        if args.arch == "transformer":
            import keras_hub  # noqa: F401  (registers the layers the file names)
        model = keras.models.load_model(path)
    except Exception as e:  # Keras raises many types for a damaged file
        raise TrainingError(f"--resume: {path} does not load: "
                            f"{str(e).splitlines()[0][:300] if str(e) else type(e).__name__}"
                            ) from None
    if model.optimizer is None:
        raise TrainingError(f"--resume: {path} was saved without its optimizer, so its "
                            "training cannot go on")
    if args.learning_rate is not None:
        model.optimizer.learning_rate = args.learning_rate  # assigns the variable
    # What train.json records: the rate this run starts at.
    args.learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    print(f"resuming {previous.directory} after epoch {len(previous.epochs)} from its best "
          f"epoch {previous.best_epoch}, learning rate {args.learning_rate:g}", flush=True)
    return model


def _run(args, out: Path, role, data, distribution, fit, quality, previous=None) -> int:
    source, train_pairs, val_pairs, test_pairs, split_rule = _load(args, data)
    print(f"data: {source}: {len(train_pairs)} train, {len(val_pairs)} validation, "
          f"{len(test_pairs)} held-out pairs ({len(data.group(test_pairs))} distinct "
          "inputs; every target of an input stays with it)", flush=True)

    import keras
    import tensorflow as tf

    from runtime.vocab import InputPadding, Vocabulary

    from .model import Architecture, TransformerArchitecture, build_model, build_transformer
    from family.reference import reference_for

    everything = train_pairs + val_pairs + test_pairs
    if args.arch == "transformer":
        arch = TransformerArchitecture(args.layers, args.heads, args.ff_dim,
                                       args.embedding_dim, args.dropout, args.logits)
    else:
        arch = Architecture(args.cell, args.layers, args.bidirectional, args.embedding_dim,
                            args.mask, args.handoff, args.reset_after, args.logits,
                            args.attention or "", args.dropout)
    target_unit = args.target_unit or (args.unit if args.data else
                                       "word" if args.builtin == "cmudict" else "char")
    frame = ("[start]", "[end]") if target_unit == "word" else ("\t", "\n")
    vocab = Vocabulary.build([p[0] for p in everything], [p[1] for p in everything], *frame,
                             padding=InputPadding(side=args.padding),
                             reserve_padding_id=bool(arch.embedding_dim), unit=args.unit,
                             target_unit=target_unit)
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    strategy, _ = distribution.make_strategy(args.strategy)
    if args.strategy != "default":
        print(f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s); "
              f"this process: {role.name}", flush=True)
    with strategy.scope():
        if previous is not None:
            model = _resumed_model(args, previous, keras)
        elif args.arch == "transformer":
            model = build_transformer(vocab.input_size, vocab.target_size,
                                      vocab.max_input_length, vocab.max_output_length, arch,
                                      args.optimizer, args.learning_rate,
                                      args.label_smoothing)
        else:
            model = build_model(vocab.input_size, vocab.target_size, args.latent_dim, arch,
                                args.optimizer, args.learning_rate, args.label_smoothing)
    if not args.quiet:
        model.summary()

    ids = bool(arch.embedding_dim)
    staging = outdir.staging_dir(out)
    try:
        vocab.save(staging / rundir.VOCAB_FILE)
        if previous is not None:
            from . import resume

            resume.check_vocabulary(previous.directory / rundir.VOCAB_FILE,
                                    staging / rundir.VOCAB_FILE)
        # Held-out pairs travel with the model: export checks parity on them.
        (staging / rundir.HELDOUT_FILE).write_text(
            "".join(f"{a}\t{b}\n" for a, b in test_pairs), encoding="utf-8")
        started = time.monotonic()
        verbose = 0 if args.quiet else 1 if sys.stdout.isatty() else 2
        best_epoch = None
        if args.strategy == "multiworker":  # its own loop: the best epoch by val_loss
            from . import multiworker

            if args.monitor != "loss" or args.schedule != "none":
                print(f"{role.name}: the multi-worker loop chooses the best epoch by the "
                      "validation loss and keeps the learning rate (--monitor loss "
                      "--schedule none)", flush=True)
            args.monitor, args.schedule = "loss", "none"  # what train.json records
            config = fit.FitConfig(args.epochs, args.batch_size, args.patience, verbose)
            history, interrupted = multiworker.fit(
                model, fit.teacher_forcing_arrays(vocab, train_pairs, ids),
                fit.teacher_forcing_arrays(vocab, val_pairs, ids), staging, config,
                strategy, arch.logits, args.label_smoothing)
            losses = [e["val_loss"] for e in history.epochs]
            best_epoch = losses.index(min(losses)) + 1 if losses else None
        else:
            config = fit.FitConfig(args.epochs, args.batch_size, args.patience, verbose,
                                   monitor=args.monitor.replace("-", "_"),
                                   schedule=args.schedule,
                                   initial_epoch=len(previous.epochs) if previous else 0,
                                   min_lr=args.first_learning_rate / 64)
            history, interrupted, best_epoch = _fit(args, arch, vocab, model, train_pairs,
                                                    val_pairs, staging, config, data, fit,
                                                    previous)
        seconds = time.monotonic() - started
        model_path = staging / rundir.MODEL_FILE
        digest = None
        if args.strategy == "multiworker":  # every worker must end with the same weights
            digest = multiworker.weights_digest(model)
            print(f"{role.name}: final weights sha256 {digest}", flush=True)
        if not role.chief:
            outdir.discard(staging)
            print(f"{role.name}: training done; the chief writes the results")
            return 0
        if not model_path.exists():
            print("error: stopped before the first epoch finished; nothing was saved",
                  file=sys.stderr)
            outdir.discard(staging)
            return 130 if interrupted else 1
        if interrupted:
            print("\ninterrupted: keeping the best checkpoint so far", file=sys.stderr)
        best = keras.models.load_model(model_path)
        reference = reference_for(best, vocab)
        held_out = data.group(test_pairs)
        decoded = reference.greedy([source for source, _ in held_out])
        # Targets as the model writes them (words single-spaced); any one is right.
        expected = [[vocab.decode_target(vocab.encode_target(t)) for t in targets]
                    for _, targets in held_out]
        judged = quality.measure(decoded, expected, char_level=target_unit == "char")
        lexicon = quality.is_lexicon(vocab.unit, vocab.target_unit)
        hits = round(judged.exact_match * len(held_out))
        accuracy = judged.exact_match
        fit.plot_history(staging / rundir.HISTORY_FILE, staging / rundir.CURVE_FILE)
        summary = {
            "data": source, "pairs": {"train": len(train_pairs), "validation": len(val_pairs),
                                      "held_out": len(test_pairs),
                                      "held_out_inputs": len(held_out)},
            "args": {k: v for k, v in vars(args).items() if k not in ("force", "quiet")},
            "epochs_run": len(history.epochs),
            "seconds": round(seconds + (previous.seconds if previous else 0.0), 1),
            **({"resumed": previous.chain + [{
                "from": str(previous.directory), "epochs": len(previous.epochs),
                "best_epoch": previous.best_epoch,
                "seconds_this_run": round(seconds, 1)}]}
               if previous else {}),
            "interrupted": interrupted, "parameters": int(best.count_params()),
            "distribution": {"strategy": type(strategy).__name__,
                             "replicas": int(strategy.num_replicas_in_sync),
                             **({"weights_sha256": digest} if digest else {})},
            "split": split_rule, "best_epoch": best_epoch,
            "held_out_exact_match": accuracy,
            # Greedy decodes of the held-out inputs (Keras reference decoder).
            "held_out_quality": judged.as_dict(),
            **({"held_out_lexicon": quality.lexicon_rates(judged)} if lexicon else {}),
            "examples": [{"input": source, "expected": targets[0], "decoded": d,
                          **({"alternatives": targets[1:]} if len(targets) > 1 else {})}
                         for (source, targets), d in list(zip(held_out, decoded))[:10]],
        }
        (staging / rundir.SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False,
                                                           indent=1) + "\n")
        outdir.promote(staging, out)
    except BaseException:
        outdir.discard(staging)
        raise
    for example in summary["examples"][:5]:
        right = [example["expected"], *example.get("alternatives", [])]
        mark = "ok " if example["decoded"] in right else "BAD"
        print(f"  {mark} {example['input']!r} -> {example['decoded']!r}")
    print(f"held-out exact match (greedy, Keras reference decoder): {hits}/{len(held_out)} "
          f"= {accuracy:.1%}; {judged.line(lexicon)}")
    if lexicon:
        print(f"held-out {quality.lexicon_line(judged)}")
    print(f"wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 130 if interrupted else 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
