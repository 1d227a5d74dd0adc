"""Cold start: a fresh process imports, loads and decodes one string; its wall
time (interpreter start included) and peak RSS are recorded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ru_maxrss would carry the parent's peak across fork+exec; VmHWM is this process's own.
PEAK = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

RUNTIME_SCRIPT = PEAK + """
import json, sys
import runtime
model = runtime.load(sys.argv[1], backend=sys.argv[2])
out = model.translate([sys.argv[3]])
print(json.dumps({"output": out[0],
                  "peak_rss_mb": peak_rss_mb()}))
"""

KERAS_SCRIPT = PEAK + """
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from export.legacy import load_model
from runtime import load_config
from family.reference import ReferenceDecoder
model = load_model(sys.argv[1])
reference = ReferenceDecoder(model, load_config(sys.argv[2]).vocabulary)
out = reference.greedy([sys.argv[3]], mode="predict")
print(json.dumps({"output": out[0],
                  "peak_rss_mb": peak_rss_mb()}))
"""


def measure(script: str, args: list[str], runs: int = 1) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    best = None
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                              text=True, env=env, timeout=600)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"cold-start process failed: {done.stderr[-500:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["seconds"] = seconds
        if best is None or seconds < best["seconds"]:
            best = result
    return best
