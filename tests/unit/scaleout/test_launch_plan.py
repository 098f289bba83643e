"""The launch decision (lab.train.launch.plan) as a pure function of profile, setting, machine and environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lab import config
from lab.train import launch

REPO = Path(__file__).resolve().parents[3]


def test_smoke_and_tiny_stay_in_process():
    for profile in ("smoke", "tiny"):
        p = launch.plan(profile, launch="accelerate", gpus=8, env={})
        assert p.mode == "inprocess"
    assert launch.plan("paper", launch="inprocess", gpus=8, env={}).mode == "inprocess"


def test_paper_launches_one_process_per_gpu_or_lab_num_processes():
    p = launch.plan("paper", launch="accelerate", gpus=4, env={}, mixed_precision="bf16")
    assert (p.mode, p.num_processes, p.multi_gpu, p.cpu, p.mixed_precision) == ("accelerate", 4, True, False, "bf16")
    p = launch.plan("paper", launch="accelerate", gpus=4, env={"LAB_NUM_PROCESSES": "2"})
    assert (p.num_processes, p.multi_gpu, p.mixed_precision) == (2, True, "no")
    p = launch.plan("paper", launch="accelerate", gpus=1, env={})
    assert (p.num_processes, p.multi_gpu) == (1, False)
    p = launch.plan("paper", launch="accelerate", gpus=0, env={})            # dry run on a CPU machine
    assert (p.mode, p.num_processes, p.cpu) == ("accelerate", 1, True)
    p = launch.plan("paper", launch="accelerate", gpus=0, env={"LAB_NUM_PROCESSES": "2"})
    assert (p.num_processes, p.multi_gpu, p.cpu) == (2, True, True)          # gloo on the CPU
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="LAB_NUM_PROCESSES"):
            launch.plan("paper", launch="accelerate", gpus=2, env={"LAB_NUM_PROCESSES": bad})
    with pytest.raises(ValueError, match="only 2 CUDA"):
        launch.plan("paper", launch="accelerate", gpus=2, env={"LAB_NUM_PROCESSES": "4"})


def test_never_launches_twice():
    for var in ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_PROCESS_INDEX"):
        assert launch.plan("paper", launch="accelerate", gpus=8, env={var: "0"}).mode == "inprocess"


def test_deepspeed_zero3_needs_gpus_and_goes_to_the_trainer():
    p = launch.plan("paper", launch="accelerate", gpus=8, env={}, deepspeed="zero3", mixed_precision="bf16")
    assert p.deepspeed and p.num_processes == 8
    argv = launch.command(p, "lab.methods.first.train", ["train", "--variant", "joint"], port=29600)
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[argv.index("--num_processes") + 1] == "8" and argv[argv.index("--mixed_precision") + 1] == "bf16"
    assert "--multi_gpu" in argv and argv[argv.index("--main_process_port") + 1] == "29600"
    assert "--use_deepspeed" not in argv                      # the Trainer's ZeRO-3 JSON configures DeepSpeed
    assert argv[-5:] == ["-m", "lab.methods.first.train", "train", "--variant", "joint"]
    with pytest.raises(ValueError, match="needs CUDA"):
        launch.plan("paper", launch="accelerate", gpus=0, env={}, deepspeed="zero3")
    with pytest.raises(ValueError, match="nothing to launch"):
        launch.command(launch.plan("smoke"), "m", [])


def test_nanovdr_paper_profile_settings(monkeypatch):
    monkeypatch.delenv("LAB_PAPER_DRY_RUN", raising=False)
    from lab.methods.nanovdr import distill

    paper = config.load("nanovdr", "paper", REPO / "params.yaml")
    smoke = config.load("nanovdr", "smoke", REPO / "params.yaml")
    assert (paper.train.launch, paper.train.mixed_precision, paper.train.batch_size) == ("accelerate", "bf16", 512)
    assert (smoke.train.launch, smoke.train.mixed_precision) == ("inprocess", "fp32")
    assert distill.train_settings(paper, 0).mixed_precision == "bf16"
    assert distill.train_settings(smoke, 0).mixed_precision == "fp32"
