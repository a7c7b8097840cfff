# Quick start: `make serve` runs the server on SQLite in ./data, `make test` runs the whole suite.
# Each creates the virtual environment it needs in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 2

.PHONY: serve test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/wopihost db upgrade
	WOPIHOST_PUBLIC_URL=$${WOPIHOST_PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/wopihost demo
	$(BIN)/wopihost serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: $(VENV)/.installed-test
	$(BIN)/pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/core_ops.py

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
