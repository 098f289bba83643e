"""`make mlflow-server` on 127.0.0.1 (sqlite backend, proxied artifact folder): a stage run through lab.stage with
MLFLOW_TRACKING_URI pointing at it lands there (params, metrics, artifacts, FINISHED), and nothing in the local
sqlite database. One server start (~5-10 s) plus one papermill kernel (~5 s)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from lab import stage

REPO = Path(__file__).resolve().parents[3]

NOTEBOOK = '''# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/x"

# %%
import lab.tracking
run = lab.tracking.current("firststage", out_dir)
run.log_metrics({"dl19": {"bm25": {"ndcg_10": 0.25}}})
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"mlflow server not up at {url} after {timeout} s")


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    db, arts = tmp_path / "server" / "mlflow.db", tmp_path / "server" / "artifacts"
    db.parent.mkdir()
    # the Makefile target itself (-o setup: the venv is there already; never reinstall from a test)
    proc = subprocess.Popen(
        ["make", "-s", "-C", str(REPO), "-o", "setup", "mlflow-server", f"MLFLOW_PORT={port}",
         f"MLFLOW_BACKEND_URI=sqlite:///{db}", f"MLFLOW_ARTIFACTS={arts}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}", db, arts
    finally:
        os.killpg(proc.pid, signal.SIGTERM)     # make + mlflow + its uvicorn worker: the session started here
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_stage_logs_to_shared_mlflow_server(repo_copy, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri, db, arts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    nb = repo_copy / "nb.py"
    nb.write_text(NOTEBOOK)
    out = stage.run_stage("firststage", nb)
    assert (out / "metrics.json").is_file()
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["dl19.bm25.ndcg_10"] == 0.25
    assert run.data.tags["stage"] == "firststage" and run.data.params["firststage.baseline"] == "bm25"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")      # proxied by the server
    assert "notebook.ipynb" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert list(arts.rglob("notebook.ipynb"))                          # stored in the server's artifact root
    assert db.is_file() and not (repo_copy / "mlflow.db").exists()     # nothing went to the local sqlite
