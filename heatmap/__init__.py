"""Attention heatmaps of a decode, as PNG: ``python -m heatmap``.

Kept out of ``runtime`` because matplotlib is not a runtime dependency (install
the project's ``[plot]`` extra, or ``[train]``, which has it).
"""
from __future__ import annotations

from pathlib import Path

from runtime.alignment import AttentionMap
from runtime.errors import InputError


def _label(token: str) -> str:
    """Tick label of a token: spaces and control characters made visible."""
    return {" ": "␣", "\t": "⇥", "\n": "⏎", "": "∅"}.get(token, token)


def draw(amap: AttentionMap, path: str | Path, title: str | None = None) -> Path:
    """Write ``amap`` as a heatmap: input tokens along x, output tokens along y."""
    try:
        import matplotlib
    except ImportError:
        raise InputError("drawing a heatmap needs matplotlib: install the project with "
                         "its [plot] extra") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    if not amap.output_tokens:
        raise InputError("the decode is empty (the model emitted the end token first): "
                         "nothing to draw")
    rows, cols = amap.weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.28 * cols + 1.8), max(2.5, 0.32 * rows + 1.4)))
    image = ax.imshow(amap.weights, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(cols), [_label(t) for t in amap.input_tokens],
                  rotation=90 if max(map(len, amap.input_tokens)) > 1 else 0)
    ax.set_yticks(range(rows), [_label(t) for t in amap.output_tokens])
    ax.set_xlabel("input")
    ax.set_ylabel("output")
    ax.set_title(title or f"{''.join(amap.input_tokens)!s} -> {amap.text}", fontsize=9)
    fig.colorbar(image, ax=ax, label="attention weight", fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
