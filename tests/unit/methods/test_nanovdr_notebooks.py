"""The three NanoVDR notebooks: style rules, and an end-to-end run of their code on the tiny profile
(plus the three tiny ViDoRe sets of ``tests/unit/data/vidore_fixtures.py``, so the paper-profile cells run).

``lab.stage`` runs notebooks in a separate kernel, which cannot see a schema registered by a test, so
the code cells are executed here in-process (papermill's parameters injected as globals) in a scratch
repo whose params.yaml holds the ``nanovdr`` section (tiny profile, fake data). MLflow runs go to that
scratch repo's own database.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
NOTEBOOKS = sorted((REPO / "notebooks" / "nanovdr").glob("*.py"))


def cells(path: Path):
    import jupytext

    return jupytext.read(path).cells


def test_three_notebooks_with_parameters_cell_and_no_definitions():
    assert [p.name for p in NOTEBOOKS] == ["01-nanovdr-index.py", "02-nanovdr-distill.py", "03-nanovdr-report.py"]
    for path in NOTEBOOKS:
        nb = cells(path)
        params = [c for c in nb if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "profile" in params[0].source and "out_dir" in params[0].source, path
        code = "\n".join(c.source for c in nb if c.cell_type == "code")
        tree = ast.parse(code)
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defs, f"{path.name}: notebooks call into lab, they define nothing"
        assert "lab.tracking.current(" in code, f"{path.name}: the stage's tracking run"
        assert "log_figure" in code, f"{path.name}: its figures go to the run"
        assert "sns." in code or "plots." in code, f"{path.name}: figures drawn with seaborn or lab.eval.plots"
        assert any(c.cell_type == "markdown" for c in nb[2:]), f"{path.name}: a closing markdown sentence"


@pytest.mark.slow
def test_notebooks_run_end_to_end_on_the_tiny_profile(fake_data, lab_cache, make_cfg, tmp_path, monkeypatch):
    make_cfg()
    from lab.data import vidore
    from tests.unit.data.vidore_fixtures import REGISTRY, make_root, tiny_registry

    monkeypatch.setattr(vidore, "registry", tiny_registry)          # tiny ViDoRe sets: the paper-profile cells run too
    section = yaml.safe_load((REPO / "params.yaml").read_text())["nanovdr"]
    section.update(data_dir=str(fake_data), index_dir=str(tmp_path / "outputs" / "nanovdr_index"),
                   distill_dir=str(tmp_path / "outputs" / "nanovdr_distill"), benchmarks=list(REGISTRY),
                   benchmark_dir=str(make_root(tmp_path / "hub")))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(profile="tiny", nanovdr=section)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    for var in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "LAB_MLFLOW_RUN_ID", "LAB_STAGE", "LAB_OUT_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import lab.tracking

    for path, stage in zip(NOTEBOOKS, ("nanovdr_index", "nanovdr_distill", "nanovdr_report")):
        code = "\n".join(c.source for c in cells(path) if c.cell_type == "code"
                         and "parameters" not in c.metadata.get("tags", []))
        out_dir = tmp_path / "outputs" / stage
        run = lab.tracking.start_run(stage, profile="tiny", params={}, out_dir=out_dir, root=tmp_path)  # as lab.stage
        monkeypatch.setenv(lab.tracking.ENV_RUN_ID, run.run_id)
        monkeypatch.setenv(lab.tracking.ENV_STAGE, stage)
        monkeypatch.setenv(lab.tracking.ENV_OUT_DIR, str(out_dir))
        exec(compile(code, str(path), "exec"), {"profile": "tiny", "out_dir": str(out_dir), "__name__": "__main__"})
        lab.tracking.end_run(run.run_id, "FINISHED", tmp_path)
    out = tmp_path / "outputs"
    assert (out / "nanovdr_index" / "manifest.json").is_file()
    assert len(list((out / "nanovdr_distill" / "students").glob("*.safetensors"))) == 6
    assert (out / "nanovdr_report" / "retention.csv").is_file()
    import json

    metrics = json.loads((out / "nanovdr_report" / "metrics.json").read_text())
    assert set(metrics["retention"]["student-cosine"]) == {"ndcg_10", "ndcg_5"}
    assert set(metrics["retention"]["student-untrained"]) == {"ndcg_10", "ndcg_5"}   # the untrained floor
    import pandas as pd

    assert set(pd.read_csv(out / "nanovdr_report" / "retention.csv")["run"]) == {
        "teacher", "bm25", "student-untrained", *(f"student-{o}" for o in section["objectives"])}
    assert metrics["retention"]["teacher"]["ndcg_10"] == 1.0
    for stage in ("nanovdr_index", "nanovdr_distill", "nanovdr_report"):   # metrics.json: reproducible values only
        text = (out / stage / "metrics.json").read_text()
        assert "seconds" not in text and "timings" not in text and "_ms_" not in text and "cache" not in text
    assert {p.name for p in (out / "nanovdr_report" / "figures").glob("*.png")} == {
        "ndcg_10_by_run.png", "retention.png", "vidore_ndcg_5.png"}
    assert metrics["vidore"]["retention"]["teacher"] == 1.0
    assert set(metrics["vidore"]["ndcg_5"]["student-cosine"]) == {"v1", "v2", "v3"}
    assert (out / "nanovdr_report" / "vidore_per_set.csv").is_file()
    index_metrics = json.loads((out / "nanovdr_index" / "metrics.json").read_text())
    assert index_metrics["benchmarks"]["v1/tiny"] == {"pages": 3, "queries": 3}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lab/nanovdr")   # lab.tracking: one experiment per paper
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("objective")]
    assert sorted(r.data.tags["objective"] for r in children) == sorted(section["objectives"])
    assert all(r.info.status == "FINISHED" for r in children)
    parent = {r.data.tags.get("mlflow.parentRunId") for r in children}
    stage_runs = {r.info.run_id: r.data.tags["stage"] for r in runs if not r.data.tags.get("objective")}
    assert len(parent) == 1 and stage_runs[parent.pop()] == "nanovdr_distill"
    curve = client.get_metric_history(children[0].info.run_id, "val_cosine")
    assert [m.step for m in curve] == [1, 2]                      # tiny profile: 2 epochs, one point each
