"""The files of a run directory (what ``python -m train`` writes), by name, for
training, export (which finds the vocabulary and held-out pairs beside a model)
and the benchmarks."""

MODEL_FILE = "model.keras"
VOCAB_FILE = "vocab.json"
HISTORY_FILE = "history.json"
CURVE_FILE = "loss.png"
SUMMARY_FILE = "train.json"
HELDOUT_FILE = "heldout.tsv"
