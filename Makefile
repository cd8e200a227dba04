# Two entry points (see README): `make serve` and `make test`.  Both set up everything first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup build test test-slow serve bench proto clean

$(STAMP): pyproject.toml setup.py tools/ensure-system-deps
	./tools/ensure-system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q 'setuptools>=68,<81' wheel 'cython>=3.0,<4'
	$(BIN)/pip install -q --no-build-isolation -e '.[dev]'
	touch $@

setup: $(STAMP)

build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

test: build
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: build
	$(BIN)/python -m pytest --run-slow $(PYTEST_ARGS)

serve: build
	$(BIN)/python tools/make-dev-tokens var/tokens.json
	$(BIN)/python -m server $(SERVE_ARGS)

bench: build  # BENCH_ARGS="rules --events 50000"; without BENCH_ARGS: the list of benchmarks (--help)
	$(BIN)/python -m bench $(or $(BENCH_ARGS),--help)

proto: $(STAMP)
	$(BIN)/python tools/gen-proto

clean:
	rm -rf build $(VENV) matcher/*.so matcher/*.cpp matcher/*.html *.egg-info
