# The README's two commands: `make quickstart` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
IMAGES ?=
OUT ?= quickstart-results.csv
# Ports of the quick start's server: `make quickstart GRPC_PORT=9001 METRICS_PORT=9002` when the defaults are taken.
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
HTTP_PORT ?= 8000

.PHONY: quickstart test lint notebook

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
	$(BIN)/facialattr demo $(IMAGES) --out $(OUT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) --http-port $(HTTP_PORT)

test: $(VENV)/.all
	$(BIN)/python -m pytest

lint: $(VENV)/.all
	$(BIN)/ruff check .

# Opens notebooks/walkthrough.ipynb. The kernel's packages come with the `all` extra; the Jupyter
# front end is in no extra (about 45 more packages), so the target says how to add it when missing.
notebook: $(VENV)/.all
	@if [ -x $(BIN)/jupyter-lab ]; then $(BIN)/jupyter-lab notebooks/walkthrough.ipynb; \
	elif [ -x $(BIN)/jupyter-notebook ]; then $(BIN)/jupyter-notebook notebooks/walkthrough.ipynb; \
	else echo "no Jupyter front end in $(VENV): install one with  $(BIN)/pip install jupyterlab  and rerun make notebook"; \
	echo "(or run the notebook headless, as CI does:  $(BIN)/python -m pytest tests/notebooks)"; exit 1; fi
