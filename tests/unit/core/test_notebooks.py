"""Notebooks communicate, `lab` repeats: no def/class in notebooks, a parameters cell, a figure, prose."""

import ast

import jupytext
import pytest
import yaml

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*/*.py"))
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path):
    paper = path.parent.name
    assert path.name.split("-")[0].isdigit() and f"-{paper}-" in path.name, "name: NN-<paper>-<step>.py"
    nb = jupytext.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert {"profile", "out_dir"} <= {t.id for n in ast.walk(ast.parse(params[0].source)) for t in
                                       (getattr(n, "targets", []) or []) if isinstance(t, ast.Name)}
    for cell in code:
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
                f"{path.name}: move {getattr(node, 'name', 'lambda')} into src/lab")
    text = path.read_text()
    assert "log_figure(" in text, "every notebook shows a figure"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 2, "a title and a sentence on what it shows"


def test_every_stage_runs_a_notebook_it_depends_on():
    """Every stage is a notebook run by lab.stage, except the bench_* stages: a bench/ script writing the JSON the
    claims read (speed is measured by bench scripts, not notebooks)."""
    for name, stage in STAGES.items():
        cmd = stage["cmd"].split()
        if name.startswith("bench_"):
            assert cmd[0] == "python" and cmd[1].startswith("bench/") and cmd[1] in stage["deps"], name
            assert "profile" in stage["params"] and next(iter(stage["outs"][0])).startswith("outputs/bench/"), name
            continue
        assert cmd[:3] == ["python", "-m", "lab.stage"] and cmd[3] == name, name
        notebook = cmd[4]
        assert (REPO / notebook).is_file(), notebook
        assert notebook in stage["deps"], f"{name}: the notebook must be a dep"
        assert "profile" in stage["params"], f"{name}: every stage depends on the profile"
