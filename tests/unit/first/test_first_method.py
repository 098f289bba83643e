"""FIRST method wiring: config -> train -> rerank, no DL19 in training, resume, the paper-profile dry run, CLI."""

import json
import math
from dataclasses import replace

import pytest
import torch

from lab.methods.first import common as first_common, rerank as first_rerank, train as first_train
from lab.records import Candidate, Query, Ranking, Run
from lab.rerank.evaluation import claims, nested_metrics
from lab.rerank.listwise import rerank
from lab.rerank.rank_zephyr import load_rank_zephyr
from tests.unit.first.conftest import FIXTURES, load_cfg

RZ_FIXTURE = FIXTURES / "rank_zephyr_alpha_sample.jsonl"


def test_tiny_profile_config_train_rerank(fake_data, tiny_llama, tmp_path):
    cfg = load_cfg("tiny", threads=1, variants=("joint",),
                   rerank={"configs": {"bm25": ("zeroshot:single", "joint:single", "joint:gen"),
                                       "splade_pp_ed": ("joint:single",)}})
    first_common.setup_torch(cfg, 42)
    ts = first_train.training_set(cfg, fake_data, seed=42)
    assert len(ts.examples) == 3 and ts.kinds == ["top"] * 3                  # 3 queries x 1 window
    res = first_train.train_variant(cfg, "joint", ts, model_path=tiny_llama, adapters_dir=tmp_path / "adapters",
                                    seed=42, checkpoint_root=tmp_path / "ckpt")
    curve = first_train.losses(res)
    assert [r["step"] for r in curve] == [1, 2] and all(math.isfinite(r["loss"]) for r in curve)
    assert (tmp_path / "adapters" / "joint" / "adapter_model.safetensors").is_file()
    sets = first_rerank.eval_sets(cfg, fake_data)
    runs, timing, generations = first_rerank.rerank_all(cfg, sets, model_path=tiny_llama,
                                                        adapters_dir=tmp_path / "adapters")
    assert set(runs["trec-dl-2019"]) == {"bm25", "splade_pp_ed", "bm25/zeroshot_single", "bm25/joint_single",
                                         "bm25/joint_gen", "splade_pp_ed/joint_single"}
    for name, run in runs["trec-dl-2019"].items():       # reranking permutes each query's candidates
        base = sets[0].runs[name.split("/")[0]]
        assert all(sorted(c.docid for c in run[q].candidates) == sorted(c.docid for c in base[q].candidates)
                   for q in base.rankings)
    summary, per_query, taus = first_rerank.evaluate_all(cfg, sets, runs)
    assert set(summary["config"]) == {"first_stage", "zeroshot_single", "joint_single", "joint_gen"}
    assert len(per_query) == len(summary) * 3 and set(taus["model"]) == {"joint"}
    found = claims(summary, taus, 2.0, dataset="trec-dl-2019", first_stage="bm25")
    assert {"trained_single_ndcg_10", "single_gen_abs_diff", "kendall_tau_joint", "latency_ratio"} <= set(found)
    metrics = nested_metrics(summary, taus)
    assert "ndcg_10_p" in metrics["trec-dl-2019"]["bm25"]["joint_single"]
    assert len(timing) == 4 and set(generations["config"]) == {"joint_gen"} and len(generations) == 3
    assert timing.set_index("config").loc["joint_gen", "complete"] == generations["complete"].mean()


def test_training_never_sees_the_evaluation_queries(fake_data):
    cfg = load_cfg("tiny", train={"max_queries": 0, "random_windows": 2})
    ts = first_train.training_set(cfg, fake_data, seed=0)
    dl19 = first_train.eval_qids(cfg, fake_data)
    assert dl19 and ts.qids and not set(ts.qids) & dl19
    assert all(q.startswith("200") for q in ts.qids)                          # DL20 qids only
    with pytest.raises(ValueError, match="evaluation set"):
        first_train.training_set(load_cfg("tiny", train={"dataset": "trec-dl-2019"}), fake_data, seed=0)


def test_a_leaked_evaluation_query_is_refused(fake_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fake_data, data)
    dl19 = (data / "trec-dl-2019" / "queries.tsv").read_text().splitlines()[0].split("\t")[0]
    for rel in ("queries.tsv", "qrels.txt", "candidates/bm25.jsonl"):    # relabel a DL20 query with a DL19 qid
        path = data / "trec-dl-2020" / rel
        path.write_text(path.read_text().replace("20000", dl19))
    with pytest.raises(ValueError, match="evaluation queries"):
        first_train.training_set(load_cfg("tiny"), data, seed=0)


def test_rank_zephyr_loader_reads_the_fixture():
    data = load_rank_zephyr(RZ_FIXTURE)
    assert data.ids == ["1048585", "2", "3", "4"] and len(data.skipped) == 1 and data.skipped[0].startswith("5:")
    ex = data.examples[0]
    assert ex.query == "what is paula deen's brother" and len(ex.passages) == 4
    assert ex.order == [2, 0, 3, 1] and ex.passages[2].startswith("The brother of the celebrity chef")
    assert data.examples[1].passages[0].endswith("eggs [a note].")            # brackets inside a passage survive
    assert data.repaired == 2
    assert data.examples[2].order == [1, 0] and data.examples[3].order == [2, 0, 1]
    assert len(load_rank_zephyr(RZ_FIXTURE, max_examples=2).examples) == 2


def test_rank_zephyr_loader_json_list_and_roles(tmp_path):
    rows = [json.loads(line) for line in RZ_FIXTURE.read_text().splitlines()]
    (tmp_path / "rows.json").write_text(json.dumps(rows[:2]))
    assert len(load_rank_zephyr(tmp_path / "rows.json").examples) == 2
    rows[0]["conversations"][2]["from"] = "human"
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="no usable rows"):
        load_rank_zephyr(tmp_path / "bad.jsonl")
    # Hub ids: tests/unit/first/test_first_rank_zephyr_hub.py (parquet, mirror folder, no `datasets`)


def _adapter(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def test_interrupted_training_resumes_to_the_same_weights(fake_data, tiny_llama, tmp_path):
    cfg = load_cfg("tiny", threads=1, optim={"steps": 4, "neftune_alpha": 5.0, "checkpoint_every": 1})
    ts = first_train.training_set(cfg, fake_data, seed=1)
    full = first_train.train_variant(cfg, "joint", ts, model_path=tiny_llama, adapters_dir=None, seed=1,
                                     checkpoint_root=tmp_path / "a")
    part = first_train.train_variant(cfg, "joint", ts, model_path=tiny_llama, adapters_dir=None, seed=1,
                                     checkpoint_root=tmp_path / "b", stop_after=2)
    assert len(first_train.losses(part)) == 2 and part.checkpoint.endswith("checkpoint-2")
    resumed = first_train.train_variant(cfg, "joint", ts, model_path=tiny_llama, adapters_dir=None, seed=1,
                                        checkpoint_root=tmp_path / "b")
    assert resumed.resumed_from == 2
    assert first_train.losses(resumed) == first_train.losses(full)             # NEFTune noise stream restored too
    a, b = _adapter(full.model), _adapter(resumed.model)
    assert a.keys() == b.keys() and a and all(torch.equal(a[k], b[k]) for k in a)
    # another setting (other fingerprint) starts over instead of resuming
    other = load_cfg("tiny", threads=1, optim={"steps": 4, "lr": 1.0e-3})
    again = first_train.train_variant(other, "joint", ts, model_path=tiny_llama, adapters_dir=None, seed=1,
                                      checkpoint_root=tmp_path / "b", stop_after=1)
    assert again.resumed_from == 0 and len(first_train.losses(again)) == 1


def test_same_params_same_losses(fake_data, tiny_llama):
    cfg = load_cfg("tiny", threads=1)
    ts = first_train.training_set(cfg, fake_data, seed=3)
    runs = [first_train.losses(first_train.train_variant(cfg, "rank", ts, model_path=tiny_llama, adapters_dir=None,
                                                         seed=3)) for _ in range(2)]
    assert [r["loss"] for r in runs[0]] == [r["loss"] for r in runs[1]]


def test_paper_profile_dry_run_on_random_mistral(tiny_mistral, tmp_path, fresh_accelerate):
    """Paper settings (full fine-tuning, bf16 autocast over fp32 masters, NEFTune 5, cosine, warm-up 50, 2 x 16,
    seed 42) on a random tiny Mistral: prompt -> loss -> two optimizer steps -> window rerank."""
    cfg = load_cfg("paper", train={"rank_zephyr": str(RZ_FIXTURE)})
    o = cfg.optim
    assert (o.lr, o.scheduler, o.warmup_steps, o.epochs, o.batch_size, o.grad_accum, o.neftune_alpha, o.lora,
            o.dtype, o.mixed_precision) == (5e-6, "cosine", 50, 3.0, 2, 16, 5.0, False, "bfloat16", "bf16")
    assert cfg.train.source == "rank_zephyr" and lab_seed() == 42
    ts = first_train.training_set(cfg, "unused", seed=42)
    assert len(ts.examples) == 4
    assert o.gradient_checkpointing and (o.deepspeed, o.launch) == ("zero3", "accelerate")
    # ZeRO-3 needs CUDA devices and a launch: on this CPU the same settings train in this process
    cfg = replace(cfg, optim=replace(o, deepspeed="", launch="inprocess"))
    res = first_train.train_variant(cfg, "joint", ts, model_path=tiny_mistral, adapters_dir=tmp_path / "adapters",
                                    seed=42, checkpoint_root=tmp_path / "ckpt", steps=2)
    first, second = first_train.losses(res)
    assert math.isfinite(first["loss"]) and first["lm"] > 0 and first["rank"] > 0
    assert (first["lr"], second["lr"]) == pytest.approx((0.0, 5e-6 / 50))     # HF warm-up: step s at lr * s / 50
    assert {p.dtype for p in res.model.parameters()} == {torch.float32}     # fp32 masters while training
    # The steps changed the weights, by what Adam's first steps at these lrs allow. Training started from the base
    # loaded in bf16 (optim.dtype) and upcast, so that is the reference; step 1 ran at lr 0, step 2 at lr2 = 1e-7,
    # and an early Adam step moves each weight by about lr (|m_hat| / sqrt(v_hat) ~ 1). Compared in fp32: the saved
    # bf16 model would round a 1e-7 change away.
    from safetensors.torch import load_file

    start = {k: v.to(torch.bfloat16).float() for k, v in load_file(str(tiny_mistral / "model.safetensors")).items()}
    trained = res.model.state_dict()
    lr2 = 5e-6 / 50
    for name, w0 in start.items():
        delta = (trained[name].detach().float().cpu() - w0).abs()
        assert (delta > 0).float().mean() > 0.5, f"{name}: the optimizer steps left it unchanged"
        assert delta.max() <= 2 * lr2, f"{name} moved by {delta.max():.3g}, more than two steps' lr allow"
    assert (tmp_path / "adapters" / "joint" / "model.safetensors").is_file()  # full fine-tuning saves the model
    model, tok = first_rerank.load_reranker(cfg, tiny_mistral, tmp_path / "adapters" / "joint")
    assert type(model).__name__ == "MistralForCausalLM" and next(model.parameters()).dtype == torch.bfloat16
    ex = ts.examples[0]
    window = Run("w", {"q": Ranking(Query("q", ex.query), [Candidate(f"d{i}", 1.0, i + 1, p)
                                                          for i, p in enumerate(ex.passages)])})
    out = rerank(window, first_rerank.scorer(cfg, "single", model, tok), window=20, stride=10, depth=20,
                 progress=False)
    assert sorted(c.docid for c in out["q"].candidates) == [f"d{i}" for i in range(len(ex.passages))]


def lab_seed():
    from lab.config import read_params

    from tests.unit.first.conftest import REPO

    return read_params(REPO / "params.yaml")["seed"]


def test_cli_train_runs_under_accelerate(tiny_mistral, tmp_path, capsys, fresh_accelerate):
    from tests.unit.first.conftest import REPO

    rc = first_train.main(["train", "--profile", "tiny", "--params", str(REPO / "params.yaml"), "--variant", "rank",
                           "--out", str(tmp_path / "out"), "--model", str(tiny_mistral),
                           "--train-data", str(RZ_FIXTURE), "--checkpoints", str(tmp_path / "ckpt"), "--steps", "1"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["variant"] == "rank" and printed["steps"] == 1 and printed["examples"] == 4
    marker = tmp_path / "ckpt" / "rank" / "checkpoint-1" / "lab_checkpoint.json"
    assert json.loads(marker.read_text())["step"] == 1 and printed["world"] == 1


def test_beir_eval_set_from_a_folder_and_a_trec_run(fake_data, tmp_path):
    folder = tmp_path / "beir" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"T{i}" if i < 3 else "", "text": f"text {i}"} for i in range(5)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a claim"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "scifact.trec").write_text("".join(f"q1 Q0 d{i} {r + 1} {3 - r}.0 contriever\n"
                                                            for r, i in enumerate((0, 1, 3))))
    cfg = load_cfg("tiny", rerank={"beir": (str(folder),), "beir_runs": str(tmp_path / "runs" / "{name}.trec")})
    sets = first_rerank.eval_sets(cfg, fake_data)
    beir = sets[-1]
    assert beir.name == "scifact" and list(beir.runs) == ["contriever"]
    # official convert_results.py: title + ". " + text, the text alone without a title
    assert [c.text for c in beir.runs["contriever"]["q1"].candidates] == ["T0. text 0", "T1. text 1", "text 3"]
    assert beir.runs["contriever"]["q1"].query.text == "a claim" and beir.qrels["q1"] == {"d2": 1}
