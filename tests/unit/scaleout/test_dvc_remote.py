"""A DVC remote shares a stage's outputs: push to a local-folder remote, wipe the cache and the outputs, `dvc pull`
restores them byte for byte, `dvc status` is clean and `dvc repro` does not rerun the stage (S3/GCS remotes work
the same way; README "Sharing outputs"). A toy DVC repo with one tiny stage, the repo's own `dvc`; ~10 s."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DVC = Path(sys.executable).with_name("dvc")

# The stage counts its own runs in a file DVC does not track, so a rerun is visible.
STAGE_CMD = ("python -c \"import pathlib; p = pathlib.Path('runs.log'); p.write_text(p.read_text() + 'x' "
             "if p.exists() else 'x'); o = pathlib.Path('outputs/toy'); o.mkdir(parents=True, exist_ok=True); "
             "(o / 'metrics.json').write_text('{\\\"ndcg_10\\\": 0.5}'); (o / 'run.trec').write_text('q1 Q0 d1 1 2.0 toy')\"")


def _sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("DVC_ROOT", None)
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.skipif(not DVC.is_file(), reason="dvc is not installed beside this python")
def test_push_wipe_pull_restores_outputs_without_recomputing(tmp_path):
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    _sh(repo, "git", "init", "-q")
    _sh(repo, str(DVC), "init", "-q")
    _sh(repo, str(DVC), "config", "core.analytics", "false")
    _sh(repo, str(DVC), "stage", "add", "-q", "-n", "toy", "-o", "outputs/toy", STAGE_CMD)
    _sh(repo, str(DVC), "repro", "-q")
    before = {p.name: p.read_bytes() for p in (repo / "outputs" / "toy").iterdir()}
    assert (repo / "runs.log").read_text() == "x" and set(before) == {"metrics.json", "run.trec"}
    _sh(repo, str(DVC), "remote", "add", "-d", "shared", str(remote))
    _sh(repo, str(DVC), "push", "-q")
    assert remote.is_dir() and any(p.is_file() for p in remote.rglob("*"))
    # a teammate's fresh state: no cache, no outputs (dvc.lock travels with git)
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "outputs")
    _sh(repo, str(DVC), "pull", "-q")
    assert {p.name: p.read_bytes() for p in (repo / "outputs" / "toy").iterdir()} == before
    status = _sh(repo, str(DVC), "status")
    assert "up to date" in status.lower(), status
    _sh(repo, str(DVC), "repro", "-q")
    assert (repo / "runs.log").read_text() == "x"          # pulled, not recomputed
