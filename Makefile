# Quick start: `make serve` runs the server on SQLite in ./data, `make test` runs the whole suite, `make lint`
# checks the code with ruff (rules and formatting) and mypy, as CI does before the tests.
# Each creates the virtual environment it needs in .venv on first use, with the exact versions in
# constraints.txt (pyproject.toml only states compatible ranges); `make constraints` renews them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 2
# `make test` runs the suite in this many processes (pytest-xdist; 0 runs it in this one). Most of a test's time
# is spent waiting on the servers, databases and gateways it starts, so 4 keeps two cores busy: the whole
# suite, SQLite and PostgreSQL, takes 11 minutes on 2 cores instead of 43.
TEST_JOBS ?= 4

.PHONY: serve test lint bench constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

# the suite also runs on PostgreSQL (WOPIHOST_TEST_DATABASE_URL), so the test extra brings the postgres one
$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/wopihost db upgrade
	WOPIHOST_PUBLIC_URL=$${WOPIHOST_PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/wopihost demo
	$(BIN)/wopihost serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: $(VENV)/.installed-test
	$(BIN)/pytest --numprocesses $(TEST_JOBS) --dist worksteal

# ruff (every Python file here) and mypy (wopihost/) read their settings from pyproject.toml; `ruff format` applies
# the formatting that `ruff format --check` asks for
lint: $(VENV)/.installed-test
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python bench/core_ops.py

# The newest versions pyproject.toml's ranges allow, every extra and every indirect dependency, resolved
# in a throwaway environment; run the tests on the result before committing it.
constraints:
	rm -rf $(VENV)-constraints
	$(PYTHON) -m venv $(VENV)-constraints
	$(VENV)-constraints/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-constraints/bin/python -m pip install --quiet '.[test]'
	{ sed -n '/^#/p' constraints.txt; $(VENV)-constraints/bin/python -m pip freeze --exclude wopihost; } \
		> constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(VENV)-constraints

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
