"""`python -m lab.config check` and the stage guard: a mistyped params.yaml costs nothing (issue 14).

Every section under every profile is validated before anything runs; dvc.yaml's outs are all `persist: true`
and cached, so DVC does not delete outputs before a command that the check rejects."""

import hashlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from lab import config, stage
from lab.config import PROFILES, ConfigError
from tests.conftest import REPO

PARAMS = (REPO / "params.yaml").read_text()
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def broken(tmp_path, text):
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def without_section(name):
    raw = yaml.safe_load(PARAMS)
    del raw[name]
    return yaml.safe_dump(raw, sort_keys=False)


def test_repo_params_pass_for_every_profile():
    loaded = config.check(REPO / "params.yaml")
    assert set(loaded) == set(PROFILES)
    raw = yaml.safe_load(PARAMS)
    for sections in loaded.values():
        assert set(sections) == set(raw) - {"profile", "seed"}


def test_pipeline_sections_are_what_dvc_yaml_reads():
    names = config.pipeline_sections(REPO / "dvc.yaml")
    assert names[0] == "tracking"
    assert {"data", "models", "firststage", "first", "nanovdr"} <= set(names)
    assert not {"profile", "seed"} & set(names)
    assert config.pipeline_sections(REPO / "no-such-dvc.yaml") == []


@pytest.mark.parametrize("text, message", [
    (PARAMS.replace("    lam: 10.0\n", "    lam: 10.0\n    lamda: 1.0\n", 1),
     r"first\.optim: unknown key 'lamda' \(did you mean 'lam'\?\)"),
    (PARAMS.replace("    lr: 5.0e-4\n", '    lr: "fast"\n', 1),
     r"first\.optim\.lr: expected a float, got str \('fast'\).*\[profile smoke, tiny\]"),  # paper overrides lr
    (without_section("nanovdr"), r"missing section 'nanovdr'"),
    (PARAMS.replace("      depth: 20\n      max_queries: 5\n", "      depth: twenty\n      max_queries: 5\n", 1),
     r"data\.depth: expected an int, got str \('twenty'\) \[profile tiny\]"),  # only the tiny override is bad
    (PARAMS.replace("seed: 42\n", "seed: '42'\nnanovrd: {}\n", 1),
     r"2 problems:\n.*seed: expected an int.*\n.*unknown top-level key 'nanovrd' \(did you mean 'nanovdr'\?\)"),
], ids=["typo", "wrong-type", "missing-section", "bad-profile-override", "several"])
def test_check_rejects_and_names_the_key(tmp_path, text, message):
    assert text != PARAMS
    with pytest.raises(ConfigError, match=message):
        config.check(broken(tmp_path, text))


def test_check_reports_every_broken_section(tmp_path):
    text = PARAMS.replace("    lam: 10.0\n", "    lamda: 10.0\n", 1).replace("  test: ttest\n  alpha: 0.05\n  data_dir",
                                                                          "  test: ttest\n  alfa: 0.05\n  data_dir", 1)
    with pytest.raises(ConfigError) as e:
        config.check(broken(tmp_path, text))
    assert "unknown key 'lamda'" in str(e.value) and "nanovdr: unknown key 'alfa'" in str(e.value)


def test_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "lab.config", "check", "--params", str(REPO / "params.yaml")],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and "ok" in ok.stdout, ok.stderr
    bad = broken(tmp_path, PARAMS.replace("    lam: 10.0\n", "    lamda: 10.0\n", 1))
    res = subprocess.run([sys.executable, "-m", "lab.config", "check", "--params", str(bad)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1
    assert "first.optim: unknown key 'lamda' (did you mean 'lam'?)" in res.stderr
    assert "nothing was run and no output was touched" in res.stderr


def test_every_dvc_out_is_persistent_and_cached():
    """Without persist, DVC deletes a stage's outs before running its command (a rejected one included), and a
    missing section fails in DVC itself after that deletion; without cache, `dvc exp run --temp` (no run-cache
    under persist) could not check an unchanged stage's metrics out."""
    for name, spec in STAGES.items():
        for kind in ("outs", "metrics", "plots"):
            for entry in spec.get(kind, []):
                assert isinstance(entry, dict), f"{name}: {entry} needs persist: true"
                ((path, opts),) = entry.items()
                assert opts.get("persist") is True, f"{name}: {path} needs persist: true"
                assert opts.get("cache", True) is True, f"{name}: {path} must be cached"


def sha(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_stage_rejects_bad_params_before_touching_anything(repo_copy, capsys, monkeypatch):
    (repo_copy / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    out = repo_copy / "outputs" / "first_train"
    for rel in ("adapters/joint/adapter.safetensors", "notebook.ipynb", "metrics.json"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(rel)
    (repo_copy / "data" / "trec-dl-2019").mkdir(parents=True)
    (repo_copy / "data" / "trec-dl-2019" / "queries.tsv").write_text("1\tq\n")
    before = sha(repo_copy)
    (repo_copy / "params.yaml").write_text(PARAMS.replace("    lam: 10.0\n", "    lamda: 10.0\n", 1))
    monkeypatch.setenv("DVC_STAGE", "first_train")
    assert stage.main(["first_train", str(REPO / "notebooks/first/01-first-train.py"), "--section", "first"]) == 1
    err = capsys.readouterr().err
    assert "first.optim: unknown key 'lamda' (did you mean 'lam'?)" in err
    assert re.search(r"stage first_train: nothing was run, no MLflow run opened; left as they were: "
                     r"outputs/first_train/ \(adapters, notebook\.ipynb, .*metrics\.json\)", err), err
    assert "DVC removed" not in err
    after = sha(repo_copy)
    assert {k: v for k, v in after.items() if k != "params.yaml"} == {k: v for k, v in before.items()
                                                                     if k != "params.yaml"}
    assert not (repo_copy / "mlflow.db").exists() and not list((repo_copy / "outputs").glob(".*"))


def test_untouched_names_outs_dvc_would_have_removed(repo_copy, monkeypatch):
    text = (REPO / "dvc.yaml").read_text().replace("      - data: {persist: true}\n", "      - data\n", 1)
    (repo_copy / "dvc.yaml").write_text(text)
    monkeypatch.setenv("DVC_STAGE", "data")
    msg = stage.untouched("data", repo_copy)
    assert "left as they were: outputs/data/ (" in msg and "DVC removed data before running this stage" in msg
    monkeypatch.delenv("DVC_STAGE")
    assert "DVC removed" not in stage.untouched("data", repo_copy)


WRITER = '''# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/x"

# %%
import pathlib
import lab.tracking
run = lab.tracking.current("firststage", out_dir)
assert not pathlib.Path("extra").exists(), "the previous extra/ must be moved aside"
pathlib.Path("extra").mkdir()
pathlib.Path("extra", "{name}.txt").write_text("{name}")
run.log_metrics({{"ok": 1.0}})
{tail}
'''


@pytest.mark.slow
def test_outputs_outside_the_stage_folder_are_replaced_whole_or_restored(repo_copy):
    """A persisted out the notebook writes in place (data/, models/) keeps no stale file and survives a failure."""
    (repo_copy / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"firststage": {
        "cmd": "python -m lab.stage firststage nb.py", "deps": ["nb.py"], "params": ["profile", "firststage"],
        "outs": [{"extra": {"persist": True}}, {"outputs/firststage/notebook.ipynb": {"persist": True}}],
        "metrics": [{"outputs/firststage/metrics.json": {"persist": True}}]}}}))
    (repo_copy / "extra").mkdir()
    (repo_copy / "extra" / "stale.txt").write_text("from an earlier run")
    nb = repo_copy / "nb.py"
    nb.write_text(WRITER.format(name="new", tail=""))
    stage.run_stage("firststage", nb)
    assert sorted(p.name for p in (repo_copy / "extra").iterdir()) == ["new.txt"]
    nb.write_text(WRITER.format(name="partial", tail='raise RuntimeError("boom")'))
    with pytest.raises(stage.StageFailed, match="previous ones left as they were"):
        stage.run_stage("firststage", nb)
    assert sorted(p.name for p in (repo_copy / "extra").iterdir()) == ["new.txt"]
    assert (repo_copy / "outputs" / "firststage" / "metrics.json").is_file()
    assert not list((repo_copy / "outputs").glob(".*"))
    shutil.rmtree(repo_copy / "extra")
