"""A NanoVDR student trained under `accelerate launch` (one CPU process, the paper profile's path) equals the
in-process run: same curve, same saved weights. The 2-process DDP equivalence of the one trainer itself is
tests/unit/train/test_launch.py."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lab.methods.nanovdr import distill as nanovdr_distill
from lab.methods.nanovdr import launched
from lab.train import launch


@pytest.mark.slow
def test_accelerate_launched_student_equals_in_process(tiny_index, make_cfg, tmp_path, monkeypatch):
    cfg, index_dir, _ = tiny_index
    cfg = make_cfg(data_dir=cfg.data_dir, index_dir=str(index_dir), train={"epochs": 2, "launch": "accelerate"})
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))          # no resume state shared between the two
    plan = launch.plan("paper", launch=cfg.train.launch, gpus=0, env={})
    assert (plan.mode, plan.num_processes, plan.cpu) == ("accelerate", 1, True)
    inproc = make_cfg(data_dir=cfg.data_dir, index_dir=str(index_dir), train={"epochs": 2})
    local = nanovdr_distill.distill(inproc, "cosine", tmp_path / "a.safetensors", seed=3, progress=False, cache=None)
    remote = launched.distill_launched(plan, cfg, "cosine", tmp_path / "b.safetensors", seed=3, progress=False)
    assert list(remote["epoch"]) == list(local["epoch"]) == [1, 2]
    for col in ("train_loss", "val_loss", "val_cosine"):
        assert remote[col].tolist() == pytest.approx(local[col].tolist(), rel=1e-5), col
    assert remote.attrs["best_epoch"] == local.attrs["best_epoch"]
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
