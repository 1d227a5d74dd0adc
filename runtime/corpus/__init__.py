"""Translate whole corpora: a text file, a folder of them, or a column of a CSV or
Parquet file, in shards that are each written atomically, so a run killed part
way and started again finishes the job with no line lost or duplicated.

Two engines with the same results: ``local`` (a process pool, one loaded model
per worker) and ``ray`` (Ray Data ``map_batches`` over an actor pool, one model
per actor; a local Ray or a cluster). Ray is imported only by the ray engine.

    python -m runtime.corpus ARTIFACT INPUT --out OUTPUT [--engine local|ray]
"""
from .run import CorpusOptions, Summary, translate_corpus

__all__ = ["CorpusOptions", "Summary", "translate_corpus"]
