"""LaSER's paper profile: the paper's hyper-parameters and launch decision, two CPU processes under `accelerate launch`
training like one process with the same global batch (in-batch negatives gathered across processes), and the
dry-run data path (LaSER-Training rows and BRIGHT from a mirror folder of fixtures) on a random-init tiny Qwen3."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

import lab.config
from lab.methods.laser import launched
from lab.retrieval.latent_train import LaserExample
from lab.train import launch
from tests.conftest import one_torch_thread
from tests.unit.data.bright_fixtures import write_bright
from tests.unit.data.laser_training_fixtures import ROWS, write_arrow

REPO = Path(__file__).resolve().parents[3]
_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
SEVEN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EXAMPLES = [
    LaserExample("what causes tides", "The moon pulls the sea.\n\nGravity differs across Earth.\n\nSo water bulges.",
                 "Tides are caused by the pull of the moon.", "Tide is a detergent.", task="Find tide facts."),
    LaserExample("define visceral", "Visceral: of the organs.\n\nAlso deep feeling.", "Visceral relates to organs.",
                 "A visor shades the eyes."),
    LaserExample("boil an egg", "Water boils at 100 C.\n\nEggs set at 70 C.", "Boil eggs for nine minutes.",
                 "Eggplant is a vegetable."),
    LaserExample("capital of peru", "Peru is in South America.\n\nIts capital is on the coast.",
                 "Lima is Peru's capital.", "Paris is in France."),
]


def load(profile, dry_run=False):
    return lab.config.load("laser", profile, REPO / "params.yaml", dry_run=dry_run)


def test_paper_hyper_parameters_data_and_launch(monkeypatch):
    p = load("paper")
    o, lo = p.optim, p.loss
    assert p.model_role == "laser_llm" and lab.config.load("models", "paper", REPO / "params.yaml", dry_run=False
                                                           ).refs["laser_llm"] == "hf:Qwen/Qwen3-0.6B"
    assert (o.lora, o.lora_r, o.lora_alpha, o.lora_dropout, o.lora_targets, o.lora_layers) == (True, 64, 32, 0.1,
                                                                                               SEVEN, 0)
    assert (o.lr, o.warmup_ratio, o.epochs, o.steps, o.dtype, o.mixed_precision) == (1e-4, 0.1, 1.0, 0, "bfloat16",
                                                                                     "bf16")
    assert (lo.query_max_len, lo.doc_max_len, lo.temperature) == (512, 512, 0.02)
    assert (p.train.source, p.train.hub_repo, p.eval.benchmark, p.eval.bright_exclusion) == (
        "laser_training", "jinjiajie/LaSER-Training", "bright", ("official", "mteb-1.x-compat"))
    assert len(p.eval.bright_tasks) == 12 and o.launch == "accelerate"
    plan = launched.launch_plan(p, "paper", gpus=8, env={})
    assert (plan.mode, plan.num_processes, plan.multi_gpu, plan.mixed_precision) == ("accelerate", 8, True, "bf16")
    assert launched.launch_plan(p, "paper", gpus=8, env={"LAB_LAUNCHED": "1"}).mode == "inprocess"   # no relaunch
    for profile in ("smoke", "tiny"):
        cfg = load(profile)
        assert (cfg.optim.launch, cfg.train.source, cfg.eval.benchmark) == ("inprocess", "trec", "trec")
    dry = load("paper", dry_run=True)
    assert dry.model_ref == "random:qwen3-tiny" and (dry.train.source, dry.eval.benchmark) == ("laser_training",
                                                                                                "bright")
    # what the overlay does not name stays the paper's
    assert replace(dry.optim, steps=0, batch_size=8, grad_accum=2, dtype="bfloat16", mixed_precision="bf16") == o
    assert launched.launch_plan(dry, "paper", gpus=0, env={"LAB_NUM_PROCESSES": "2"}).cpu


def _curve(res):
    from lab.methods.laser.train import losses

    return [{k: r[k] for k in ("step", "loss", "cl_latent", "cl_explicit", "kl", "mid")} for r in losses(res)]


def test_two_processes_under_accelerate_train_like_one_with_the_global_batch(tmp_path, monkeypatch, fresh_accelerate):
    """Full LaSER (K = 3, explicit view, KL and L_mid) on a tiny Qwen3: one process with batch 4 versus
    `accelerate launch` of two CPU processes with batch 2 each; the same losses need DDP averaging *and* every
    vector gathered across processes (each query sees the other process's documents as negatives)."""
    from lab.methods.laser import train as laser_train
    from lab.methods.laser.data import TrainingSet
    from lab.models import resolve

    model = resolve("random:qwen3-tiny")
    tiny = replace(load("tiny"), threads=1)
    ts = TrainingSet(EXAMPLES, EXAMPLES, [str(i) for i in range(4)])
    one = replace(tiny, optim=replace(tiny.optim, steps=2, batch_size=4))
    local = _curve(laser_train.train_variant(one, "full", ts, model_path=model, adapters_dir=None, seed=5))
    monkeypatch.setattr(lab.config, "active_profile", lambda *a, **k: "paper")
    monkeypatch.setenv("LAB_NUM_PROCESSES", "2")
    for var in ("LAB_LAUNCHED", "LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_PROCESS_INDEX"):
        monkeypatch.delenv(var, raising=False)
    calls = []
    real_run = launch.run
    monkeypatch.setattr(launch, "run", lambda plan, module, args, cwd=None: (calls.append((plan, args)),
                                                                             real_run(plan, module, args, cwd=cwd)))

    class Run:
        logged = []

        def log_metrics(self, metrics, step=None):
            self.logged.append((step, metrics))

    two = replace(one, optim=replace(one.optim, batch_size=2, launch="accelerate"))
    res = laser_train.train_variant(two, "full", ts, model_path=model, adapters_dir=tmp_path / "ad", seed=5,
                                    run=Run())
    (plan, args), = calls
    assert (plan.mode, plan.num_processes, plan.multi_gpu, plan.cpu) == ("accelerate", 2, True, True)
    assert res.model is None and [r["step"] for r in _curve(res)] == [1, 2]
    for a, b in zip(local, _curve(res), strict=True):
        for k in ("loss", "cl_latent", "cl_explicit", "kl", "mid"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (a["step"], k)
    assert (tmp_path / "ad" / "full" / "adapter_model.safetensors").is_file()          # rank 0 saved the adapter
    assert [s for s, m in Run.logged if "loss" in m["curve"]] == [1, 2]                 # the curve reached the run


def test_paper_dry_run_data_path_on_fixtures(tmp_path, monkeypatch):
    """LAB_PAPER_DRY_RUN=1: LaSER-Training and BRIGHT read from a mirror folder as the paper profile reads them from
    the Hub, two variants trained on a random-init tiny Qwen3 and scored under both exclusion modes."""
    from lab.data.bright import drop_excluded
    from lab.methods.laser import bright_eval
    from lab.methods.laser import train as laser_train
    from lab.methods.laser.data import model_path, training_set
    from lab.retrieval.laser_prompts import load_laser_prompt
    from lab.retrieval.latent_train import prepare, wrap

    mirror = tmp_path / "mirror"
    rows = ROWS + [dict(ROWS[0], query="how do owls see at night", positive_passages=["Rods.", "Tapetum."])] * 3
    write_arrow(mirror / "hf-datasets" / "jinjiajie/LaSER-Training" / "bge_reasoning" / "data-00000-of-00001.arrow",
                rows)
    write_bright(mirror / "hf-datasets")
    monkeypatch.setenv("LAB_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("LAB_OFFLINE", "1")
    monkeypatch.setenv("LAB_PAPER_DRY_RUN", "1")
    cfg = lab.config.load("laser", "paper", REPO / "params.yaml")
    cfg = replace(cfg, threads=1, variants=("basic", "full"), optim=replace(cfg.optim, launch="inprocess", steps=1))
    ts = training_set(cfg, tmp_path / "no-data-dir", {}, seed=3)        # hub rows: neither data_dir nor reasoning
    assert ts.notes == {"rows": 4, "files": 1, "dropped_no_negative": 1, "short_reasoning": 0}   # row 1: no negative
    assert [e.positive for e in ts.examples] == ["Transverse orientation.", "Tapetum.", "Rods."]   # (i + seed) % 2
    assert ts.examples[0].task == ROWS[0]["prompt"] and ts.examples[0].negative == ROWS[0]["negative_passages"][0]
    path = model_path(cfg, tmp_path / "models")
    tok = __import__("lab.models", fromlist=["load_tokenizer"]).load_tokenizer(path)
    assert "Instruct: Given a post, retrieve" in wrap(tok, load_laser_prompt(cfg.prompt), "q", query=True,
                                                      task=ts.examples[0].task)
    q_ids = prepare(tok, ts.examples[:1], load_laser_prompt(cfg.prompt),
                    laser_train.latent_settings(cfg, cfg.rows["full"]))
    assert "Instruct: " + ROWS[0]["prompt"] in tok.decode(q_ids[0]["q"])          # the row's own instruction
    for v in cfg.variants:
        laser_train.train_variant(cfg, v, ts, model_path=path, adapters_dir=tmp_path / "adapters", seed=3)
    tasks = bright_eval.load_tasks(cfg)
    assert sorted(tasks) == ["biology", "leetcode"] and tasks["leetcode"].n_excluded == 1
    out = bright_eval.run_bright(cfg, tasks, model_path=path, adapters_dir=tmp_path / "adapters", progress=False)
    summary, per_query, metrics = bright_eval.score(cfg, tasks, out)
    assert list(summary.config) == ["basic", "full", "full_k1", "full_k3"]
    raw = out.runs[("full", "leetcode")]["two-sum"]
    assert "leetcode/two-sum.txt" in [c.docid for c in raw.candidates]                 # the whole tiny corpus
    kept = drop_excluded(out.runs[("full", "leetcode")], tasks["leetcode"])["two-sum"]
    assert "leetcode/two-sum.txt" not in [c.docid for c in kept.candidates]
    full = summary.set_index("config").loc["full"]
    assert full["ndcg_10"] == full["ndcg_10_official"] and 0 <= full["ndcg_10_mteb_1x_compat"] <= 1
    assert full["ndcg_10"] == pytest.approx((full["ndcg_10@biology"] + full["ndcg_10@leetcode"]) / 2)
    assert set(per_query["mode"]) == {"official", "mteb-1.x-compat"} and "ndcg_10_p" in summary
    assert set(metrics["full"]["ndcg_10_mteb_1x_compat"]) == {"avg", "biology", "leetcode"}
    # the two modes differ exactly on the query whose excluded document the model ranks in its top 10
    lc = per_query[(per_query.config == "full") & (per_query.task == "leetcode") & (per_query.measure == "ndcg_10")]
    official, compat = (float(lc[lc["mode"] == m].value.iloc[0]) for m in ("official", "mteb-1.x-compat"))
    assert official >= compat and os.environ["LAB_PAPER_DRY_RUN"] == "1"
