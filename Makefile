# countersign: every set-up and task in one place.
#   make demo   the main job: the most complete end-to-end flow, checked step by step
#   make test   lint, type check and the whole test suite (real notary tools included)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: all setup system-deps venv demo test lint typecheck unit clean

all: test

system-deps:
	./scripts/system-deps.sh

$(BIN)/countersign: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(BIN)/countersign

setup: system-deps venv

demo: setup
	$(BIN)/countersign sandbox demo

lint: venv
	$(BIN)/ruff check src tests scripts

typecheck: venv
	$(BIN)/mypy --strict src

unit: venv
	$(BIN)/pytest

test: setup lint typecheck unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
