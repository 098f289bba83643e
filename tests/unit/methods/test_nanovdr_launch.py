"""NanoVDR's inference under `accelerate launch` (nanovdr.inference_launch: accelerate, the paper profile): the
decision, and the hand-over of the report stage's student query encoding and of the index stage's teacher encoding
to the launched CLIs (run here in this process as the launched rank 0 of one: launch.run is replaced), which must
give the in-process rows. The real multi-process split/gather is tests/unit/eval/test_eval_shard.py, a real
2-process launch of a stage tests/unit/first/test_first_rerank_launch.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import lab.config
from lab.methods.nanovdr import evaluate as nanovdr_evaluate, index as nanovdr_index, launched
from lab.train import launch


@pytest.fixture
def fake_launch(monkeypatch):
    """launch.run replaced by the launched module's main in this process; the calls are recorded."""
    calls = []

    def fake_run(plan, module, args, cwd=None):
        calls.append((plan, module, list(args)))
        monkeypatch.setenv("LAB_LAUNCHED", "1")       # what launch.run sets for the launched processes
        try:
            assert __import__(module, fromlist=["main"]).main(list(args)) == 0
        finally:
            monkeypatch.delenv("LAB_LAUNCHED")

    monkeypatch.setattr(launch, "run", fake_run)
    monkeypatch.setattr(lab.config, "active_profile", lambda *a, **k: "paper")
    for var in ("LAB_NUM_PROCESSES", "LAB_LAUNCHED", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    yield calls
    from accelerate.state import PartialState

    PartialState._reset_state()                       # shard.device() made one in this process


def test_inference_launches_in_the_paper_profile_only(make_cfg):
    paper = lab.config.load("nanovdr", "paper", nanovdr_index.Path(__file__).resolve().parents[3] / "params.yaml")
    assert paper.inference_launch == "accelerate"
    p = launched.inference_plan(paper, "paper", gpus=8, env={})
    assert (p.mode, p.num_processes, p.multi_gpu, p.mixed_precision) == ("accelerate", 8, True, "no")
    assert launched.inference_plan(paper, "paper", gpus=8, env={"LAB_LAUNCHED": "1"}).mode == "inprocess"
    tiny = make_cfg()
    assert tiny.inference_launch == "inprocess" and launched.inference_plan(tiny, "tiny", gpus=8, env={}).mode == \
        "inprocess"


def test_report_encoding_hands_over_and_gives_the_in_process_runs(tiny_index, tmp_path, fake_launch):
    cfg, index_dir, _ = tiny_index
    local = nanovdr_evaluate.evaluate(cfg, {}, seed=3)
    got = nanovdr_evaluate.evaluate(replace(cfg, inference_launch="accelerate"), {}, seed=3)
    (plan, module, args), = fake_launch
    assert module == "lab.methods.nanovdr.evaluate" and args[0] == "encode" and plan.mode == "accelerate"
    for name in ("teacher", "bm25", "student-untrained"):
        assert got.runs[name].scores() == local.runs[name].scores(), name
    assert set(got.encode_ms_per_query) == {"student-untrained"}


def test_index_teacher_encoding_hands_over_and_gives_the_in_process_index(tiny_index, tmp_path, fake_launch):
    from lab.retrieval.dense import EmbeddingCache

    cfg, _, summary = tiny_index
    out = tmp_path / "index"
    got = nanovdr_index.build_index(replace(cfg, inference_launch="accelerate"), out, seed=0,
                                    cache=EmbeddingCache(tmp_path / "cache"), progress=False)
    kinds = [args[1] for _, module, args in fake_launch if module == "lab.methods.nanovdr.index"]
    assert kinds == ["pages", "pages", "queries", "queries", "queries"]          # eval/train pools, 3 query splits
    assert got["fingerprint"] == summary["fingerprint"] and got["teacher"] == summary["teacher"]
    art = nanovdr_index.load_index(out)
    ref = nanovdr_index.load_index(tiny_index[1])
    assert np.array_equal(art.page_emb["eval"], ref.page_emb["eval"])
