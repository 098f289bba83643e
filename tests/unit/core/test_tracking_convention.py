"""lab.tracking's convention: one model-training experiment per paper, children per configuration with the
same metric names, TREC DL inputs with their digest, the git commit as source, interactive runs apart.

One sqlite database for the module (creating one runs MLflow's migrations, ~3 s)."""

import hashlib
import os
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from lab import tracking
from tests.conftest import REPO


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    for name, qrels in (("trec-dl-2019", "1 0 d1 2\n1 0 d2 0\n2 0 d3 1\n"), ("trec-dl-2020", "5 0 d9 3\n")):
        (root / "data" / name).mkdir(parents=True)
        (root / "data" / name / "qrels.txt").write_text(qrels)
        (root / "data" / name / "queries.tsv").write_text("1\tq one\n2\tq two\n")
    (root / "notebooks" / "first").mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "params.yaml"], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    for var in ("DVC_ROOT", "MLFLOW_TRACKING_URI", tracking.ENV_RUN_ID, tracking.ENV_STAGE, tracking.ENV_OUT_DIR,
                "JPY_SESSION_NAME"):
        mp.delenv(var, raising=False)
    yield root, commit, MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    mp.undo()


def test_paper_of_stage_names():
    assert [tracking.paper_of(s) for s in ("first_rerank", "nanovdr_distill", "laser_train", "specontext_eval")] == [
        "first", "nanovdr", "laser", "specontext"]
    assert {tracking.paper_of(s) for s in ("data", "models", "firststage", "report")} == {"foundation"}
    assert tracking.experiment_name("lab", "first") == "lab/first"
    assert tracking.experiment_name("team/first", "nanovdr") == "team/first"


def test_stage_run_children_inputs_and_source(repo):
    root, commit, client = repo
    run = tracking.start_run("first_rerank", profile="tiny", params={"first": {"depth": 20}},
                             out_dir=root / "outputs" / "first_rerank", root=root,
                             extra_tags={"notebook": "notebooks/first/02-first-rerank.py"})
    exp = client.get_experiment_by_name("lab/first")
    assert exp is not None and exp.tags[tracking.KIND_TAG] == "custom_model_development"
    for i, (model, decoding) in enumerate((("zeroshot", "single"), ("joint", "single"), ("joint", "gen"))):
        run.child(f"bm25/{model}_{decoding}", params={"model": model, "decoding": decoding, "first_stage": "bm25"},
                  metrics={"ndcg_10": 0.1 * i, "ndcg_5": 0.2, "p_value": 0.5})
    with pytest.raises(RuntimeError):
        with run.child("broken", params={"model": "x"}, end=False) as c:
            c.log_metrics({"ndcg_10": 0.0})
            raise RuntimeError("boom")
    tracking.end_run(run.run_id, root=root)

    parent = client.get_run(run.run_id)
    kids = run.children()
    assert [k.data.tags["child"] for k in kids] == ["bm25/zeroshot_single", "bm25/joint_single", "bm25/joint_gen",
                                                    "broken"]
    assert [k.info.status for k in kids] == ["FINISHED"] * 3 + ["FAILED"]
    assert all(k.info.experiment_id == exp.experiment_id for k in kids)
    assert [k.data.metrics["ndcg_10"] for k in kids[:3]] == pytest.approx([0.0, 0.1, 0.2])
    assert {frozenset(k.data.metrics) for k in kids[:3]} == {frozenset({"ndcg_10", "ndcg_5", "p_value"})}
    assert kids[1].data.params == {"model": "joint", "decoding": "single", "first_stage": "bm25"}
    # the child metrics never reach the stage's metrics.json (DVC's view is the parent's)
    assert not (root / "outputs" / "first_rerank" / "metrics.json").exists()

    want = hashlib.sha256()
    for f in ("qrels.txt", "queries.tsv"):
        want.update(f.encode() + b"\0" + (root / "data" / "trec-dl-2019" / f).read_bytes())
    for r in (parent, *kids):
        assert r.data.tags["mlflow.source.git.commit"] == commit
        assert r.data.tags["mlflow.source.name"] == "notebooks/first/02-first-rerank.py"
        assert r.data.tags["paper"] == "first" and r.data.tags["source"] == "stage"
        inputs = {d.dataset.name: d.dataset for d in r.inputs.dataset_inputs}
        assert set(inputs) == {"trec-dl-2019", "trec-dl-2020"}
        assert inputs["trec-dl-2019"].digest == want.hexdigest()[:16]
    assert tracking.child_runs("first_rerank", profile="tiny", root=root)[0].info.run_id == kids[0].info.run_id
    assert tracking.child_runs("first_rerank", profile="smoke", root=root) == []


def test_foundation_experiment_and_existing_experiment_gets_kind(repo):
    root, _, client = repo
    client.create_experiment("lab/nanovdr")            # an older lab: no kind tag, the UI would infer GenAI
    tracking.start_run("nanovdr_index", profile="tiny", params={}, out_dir=root / "outputs" / "x", root=root)
    assert client.get_experiment_by_name("lab/nanovdr").tags[tracking.KIND_TAG] == tracking.KIND
    run = tracking.start_run("report", profile="tiny", params={}, out_dir=root / "outputs" / "report", root=root)
    assert client.get_run(run.run_id).info.experiment_id == client.get_experiment_by_name("lab/foundation").experiment_id
    run.log_datasets(root / "data")                    # logging again adds nothing
    assert len(client.get_run(run.run_id).inputs.dataset_inputs) == 2


def test_interactive_current_runs_from_the_repo_root(repo, monkeypatch):
    root, _, client = repo
    monkeypatch.chdir(root / "notebooks" / "first")     # a JupyterLab kernel's cwd: the notebook's folder
    monkeypatch.setenv("JPY_SESSION_NAME", str(root / "notebooks" / "first" / "03-first-report.py"))
    run = tracking.current("first_report", "outputs/first_report", params={"a": 1}, profile="tiny")
    assert os.getcwd() == str(root)
    assert run.out_dir == root / "outputs" / "interactive" / "first_report"
    run.log_metrics({"x": 1.0})
    assert (run.out_dir / "metrics.json").is_file() and not (root / "outputs" / "first_report").exists()
    tags = client.get_run(run.run_id).data.tags
    assert tags["source"] == "interactive" and tags["mlflow.source.name"] == "notebooks/first/03-first-report.py"
    tracking.end_run(run.run_id, root=root)


def test_experiment_urls_open_the_runs_table(repo):
    root, _, client = repo
    urls = tracking.experiment_urls("http://127.0.0.1:5000", root=root)
    first = client.get_experiment_by_name("lab/first").experiment_id
    assert urls["lab/first"] == f"http://127.0.0.1:5000/#/experiments/{first}/runs?workflowType=machine_learning"
    assert "Default" not in urls and set(urls) >= {"lab/first", "lab/foundation", "lab/nanovdr"}
