# The README's two commands: `make quickstart` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
IMAGES ?=
OUT ?= quickstart-results.csv

.PHONY: quickstart test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Serving + client + the demo's sample photos; no TensorFlow.
$(VENV)/.quickstart: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[serve,demo]"
	touch $@

$(VENV)/.all: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[all]"
	touch $@ $(VENV)/.quickstart

quickstart: $(VENV)/.quickstart
	$(BIN)/facialattr demo $(IMAGES) --out $(OUT)

test: $(VENV)/.all
	$(BIN)/python -m pytest

lint: $(VENV)/.all
	$(BIN)/ruff check .
