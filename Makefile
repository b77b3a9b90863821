# cowspec: two entry points on a fresh machine.
#   make run   the conformance check of the model against the kernel's overlayfs
#   make test  ruff, mypy --strict and the whole pytest suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every Python package at the version constraints.txt pins (runtime, dev tools, pip, the build backend).
PIN := -c constraints.txt --build-constraint constraints.txt

.PHONY: run test lint typecheck pytest bench hooks clean deps-core deps-all vectors

# System packages (apt-get, as root; only what is missing): see .ci/install-deps.
deps-core:
	bash .ci/install-deps core

deps-all:
	bash .ci/install-deps all

$(BIN)/python: | deps-core
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml setup.py constraints.txt conformance/cowcheck/_fastlayer.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIN) -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/cowspec check --driver kernel-overlay --workers $$(nproc)

# The release tarball of the conformance vectors: dist/cowspec-vectors-VERSION.tar.gz, the same bytes on every run.
vectors: $(VENV)/.installed
	PYTHON=$(CURDIR)/$(BIN)/python sh scripts/make-vectors.sh

# The same three checks run as git hooks once `make hooks` has installed them (.pre-commit-config.yaml).
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The packages checked are pyproject.toml's [tool.mypy] files.
typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict

pytest: $(VENV)/.installed | deps-all
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Git hooks that run `make lint typecheck`'s checks before each commit, with the tools in .venv.
hooks: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt pre-commit
	$(BIN)/pre-commit install

# Every benchmark in benchmarks/, at sizes that take a few minutes here. BENCH_ARGS is the flatten
# benchmark's image, small by default; the issue's image is --layers 20 --files 100000 --mb 1000
# (benchmarks/RESULTS.md). The model benchmark runs at the issue's size (20 layers, 100,000 entries).
BENCH_ARGS ?= --layers 20 --files 20000 --mb 200 --rounds 3
MODEL_BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/model_bench.py $(MODEL_BENCH_ARGS)
	$(BIN)/python benchmarks/hashers.py
	$(BIN)/python benchmarks/flatten_bench.py --dir $${TMPDIR:-/tmp}/cowspec-bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis cowspec-divergences
