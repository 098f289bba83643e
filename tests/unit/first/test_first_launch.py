"""FIRST's paper profile trains through lab.train.launch: the decision (pure function of the config and the
machine), the hand-over of train_variant (config, windows and result through files, the CLI's arguments), and the
paper profile's dry run (LAB_PAPER_DRY_RUN=1) of the first_train stage under `accelerate launch`. The 2-process
DDP run of the one trainer itself is tests/unit/train/test_launch.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import lab.config
from lab.methods.first import launched, train as first_train
from lab.train import launch
from tests.unit.first.conftest import REPO, load_cfg

RZ_FIXTURE = Path(__file__).parent / "fixtures" / "rank_zephyr_sample.jsonl"


def test_paper_profile_launches_zero3_smoke_and_tiny_stay(monkeypatch):
    monkeypatch.delenv("LAB_PAPER_DRY_RUN", raising=False)
    paper = load_cfg("paper")
    assert (paper.optim.launch, paper.optim.deepspeed, paper.optim.mixed_precision) == ("accelerate", "zero3", "bf16")
    p = launched.launch_plan(paper, "paper", gpus=8, env={})
    assert (p.mode, p.num_processes, p.multi_gpu, p.deepspeed, p.mixed_precision) == ("accelerate", 8, True, True,
                                                                                      "bf16")
    argv = launch.command(p, "lab.methods.first.train", ["train"], port=29500)
    assert argv[argv.index("--num_processes") + 1] == "8" and "--use_deepspeed" not in argv
    with pytest.raises(ValueError, match="needs CUDA"):          # ZeRO-3 on a CPU machine: refused, not ignored
        launched.launch_plan(paper, "paper", gpus=0, env={})
    assert launched.launch_plan(paper, "paper", gpus=8, env={"LAB_LAUNCHED": "1"}).mode == "inprocess"  # no relaunch
    for profile in ("smoke", "tiny"):
        cfg = load_cfg(profile)
        assert (cfg.optim.launch, cfg.optim.deepspeed) == ("inprocess", "")
        assert launched.launch_plan(cfg, profile, gpus=8, env={}).mode == "inprocess"
    monkeypatch.setenv("LAB_PAPER_DRY_RUN", "1")
    dry = load_cfg("paper")
    assert (dry.optim.launch, dry.optim.deepspeed) == ("accelerate", "")
    p = launched.launch_plan(dry, "paper", gpus=0, env={"LAB_NUM_PROCESSES": "2"})
    assert (p.mode, p.num_processes, p.multi_gpu, p.cpu, p.deepspeed) == ("accelerate", 2, True, True, False)


def test_dry_run_overlays_are_paper_settings_on_tiny_models(monkeypatch):
    monkeypatch.delenv("LAB_PAPER_DRY_RUN", raising=False)
    params = REPO / "params.yaml"
    sections = ("data", "models", "firststage", "first")
    paper = {n: lab.config.load(n, "paper", params) for n in sections}
    monkeypatch.setenv("LAB_PAPER_DRY_RUN", "1")
    dry = {n: lab.config.load(n, "paper", params) for n in sections}
    assert paper["models"].refs["llm"] == "hf:HuggingFaceH4/zephyr-7b-beta"
    assert all(ref.startswith("random:") for ref in dry["models"].refs.values())      # nothing from the Hub
    assert dry["models"].refs["llm"] == "random:mistral-tiny"                        # zephyr-7b-beta is a Mistral
    assert paper["data"].beir and dry["data"].beir == () and dry["data"].max_queries == 5
    f, pf = dry["first"], paper["first"]
    assert (f.rerank.beir, f.dense.encoder, f.train.source) == ((), "", "trec")
    assert f.train.dataset not in f.rerank.datasets
    # every first stage a dry-run stage reads is one the dry-run data stage materialises
    made = set(dry["data"].first_stages)
    read = set(dry["firststage"].runs) | set(f.rerank.first_stages) | {f.train.first_stage, f.feedback.first_stage}
    assert read <= made, read - made
    # what the overlay does not name stays the paper's: the optimizer, the prompt, the context budget, ftfy
    assert replace(f.optim, deepspeed="zero3") == pf.optim
    assert (f.prompt, f.context_size, f.fix_text, f.variants) == (pf.prompt, 4096, True, pf.variants)
    assert f.rerank.configs["bm25"] == pf.rerank.configs["bm25"] and f.rerank.generation == "free"


def test_train_variant_hands_over_to_the_launched_cli(fake_data, tiny_llama, tmp_path, monkeypatch):
    """train_variant under a launch plan writes config + windows, runs the CLI that `accelerate launch` would start
    (here in this process: launch.run is replaced), and reads back the same curve an in-process run gives."""
    monkeypatch.chdir(tmp_path)         # the CLI's default checkpoint folder is relative: none may appear here
    cfg = load_cfg("tiny", threads=1)
    ts = first_train.training_set(cfg, fake_data, seed=3)
    local_res = first_train.train_variant(cfg, "rank", ts, model_path=tiny_llama, adapters_dir=None, seed=3)
    local = first_train.losses(local_res)
    calls = []

    def fake_run(plan, module, args, cwd=None):
        calls.append((plan, module, list(args)))
        monkeypatch.setenv("LAB_LAUNCHED", "1")       # what launch.run sets for the launched processes
        assert __import__(module, fromlist=["main"]).main(list(args)) == 0

    monkeypatch.setattr(launch, "run", fake_run)
    monkeypatch.setattr(lab.config, "active_profile", lambda *a, **k: "paper")
    monkeypatch.delenv("LAB_NUM_PROCESSES", raising=False)

    class Run:
        logged = []

        def log_metrics(self, metrics, step=None):
            self.logged.append((step, metrics))

    run = Run()
    launched_cfg = replace(cfg, optim=replace(cfg.optim, launch="accelerate"))
    res = first_train.train_variant(launched_cfg, "rank", ts, model_path=tiny_llama, adapters_dir=tmp_path / "ad",
                                    seed=3, run=run)
    (plan, module, args), = calls
    assert module == "lab.methods.first.train" and plan.mode == "accelerate" and plan.num_processes >= 1
    assert args[args.index("--variant") + 1] == "rank" and args[args.index("--seed") + 1] == "3"
    assert res.model is None and first_train.losses(res) == local          # same windows, same seed, same losses
    # the curve reaches the stage's run, every Trainer log record at its step (as TrackingCallback logs in-process)
    assert [s for s, _ in run.logged] == [r["step"] for r in local_res.history] and len(local) == 2
    assert run.logged[0][1]["curve.rank"]["loss"] == pytest.approx(local[0]["loss"])
    assert (tmp_path / "ad" / "rank" / "adapter_model.safetensors").is_file()      # rank 0 saved the LoRA adapter
    assert not (tmp_path / "outputs").exists()              # no checkpoint_root: the launched run wrote none either


@pytest.mark.slow
def test_first_train_stage_paper_dry_run_under_accelerate(fake_data, tiny_mistral, repo_copy):
    """`python -m lab.stage first_train` with profile paper and LAB_PAPER_DRY_RUN=1 (one variant, the data and
    models stages' outputs stood in by the tiny fixtures): the paper's optimizer settings on a random tiny Mistral,
    trained in a process started by `accelerate launch`, tracked as a paper dry run."""
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["profile"] = "paper"
    params["first"]["profiles"]["paper_dry_run"]["variants"] = ["joint"]      # one launch (~15 s), not three
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo_copy / "data").symlink_to(fake_data, target_is_directory=True)
    (repo_copy / "models").mkdir()
    (repo_copy / "models" / "llm").symlink_to(tiny_mistral, target_is_directory=True)
    env = {**os.environ, "LAB_PAPER_DRY_RUN": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    for var in ("LAB_NUM_PROCESSES", "LAB_LAUNCHED", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "lab.stage", "first_train",
                           str(REPO / "notebooks" / "first" / "01-first-train.py"), "--section", "first"],
                          cwd=repo_copy, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = repo_copy / "outputs" / "first_train"
    assert (out / "adapters" / "joint" / "model.safetensors").is_file()          # full fine-tuning: the model
    cells = json.loads((out / "notebook.ipynb").read_text())["cells"]
    text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    printed = [json.loads(line) for line in text.splitlines() if line.startswith('{"variant": "joint"')]
    assert printed and printed[-1]["world"] == 1 and printed[-1]["examples"] == 4   # the launched CLI's report
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo_copy / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    tags, p = run.data.tags, run.data.params
    assert (tags["stage"], tags["profile"], tags["paper_dry_run"]) == ("first_train", "paper", "true")
    assert (p["first.optim.lr"], p["first.optim.neftune_alpha"], p["first.optim.lora"], p["first.optim.launch"],
            p["first.optim.mixed_precision"], p["first.train.source"]) == ("5e-06", "5.0", "False", "accelerate",
                                                                          "bf16", "trec")
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "curve.joint.learning_rate")]
    assert lrs[:2] == pytest.approx([0.0, 5e-6 / 50])                     # the paper's warm-up 50, replayed
