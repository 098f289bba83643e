"""NanoVDR's report puts retention on the distill stage's objective runs (lab.methods.nanovdr.compare)."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lab import tracking
from lab.methods.nanovdr import compare as nanovdr_compare
from tests.conftest import REPO

SUMMARY = pd.DataFrame([
    {"run": r, "measure": m, "mean": v, "delta": v - t, "p_value": p}
    for r, p in (("teacher", float("nan")), ("student-cosine", 0.2), ("student-mse", 0.01))
    for m, t in (("ndcg_10", 0.6), ("ndcg_5", 0.5))
    for v in [{"teacher": t, "student-cosine": t * 0.9, "student-mse": t * 0.5}[r]]])
RETENTION = SUMMARY.assign(retention=lambda d: d["mean"] / d["measure"].map({"ndcg_10": 0.6, "ndcg_5": 0.5}))


def test_objective_metrics_same_names_per_objective():
    got = nanovdr_compare.objective_metrics(SUMMARY, RETENTION, ["cosine", "mse"])
    assert set(got) == {"cosine", "mse"} and {frozenset(v) for v in got.values()} == {
        frozenset({"retention", "retention_ndcg_5", "ndcg_10", "ndcg_5", "delta", "p_value"})}
    assert got["cosine"]["retention"] == pytest.approx(0.9) and got["mse"]["p_value"] == 0.01


def test_retention_lands_on_the_distill_children(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    for var in ("DVC_ROOT", "MLFLOW_TRACKING_URI", tracking.ENV_RUN_ID, tracking.ENV_STAGE, tracking.ENV_OUT_DIR):
        monkeypatch.delenv(var, raising=False)
    metrics = nanovdr_compare.objective_metrics(SUMMARY, RETENTION, ["cosine", "mse"])
    report = tracking.start_run("nanovdr_report", profile="tiny", params={}, out_dir=tmp_path / "r", root=tmp_path)
    assert nanovdr_compare.log_objectives(report, metrics, profile="tiny") == "report"   # no distill run yet
    distill = tracking.start_run("nanovdr_distill", profile="tiny", params={}, out_dir=tmp_path / "d", root=tmp_path)
    for objective in ("cosine", "mse"):
        distill.child(objective, params={"objective": objective}, tags={"objective": objective})
    distill.end()
    report2 = tracking.start_run("nanovdr_report", profile="tiny", params={}, out_dir=tmp_path / "r2", root=tmp_path)
    assert nanovdr_compare.log_objectives(report2, metrics, profile="tiny") == "distill"
    kids = {r.data.params["objective"]: r for r in distill.children()}
    assert {o: r.data.metrics["retention"] for o, r in kids.items()} == pytest.approx({"cosine": 0.9, "mse": 0.5})
    assert all(r.data.tags["evaluated_by"] == report2.run_id for r in kids.values())
    assert not report2.children()
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    assert len(client.get_run(kids["cosine"].info.run_id).inputs.dataset_inputs) == 0   # no data/ in this repo
