"""Decode a few inputs with an artifact in every mode and print the results as
JSON: run natively and under qemu-aarch64, the two outputs must be identical
(``checks/arm64.sh``). Uses only the runtime (numpy plus the backends)."""
from __future__ import annotations

import json
import platform
import sys

import runtime
from runtime.metadata import FILE_FORMATS


def main(artifact: str, texts_file: str) -> int:
    texts = [ln.split("\t")[0] for ln in open(texts_file, encoding="utf-8").read().splitlines()]
    config = runtime.load_config(artifact)
    results = {}
    for fmt, precision in config.variants():
        for greedy in ("step", "fused"):
            if not config.has_graph(fmt, precision, "greedy") and greedy == "fused":
                continue
            model = runtime.load(artifact, backend=FILE_FORMATS[fmt], file_format=fmt,
                                 precision=precision, greedy=greedy)
            key = f"{fmt}/{precision}/{greedy}"
            results[f"{key}/greedy"] = model.translate(texts)
            if greedy == "step":
                results[f"{key}/beam3"] = model.translate(texts, beam_size=3)
                results[f"{key}/sample"] = model.translate(texts, temperature=0.8, top_k=5,
                                                           seed=7)
    print(json.dumps({"machine": platform.machine(), "results": results},
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main(*sys.argv[1:3]))
