# `make run` and `make test` set everything up on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/smsworker migrate
	$(BIN)/smsworker run

test: install
	$(BIN)/python -m pytest

# Sizes come from BENCH_* variables; see bench/run.py.
bench: install
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check smsworker tests bench
	$(BIN)/ruff format --check smsworker tests bench
	$(BIN)/mypy smsworker

clean:
	rm -rf $(VENV) .smsworker .pytest_cache .mypy_cache .ruff_cache
