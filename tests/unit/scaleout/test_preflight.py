"""The paper profile fails fast, before any output is touched or an MLflow run opened, with one message naming what
is missing (GPU, Hub); LAB_PAPER_DRY_RUN=1 skips the check and loads the sections' paper_dry_run overlays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import config, preflight, stage

REPO = Path(__file__).resolve().parents[3]


def _as_paper(repo: Path) -> None:
    text = (repo / "params.yaml").read_text()
    assert text.startswith("#") and "\nprofile: smoke\n" in text
    (repo / "params.yaml").write_text(text.replace("\nprofile: smoke\n", "\nprofile: paper\n", 1))


def test_missing_names_what_each_stage_needs(monkeypatch):
    monkeypatch.delenv(preflight.ENV_DRY_RUN, raising=False)
    no_gpu, no_hub = (lambda: "a CUDA GPU (x)"), (lambda: "Hugging Face Hub access (y)")
    ok = lambda: None  # noqa: E731
    assert preflight.missing("nanovdr_distill", gpu=no_gpu, hub=no_hub) == ["a CUDA GPU (x)",
                                                                            "Hugging Face Hub access (y)"]
    assert preflight.missing("first_train", gpu=ok, hub=no_hub) == ["Hugging Face Hub access (y)"]
    # the first stage fails fast for the whole pipeline, unless CPU-only stages are allowed explicitly
    assert preflight.missing("data", gpu=no_gpu, hub=ok) == ["a CUDA GPU (x)"]
    monkeypatch.setenv("LAB_PAPER_CPU_STAGES", "1")
    assert preflight.missing("data", gpu=no_gpu, hub=ok) == []
    assert preflight.missing("first_train", gpu=no_gpu, hub=ok) == ["a CUDA GPU (x)"]
    monkeypatch.delenv("LAB_PAPER_CPU_STAGES")
    assert preflight.missing("report", gpu=no_gpu, hub=no_hub) == []     # reads outputs only
    for profile in ("smoke", "tiny"):
        preflight.check("nanovdr_distill", profile, gpu=no_gpu, hub=no_hub)      # never checked
    with pytest.raises(preflight.PreflightError, match=r"needs a CUDA GPU \(x\) and Hugging Face Hub access \(y\)"):
        preflight.check("nanovdr_distill", "paper", gpu=no_gpu, hub=no_hub)
    preflight.check("nanovdr_distill", "paper", gpu=ok, hub=ok)
    monkeypatch.setenv(preflight.ENV_DRY_RUN, "1")
    preflight.check("nanovdr_distill", "paper", gpu=no_gpu, hub=no_hub)          # dry run: skipped


def test_real_probes_offline_and_without_cuda(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert preflight.hub_problem() == "Hugging Face Hub access (HF_HUB_OFFLINE is set)"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("LAB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")             # discard port: refused at once
    assert preflight.hub_problem().startswith("Hugging Face Hub access (127.0.0.1:9 unreachable")
    import torch

    if not torch.cuda.is_available():
        assert preflight.gpu_problem().startswith("a CUDA GPU (torch.cuda.is_available() is False")


def test_dry_run_overlay_is_paper_architecture(monkeypatch):
    monkeypatch.delenv(preflight.ENV_DRY_RUN, raising=False)
    paper = config.load("nanovdr", "paper", REPO / "params.yaml")
    assert paper.student == "hf:distilbert/distilbert-base-uncased"
    monkeypatch.setenv(preflight.ENV_DRY_RUN, "1")
    dry = config.load("nanovdr", "paper", REPO / "params.yaml")
    assert dry.student == "random:distilbert-tiny" and dry.benchmarks == ()
    # everything the overlay does not name stays the paper's
    assert (dry.train.lr, dry.train.finetune_backbone, dry.train.select_by) == (2e-4, True, "cosine")
    assert dry.teacher_instruction == paper.teacher_instruction
    assert config.load("nanovdr", "smoke", REPO / "params.yaml") == config.load("nanovdr", "smoke", REPO / "params.yaml",
                                                                                 dry_run=False)


def test_bad_dry_run_overlay_is_rejected_by_check(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("      student: random:distilbert-tiny\n",
                                                      "      studnet: random:distilbert-tiny\n", 1)
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(config.ConfigError, match=r"studnet.*\[profile paper\]"):
        config.check(tmp_path / "params.yaml")


def test_stage_cli_fails_fast_with_one_message(repo_copy):
    _as_paper(repo_copy)
    (repo_copy / "nb.py").write_text('# %% tags=["parameters"]\nprofile = "x"\nout_dir = "o"\n# %%\nraise SystemExit(3)\n')
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop(preflight.ENV_DRY_RUN, None)
    proc = subprocess.run([sys.executable, "-m", "lab.stage", "nanovdr_distill", "nb.py", "--section", "nanovdr"],
                          cwd=repo_copy, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: stage nanovdr_distill: the paper profile needs a CUDA GPU (")
    assert "Hugging Face Hub access (HF_HUB_OFFLINE is set)" in lines[0] and "LAB_PAPER_DRY_RUN=1" in lines[0]
    assert not (repo_copy / "mlflow.db").exists() and not (repo_copy / "outputs").exists()
