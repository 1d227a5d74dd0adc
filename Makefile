# Quick start: `make demo` (set up, train on the built-in data, export, decode,
# benchmark; 5-15 minutes on 2 cores) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo

.PHONY: setup demo test mutants clean

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

test: setup
	$(PY) -m pytest -q

# Hand-written mutations, each applied to a copy of the tree: the suite must catch
# every one (about 5 minutes; not part of CI).
mutants: setup
	$(PY) tests/mutants.py

clean:
	rm -rf $(VENV) runs .pytest_cache
