"""The stage runner + tracking contract: FINISHED runs log everything; a raising notebook leaves a
FAILED run and no outputs. Each test starts a real papermill kernel (~5 s)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from lab import stage, tracking

OK_NOTEBOOK = '''# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/x"

# %%
import matplotlib.pyplot as plt
import lab.tracking
run = lab.tracking.current("firststage", out_dir)
run.log_metrics({"dl19": {"bm25": {"ndcg_10": 0.5}}, "flag": True})
run.log_metrics({"loss": 3.0}, step=1)
fig, ax = plt.subplots()
ax.plot([0, 1])
run.log_figure(fig, "line")
'''

BAD_NOTEBOOK = '''# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/x"

# %%
import lab.tracking
run = lab.tracking.current("firststage", out_dir)
run.log_metrics({"partial": 1.0})
raise RuntimeError("boom in notebook")
'''


def runs(root):
    client = MlflowClient(tracking.tracking_uri(root))
    exps = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(exps)


@pytest.mark.slow
def test_stage_success_logs_everything(repo_copy):
    nb = repo_copy / "nb.py"
    nb.write_text(OK_NOTEBOOK)
    out = stage.run_stage("firststage", nb)
    assert out == repo_copy / "outputs" / "firststage"
    assert json.loads((out / "metrics.json").read_text()) == {"dl19": {"bm25": {"ndcg_10": 0.5}}, "flag": 1.0}
    assert (out / "figures" / "line.png").is_file() and (out / "notebook.ipynb").is_file()
    assert not list((repo_copy / "outputs").glob(".*staging"))
    client, (run,) = runs(repo_copy)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["dl19.bm25.ndcg_10"] == 0.5
    assert run.data.tags["stage"] == "firststage" and run.data.tags["profile"] == "smoke"
    assert "git_rev" in run.data.tags
    assert run.data.params["firststage.baseline"] == "bm25"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"notebook.ipynb", "figures"} <= arts
    assert (repo_copy / "mlflow.db").is_file()
    assert run.info.artifact_uri.startswith((repo_copy / "mlartifacts").as_uri())


@pytest.mark.slow
def test_failing_notebook_marks_run_failed_and_leaves_no_outputs(repo_copy):
    good = repo_copy / "good.py"
    good.write_text(OK_NOTEBOOK)
    stage.run_stage("firststage", good)
    before = (repo_copy / "outputs" / "firststage" / "metrics.json").read_text()
    bad = repo_copy / "bad.py"
    bad.write_text(BAD_NOTEBOOK)
    with pytest.raises(stage.StageFailed, match="marked FAILED"):
        stage.run_stage("firststage", bad)
    # the previous outputs are untouched, no staging or partial files remain
    assert (repo_copy / "outputs" / "firststage" / "metrics.json").read_text() == before
    assert not list((repo_copy / "outputs").glob(".*"))
    client, found = runs(repo_copy)
    statuses = sorted(r.info.status for r in found)
    assert statuses == ["FAILED", "FINISHED"]
    failed = next(r for r in found if r.info.status == "FAILED")
    assert "failed" in {a.path for a in client.list_artifacts(failed.info.run_id)}


def test_bad_params_fail_before_any_run(repo_copy):
    (repo_copy / "params.yaml").write_text((repo_copy / "params.yaml").read_text().replace("baseline:", "baseline_:"))
    nb = repo_copy / "nb.py"
    nb.write_text(OK_NOTEBOOK)
    assert stage.main(["firststage", str(nb)]) == 1
    assert not (repo_copy / "mlflow.db").exists()


def test_dvc_temp_workspace_logs_to_main_db(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    temp = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc"
    assert tracking.tracking_root(temp) == tmp_path / "repo"
    assert tracking.tracking_uri(temp) == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(temp) == "http://127.0.0.1:5000"


def test_flatten_nest_roundtrip():
    nested = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    flat = tracking.flatten(nested)
    assert flat == {"a.b": 1, "a.c.d": 2, "e": 3}
    assert tracking._nest(flat) == nested


SLOW_NOTEBOOK = """# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/x"

# %%
import pathlib, time
import lab.tracking
run = lab.tracking.current("firststage", out_dir)
pathlib.Path(out_dir, "started").write_text("1")
time.sleep(120)
"""


@pytest.mark.slow
def test_sigterm_marks_run_failed_and_cleans_up(repo_copy):
    nb = repo_copy / "slow.py"
    nb.write_text(SLOW_NOTEBOOK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    proc = subprocess.Popen([sys.executable, "-m", "lab.stage", "firststage", str(nb)], cwd=repo_copy, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    staging = repo_copy / "outputs" / ".firststage.staging"
    deadline = time.time() + 90
    while not (staging / "started").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "slow"
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in proc.stderr.read()
    assert not (repo_copy / "outputs" / "firststage").exists() and not staging.exists()
    _, (run,) = runs(repo_copy)
    assert run.info.status == "FAILED"
