"""`dvc repro` end to end on the tiny profile, in a temporary copy of the working tree.

Checks the pipeline contract: every stage runs through papermill and lands FINISHED in MLflow with the
same metrics DVC sees; a second repro does nothing; `dvc exp run --temp -S` reruns only the stage whose
params changed and logs to the main checkout's MLflow database; same params -> identical bytes.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
MIRROR = os.environ.get("LAB_DATA_MIRROR") or str((REPO.parent / "shared" / "data").resolve())

# every dvc.yaml stage runs on the tiny profile and lands in MLflow (FIRST's first_* stages included)
STAGES = tuple(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(MIRROR, "trec-dl").is_dir(), reason=f"no data mirror at {MIRROR}"),
]


def sh(cmd, cwd, env, timeout=600):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    dest = tmp_path_factory.mktemp("tiny") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = dest / "params.yaml"
    params.write_text(params.read_text().replace("profile: smoke", "profile: tiny", 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_MLFLOW", "LAB_STAGE", "LAB_OUT", "DVC_"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(LAB_DATA_MIRROR=MIRROR, LAB_OFFLINE="1", PYTHONHASHSEED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    sh(["git", "init", "-q"], dest, env)
    sh(["git", "add", "-A"], dest, env)
    sh(["git", "commit", "-qm", "copy"], dest, env)
    out = sh(["dvc", "repro"], dest, env)
    sh(["git", "add", "dvc.lock"], dest, env)  # as a user would: experiments start from the committed lock
    sh(["git", "commit", "-qm", "repro"], dest, env)
    return dest, env, out


def mlflow_runs(root):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_repro_runs_every_stage_and_tracks_it(tiny_repo):
    root, env, out = tiny_repo
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
        assert (root / "outputs" / stage / "notebook.ipynb").is_file()
    metrics = json.loads((root / "outputs" / "firststage" / "metrics.json").read_text())
    assert set(metrics) == {"trec-dl-2019", "trec-dl-2020"}
    assert set(metrics["trec-dl-2019"]) == {"bm25", "splade_pp_ed"}
    runs = {r.data.tags["stage"]: r for r in mlflow_runs(root)}
    assert set(runs) == set(STAGES)
    assert all(r.info.status == "FINISHED" and r.data.tags["profile"] == "tiny" for r in runs.values())
    first = runs["firststage"].data.metrics
    assert first["trec-dl-2019.bm25.ndcg_10"] == metrics["trec-dl-2019"]["bm25"]["ndcg_10"]
    claims = json.loads((root / "outputs" / "first_report" / "metrics.json").read_text())["claims"]
    assert {"first_stage_ndcg_10", "trained_single_ndcg_10", "joint_minus_lm", "latency_ratio"} <= set(claims)
    shown = sh(["dvc", "metrics", "show", "--json"], root, env)
    assert "ndcg_10" in shown
    html = root / "plots.html"
    sh(["dvc", "plots", "show", "--html-template", "dvc_plots/offline.html", "-o", str(root / "plots")], root, env)
    page = (root / "plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed" in page


def test_second_repro_does_nothing(tiny_repo):
    root, env, _ = tiny_repo
    t0 = time.perf_counter()
    out = sh(["dvc", "repro"], root, env)
    elapsed = time.perf_counter() - t0
    assert "Running stage" not in out, out
    print(f"second dvc repro: {elapsed:.2f} s")


def test_exp_run_temp_reruns_only_changed_stage_and_logs_to_main_db(tiny_repo):
    root, env, _ = tiny_repo
    before = {r.info.run_id for r in mlflow_runs(root)}
    out = sh(["dvc", "exp", "run", "--temp", "-S", "firststage.alpha=0.01"], root, env)
    assert "Running stage 'firststage'" in out
    assert "Running stage 'data'" not in out and "Running stage 'models'" not in out
    assert "Running stage 'first_train'" not in out and "Running stage 'first_rerank'" not in out
    new = [r for r in mlflow_runs(root) if r.info.run_id not in before]
    assert len(new) == 1 and new[0].data.tags["stage"] == "firststage"
    assert new[0].info.status == "FINISHED"
    assert new[0].data.params["firststage.alpha"] == "0.01"
    assert new[0].data.tags["dvc_exp"], "DVC experiment name tag missing"


def test_same_params_same_bytes(tiny_repo):
    root, env, _ = tiny_repo
    first = (root / "outputs" / "firststage" / "metrics.json").read_bytes()
    per_query = (root / "outputs" / "firststage" / "per_query.csv").read_bytes()
    sh(["dvc", "repro", "-f", "-s", "firststage"], root, env)
    assert (root / "outputs" / "firststage" / "metrics.json").read_bytes() == first
    assert (root / "outputs" / "firststage" / "per_query.csv").read_bytes() == per_query
