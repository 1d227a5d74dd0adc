"""Keep the native libraries' start-up noise off the terminal of this project's
commands, and let everything else through.

TensorFlow and LiteRT write to the process's standard error from C++ (absl
logging), below Python: oneDNN and CUDA-stub notices, CPU-feature hints and
"Created TensorFlow Lite XNNPACK delegate" on every run, whatever
``TF_CPP_MIN_LOG_LEVEL`` says about some of them. ``quiet_native_noise`` puts a
filter on file descriptor 2 that drops lines matching ``NOISE`` and passes every
other line (real warnings, errors, tracebacks) unchanged. Only the commands call
it, in their ``__main__`` guard: a library must not take over its host's stderr.
Set ``SEQ2SEQ_NATIVE_LOGS=1`` to see everything.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading

NOISE = re.compile(
    rb"oneDNN custom operations are on|cudart_stub\.cc|failed call to cuInit"
    rb"|All log messages before absl::InitializeLog\(\) is called"
    rb"|cpu_feature_guard\.cc|To enable the following instructions:"
    rb"|Created TensorFlow Lite XNNPACK delegate|use_unbounded_threadpool"
    rb"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc"
    rb"|TF-TRT Warning|Could not find cuda drivers"
    rb"|has constructor arguments in the object store|Progress bars disabled. To enable")


def quiet_native_noise() -> None:
    """Filter the process's stderr (fd 2) from now until exit."""
    if os.environ.get("SEQ2SEQ_NATIVE_LOGS") or getattr(quiet_native_noise, "on", False):
        return
    quiet_native_noise.on = True
    sys.stderr.flush()
    original = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump():
        with os.fdopen(read, "rb", buffering=0) as source:
            for line in iter(source.readline, b""):
                if not NOISE.search(line):
                    os.write(original, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def finish():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # the pipe's last write end closes: the pump drains and ends
        thread.join(timeout=2)

    atexit.register(finish)
