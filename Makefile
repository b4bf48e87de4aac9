# The two commands of the README:  make demo  (the main job on its default)  and  make test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.torch

.PHONY: demo test lint bench docs clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# torch==2.13.0 is the CPU build on this machine's disk; an unpinned torch is a multi-GB CUDA build.
$(TORCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet -e '.[test,torch,cluster]'
	touch $(TORCH_STAMP)

demo: $(STAMP)
	$(BIN)/bptt train

test: $(TORCH_STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

bench: $(TORCH_STAMP)
	$(BIN)/python benchmarks/bench_bptt.py

# the example outputs in README.md and docs/, regenerated from the commands (tools/examples.py)
docs: $(STAMP)
	$(BIN)/python tools/examples.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
