"""``python experiments/nanovdr/smoke.py`` (the command README's NanoVDR section cites) runs as written, from the
repo's own files: here on the tiny profile, with the fake TREC data of this folder's conftest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_smoke_script_runs_on_the_tiny_profile(fake_data, lab_cache, tmp_path):
    out = tmp_path / "smoke"
    env = {**os.environ, "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}          # LAB_CACHE: the tests' own cache
    proc = subprocess.run([sys.executable, "experiments/nanovdr/smoke.py", "--profile", "tiny", "--out", str(out),
                           "--set", f"data_dir={fake_data}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "smoke_results.json").read_text())
    assert results["profile"] == "tiny" and results["seed"] == 42                 # params.yaml's seed
    assert results["config"]["data_dir"] == str(fake_data)
    objectives = ["cosine", "mse", "infonce", "listwise_kl", "margin_mse", "cosine_kl"]
    assert sorted(results["distill"]) == sorted(objectives)
    assert sorted(p.name for p in (out / "students").iterdir()) == sorted(f"{o}.safetensors" for o in objectives)
    runs = {r["run"] for r in results["retention"]}
    assert runs == {"teacher", "bm25", "student-untrained", *(f"student-{o}" for o in objectives)}
    assert {r["retention"] for r in results["retention"] if r["run"] == "teacher"} == {1.0}
