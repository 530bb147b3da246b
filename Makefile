# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv from python3 and installs the project with the versions pinned in pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench guests protos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pangea demo

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check pangea_p2p tests benchmarks simulations
	$(BIN)/mypy pangea_p2p

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

guests: $(STAMP)
	$(BIN)/python guests/build.py

protos: $(STAMP)
	$(BIN)/python protocols/build.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .zig-cache
