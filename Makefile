# cowspec: two entry points on a fresh machine.
#   make run   the conformance check of the model against the kernel's overlayfs
#   make test  ruff, mypy --strict and the whole pytest suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench clean deps-core deps-all

# System packages (apt-get, as root; only what is missing): see .ci/install-deps.
deps-core:
	bash .ci/install-deps core

deps-all:
	bash .ci/install-deps all

$(BIN)/python: | deps-core
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py conformance/cowcheck/_fastlayer.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/cowspec check --driver kernel-overlay

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict reference/cowspec conformance/cowcheck

pytest: $(VENV)/.installed | deps-all
	$(BIN)/python -m pytest

test: lint typecheck pytest

# BENCH_ARGS: the flatten benchmark's image, small by default (the issue's: --files 100000 --mb 1000).
BENCH_ARGS ?= --layers 20 --files 20000 --mb 200 --rounds 3
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/model_bench.py
	$(BIN)/python benchmarks/flatten_bench.py --dir $${TMPDIR:-/tmp}/cowspec-bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis cowspec-divergences
