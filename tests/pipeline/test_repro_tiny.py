"""`dvc repro` end to end on the tiny profile, in a temporary copy of the working tree.

Checks the pipeline contract: every stage runs through papermill and lands FINISHED in MLflow with the
same metrics DVC sees; a second repro does nothing; `dvc exp run --temp -S` reruns only the stage whose
params changed and logs to the main checkout's MLflow database; same params -> identical bytes; a params.yaml
that lab.config or DVC rejects (typo, wrong type, missing section) leaves every output byte-identical and
`dvc status` clean; the README's commands after `make repro` work as written (`source .venv/bin/activate`).
"""

import hashlib
import json
import os
import re
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

# every dvc.yaml stage runs on the tiny profile; the notebook stages land in MLflow, the bench stages write JSON
PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STAGES = tuple(name for name, st in PIPELINE.items() if st["cmd"].startswith("python -m lab.stage "))
BENCH = {name: next(iter(st["outs"][0])) for name, st in PIPELINE.items() if st["cmd"].startswith("python bench/")}

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
    assert set(BENCH) >= {"bench_nanovdr", "bench_laser", "bench_specontext", "bench_stages"}
    for stage, path in BENCH.items():  # the bench JSONs the claims read, of this profile
        assert f"Running stage '{stage}'" in out
        assert json.loads((root / path).read_text())["profile"] == "tiny", stage
    times = json.loads((root / "outputs" / "bench" / "stage_times.json").read_text())
    assert set(times["seconds"]) == set(STAGES) - {"report"} and times["groups"]["nanovdr"] > 0
    metrics = json.loads((root / "outputs" / "firststage" / "metrics.json").read_text())
    assert set(metrics) == {"trec-dl-2019", "trec-dl-2020"}
    assert set(metrics["trec-dl-2019"]) == {"bm25", "splade_pp_ed"}
    # tiny lists no BEIR set: the dense first stage writes an empty manifest (paper: one TREC run per set)
    assert json.loads((root / "outputs/first_firststage/runs/manifest.json").read_text()) == {}
    assert json.loads((root / "outputs/first_firststage/metrics.json").read_text())["n_sets"] == 0
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


# ---- issue 14: a rejected params.yaml loses nothing; the README's commands work as documented ----------------
def snapshot(root):
    """sha256 of every output file DVC or a stage writes, and of the lock."""
    files = [root / "dvc.lock", *(p for top in ("outputs", "data", "models") for p in (root / top).rglob("*"))]
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(files) if p.is_file()}


def without_nanovdr(text):
    raw = yaml.safe_load(text)
    del raw["nanovdr"]
    return yaml.safe_dump(raw, sort_keys=False)


BROKEN = {  # name: (edit of params.yaml, what the error must say)
    "typo": (lambda t: t.replace("    lam: 10.0\n", "    lam: 10.0\n    lamda: 1.0\n", 1),
             ["first.optim: unknown key 'lamda' (did you mean 'lam'?)",
              "stage first_train: nothing was run, no MLflow run opened; left as they were: outputs/first_train/ ("]),
    "wrong-type": (lambda t: t.replace("    lr: 5.0e-4\n", '    lr: "fast"\n', 1),
                   ["first.optim.lr: expected a float, got str ('fast')", "left as they were: outputs/first_train/"]),
    # DVC itself refuses params missing from params.yaml, after the point where it would delete outs
    "missing-section": (without_nanovdr, ["Parameters 'nanovdr.", "are missing from 'params.yaml'"]),
}


def status_clean(root, env):
    out = sh(["dvc", "status"], root, env)
    assert "Data and pipelines are up to date." in out, out
    return out


def reject(root, env, edit):
    """`dvc repro` with a broken params.yaml: must fail; params.yaml is put back afterwards."""
    params = root / "params.yaml"
    good = params.read_text()
    params.write_text(edit(good))
    assert params.read_text() != good
    try:
        res = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    finally:
        params.write_text(good)
    assert res.returncode != 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def test_rejected_params_leave_the_workspace_exactly_as_it_was(tiny_repo):
    root, env, _ = tiny_repo
    status_clean(root, env)
    before, runs_before = snapshot(root), len(mlflow_runs(root))
    assert any(k.startswith("outputs/first_train/") for k in before) and "outputs/first_train/metrics.json" in before
    for name, (edit, messages) in BROKEN.items():
        out = reject(root, env, edit)
        for message in messages:
            assert message in out, f"{name}: {message!r} not in\n{out[-3000:]}"
        assert "Running stage 'data'" not in out and "Running stage 'models'" not in out, name
        status_clean(root, env)
        assert snapshot(root) == before, f"{name}: outputs changed"
        assert len(mlflow_runs(root)) == runs_before, f"{name}: an MLflow run was opened"


def test_readme_commands_as_documented(tiny_repo):
    """The README's block after `make repro`, run as written: `source .venv/bin/activate` once, then the commands,
    from a shell whose PATH does not hold the venv."""
    root, env, _ = tiny_repo
    readme = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if b.startswith("source .venv/bin/activate"))
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert any(c.startswith("dvc exp run") for c in commands) and "python -m lab.expected" in commands
    venv_bin = Path(sys.executable).parent
    (root / ".venv").symlink_to(venv_bin.parent, target_is_directory=True)  # as `make setup` leaves it
    exclude = root / ".git" / "info" / "exclude"  # `.venv/` in .gitignore matches a folder, not this link
    exclude.parent.mkdir(exist_ok=True)
    exclude.write_text(exclude.read_text() + "\n/.venv\n" if exclude.exists() else "/.venv\n")
    path = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p and Path(p).resolve() != venv_bin.resolve())
    bare = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")} | {"PATH": path}
    assert shutil.which("python", path=path) is None or Path(shutil.which("python", path=path)).resolve() != \
        Path(sys.executable).resolve()
    try:  # one shell, as a user types them
        script = "set -e\n" + "\n".join(f"echo '+ {c}'\n{c}" for c in commands)
        res = subprocess.run(["bash", "-c", script], cwd=root, env=bare, capture_output=True, text=True, timeout=600)
    finally:
        (root / ".venv").unlink()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "ndcg_10" in out and "# workspace profile (params.yaml): tiny" in out
    assert "Running stage" not in out, "an experiment of an unchanged pipeline must check outputs out, not rerun"
    status_clean(root, env)


def test_without_persist_the_same_typo_costs_outputs(tiny_repo):
    """The guard's negative control: drop `persist` from first_train's outs and the typo run loses them."""
    root, env, _ = tiny_repo
    dvc_yaml = root / "dvc.yaml"
    good = dvc_yaml.read_text()
    start = good.index("  first_train:")
    end = good.index("\n  first_rerank:")
    dvc_yaml.write_text(good[:start] + good[start:end].replace(": {persist: true}", "")
                        .replace("          persist: true", "          cache: true") + good[end:])
    before = snapshot(root)
    try:
        out = reject(root, env, BROKEN["typo"][0])
        assert "DVC removed outputs/first_train/adapters" in out, out[-3000:]
        assert not (root / "outputs" / "first_train" / "metrics.json").exists()
        assert snapshot(root) != before  # what the test above would have caught
    finally:
        dvc_yaml.write_text(good)
        sh(["dvc", "checkout", "first_train"], root, env)  # every out is cached: all of it comes back
    status_clean(root, env)


# ---- issue 9: claims from measurements, the report stage ----------------------------------------------------------
def test_claims_are_judged_from_the_tiny_outputs(tiny_repo):
    """`python -m lab.expected` reads what the pipeline wrote: the tiny claims reproduce (so --strict passes on this
    profile), every smoke and paper claim is `not run` (outputs of profile tiny are never read for them)."""
    root, env, _ = tiny_repo
    out = sh([sys.executable, "-m", "lab.expected", "--strict"], root, env)
    verdicts = dict(re.findall(r"^  (\S+) +\[\w+\].*-> (reproduced|not reproduced|not run)", out, re.M))
    assert verdicts["tiny-bm25-dl19-ndcg10"] == verdicts["tiny-splade_pp_ed-dl19-ndcg10"] == "reproduced", out
    assert "smoke-joint-ge-lm-only" in verdicts and "bm25-dl19-ndcg10" in verdicts
    others = {k: v for k, v in verdicts.items() if not k.startswith("tiny-")}
    assert set(others.values()) == {"not run"}, out
    assert "not run: a smoke-profile claim; outputs: tiny" in out


def test_report_page_twin_and_readme(tiny_repo, tmp_path):
    """The report stage's page (one central table per paper, figures embedded, opens offline in headless Chromium),
    its claims.csv, and `make readme` rewriting every README block from its twin, idempotently."""
    import csv

    from tests import browser

    root, env, _ = tiny_repo
    rep = root / "outputs" / "report"
    rows = list(csv.DictReader((rep / "claims.csv").open()))
    assert len(rows) > 60 and {r["verdict"] for r in rows} == {"reproduced", "not run"}
    assert all(r["command"] and r["metric"].startswith("outputs/") for r in rows)
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    cmd = [sys.executable, "-m", "lab.report", "readme", "--readme", str(readme), "--profile", "tiny"]
    assert "rewritten" in sh(cmd, root, env)
    once = readme.read_text()
    assert "already up to date" in sh(cmd, root, env) and readme.read_text() == once
    sh([*cmd, "--check"], root, env)
    smoke = subprocess.run(cmd[:-2] + ["--check"], cwd=root, env=env, capture_output=True, text=True)
    assert smoke.returncode == 1 and "is of profile tiny" in smoke.stderr     # README's numbers come from smoke
    if browser.chromium() is None:
        pytest.skip(browser.SKIP_REASON)
    seen = browser.open_offline(rep / "index.html", tmp_path / "report.png")
    assert seen["central"] == ["foundation", "first", "nanovdr", "laser", "specontext"], seen["central"]
    assert seen["broken"] == 0 and seen["images"] >= 6, (seen["images"], seen["broken"])


# ---- issue 13: runs you can compare in MLflow; notebooks run interactively from their own folder ---------------
def stage_run(client, runs, stage):
    """The latest FINISHED run of ``stage`` that lab.stage opened (not a child, not interactive)."""
    found = [r for r in runs if r.data.tags.get("stage") == stage and r.data.tags.get("source") == "stage"
             and "mlflow.parentRunId" not in r.data.tags and r.info.status == "FINISHED"]
    return max(found, key=lambda r: r.info.start_time)


def test_mlflow_paper_experiments_children_inputs_and_source(tiny_repo):
    """One model-training experiment per paper; FIRST's report run has one child per configuration with ndcg_10
    (equal to summary.csv); NanoVDR's distill children carry the report's retention; every run has the TREC DL
    inputs with their digest and a git commit of this repo as source."""
    import pandas as pd

    root, env, _ = tiny_repo
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exps = {e.name: e for e in client.search_experiments()}
    assert {"lab/foundation", "lab/first", "lab/nanovdr"} <= set(exps)
    assert all(exps[n].tags.get("mlflow.experimentKind") == "custom_model_development" for n in exps if "/" in n)
    runs = mlflow_runs(root)
    assert {r.data.tags["stage"] for r in runs if r.info.experiment_id == exps["lab/foundation"].experiment_id} >= {
        "data", "models", "firststage", "report"}

    report = stage_run(client, runs, "first_report")
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == report.info.run_id]
    summary = pd.read_csv(root / "outputs" / "first_rerank" / "summary.csv")
    want = {(row.first_stage, row.config): row.mean for row in summary[summary["measure"] == "ndcg_10"].itertuples()}
    got = {}
    for k in kids:
        p = k.data.params
        config = "first_stage" if p["model"] == "none" else f"{p['model']}_{p['decoding']}"
        got[(p["first_stage"], config)] = k.data.metrics["ndcg_10"]
        assert {"ndcg_10", "ndcg_5"} <= set(k.data.metrics) and k.info.experiment_id == exps["lab/first"].experiment_id
    assert set(got) == set(want) and all(abs(got[c] - want[c]) < 5e-7 for c in want)

    distill = stage_run(client, runs, "nanovdr_distill")
    objectives = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == distill.info.run_id]
    retention = pd.read_csv(root / "outputs" / "nanovdr_report" / "retention.csv")
    want = {row.run.removeprefix("student-"): row.retention
            for row in retention[(retention["measure"] == "ndcg_10") & retention["run"].str.startswith("student-")
                                 & (retention["run"] != "student-untrained")].itertuples()}
    assert {r.data.params["objective"]: r.data.metrics["retention"] for r in objectives} == pytest.approx(want, abs=6e-7)  # csv: 6 decimals
    assert all({"ndcg_10", "p_value"} <= set(r.data.metrics) for r in objectives)

    digest = hashlib.sha256()
    for name in ("qrels.txt", "queries.tsv"):
        digest.update(name.encode() + b"\0" + (root / "data" / "trec-dl-2019" / name).read_bytes())
    for r in runs:
        inputs = {d.dataset.name: d.dataset.digest for d in r.inputs.dataset_inputs}
        assert inputs.get("trec-dl-2019") == digest.hexdigest()[:16], (r.data.tags.get("mlflow.runName"), inputs)
        commit = r.data.tags.get("mlflow.source.git.commit", "")
        assert re.fullmatch(r"[0-9a-f]{40}", commit), r.data.tags.get("mlflow.runName")
        sh(["git", "cat-file", "-e", f"{commit}^{{commit}}"], root, env)


KERNEL_RUN = """
import sys, jupytext, papermill
nb = jupytext.read(sys.argv[1])
papermill.execute_notebook(nb, sys.argv[2], parameters={"profile": "tiny"}, kernel_name="python3", language="python", cwd=sys.argv[3],
                           progress_bar=False)
"""


def test_report_notebook_runs_interactively_from_its_own_folder(tiny_repo, tmp_path):
    """As a JupyterLab kernel runs it (cwd = the notebook's folder, no lab.stage): 03-first-report reads the
    pipeline's outputs, writes only under outputs/interactive/first_report/, logs a source=interactive run, and
    `dvc status` is what it was."""
    root, env, _ = tiny_repo
    skip = ("outputs/interactive/", "mlflow.db", "mlartifacts/", ".git/", ".dvc/tmp/", ".dvc/cache/")
    def files():
        return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*")
                if p.is_file() and not p.relative_to(root).as_posix().startswith(skip)}
    status = sh(["dvc", "status"], root, env)
    before, runs_before = files(), {r.info.run_id for r in mlflow_runs(root)}
    folder = root / "notebooks" / "first"
    sh([sys.executable, "-c", KERNEL_RUN, str(folder / "03-first-report.py"), str(tmp_path / "run.ipynb"), str(folder)],
       root, env)
    assert files() == before, "an interactive run wrote outside outputs/interactive/"
    made = root / "outputs" / "interactive" / "first_report"
    assert {"main_table.csv", "ablation.csv", "metrics.json"} <= {p.name for p in made.iterdir()}
    assert sh(["dvc", "status"], root, env) == status
    new = [r for r in mlflow_runs(root) if r.info.run_id not in runs_before]
    (parent,) = [r for r in new if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["source"] == "interactive" and parent.data.tags["stage"] == "first_report"
    assert len(new) > 1 and all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in new if r is not parent)
