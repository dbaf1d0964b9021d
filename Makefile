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

.PHONY: quickstart test lint notebook notebook-lab docker-image docker-quickstart

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

# Runs notebooks/walkthrough.ipynb top to bottom without a browser (nbclient and ipykernel come with the
# `all` extra) into an executed copy, outputs included, to open in any notebook viewer; its files (run,
# model repository, events, annotated video) go to .cache/walkthrough/, fresh each time.
notebook: $(VENV)/.all
	rm -rf .cache/walkthrough
	$(BIN)/python notebooks/execute_walkthrough.py --out notebooks/walkthrough.executed.ipynb --work-dir .cache/walkthrough

# JupyterLab on 127.0.0.1 with the walkthrough open; the front end is in no extra (about 45 more packages),
# so it is installed into $(VENV) on first use. Jupyter refuses to start as root without --allow-root, and
# root is the usual user in containers, so the flag is passed then and only then.
notebook-lab: $(VENV)/.all
	@[ -x $(BIN)/jupyter-lab ] || $(BIN)/pip install -q -c constraints.txt jupyterlab
	$(BIN)/jupyter-lab --ip 127.0.0.1 --no-browser $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/walkthrough.ipynb

# The container way (docs/DEPLOYMENT.md): the project's image and the compose `cpu` profile, with a Docker
# engine (docker/install-engine.sh sets one up on Debian 12 as root). IMAGES is required here.
docker-image:
	docker/build-image.sh

docker-quickstart:
	@[ -n "$(IMAGES)" ] || { echo "usage: make docker-quickstart IMAGES=DIR [OUT=FILE]"; exit 2; }
	docker/quickstart.sh "$(IMAGES)" "$(OUT)"
