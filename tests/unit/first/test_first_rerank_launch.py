"""FIRST's reranking under `accelerate launch` (first.rerank.launch: accelerate, the paper profile): the decision,
and a real 2-process CPU launch of the tiny rerank through rerank_all's hand-over, which must give byte for byte
the TREC runs the in-process call writes (each process reranks a block of the queries, lab.eval.shard gathers)."""

from __future__ import annotations

import json
from dataclasses import replace

import lab.config
from lab.methods.first import common as first_common, launched, rerank as first_rerank
from tests.unit.first.conftest import load_cfg


def test_rerank_launches_in_the_paper_profile_only():
    paper = load_cfg("paper")
    assert paper.rerank.launch == "accelerate"
    p = launched.rerank_plan(paper, "paper", gpus=4, env={})
    assert (p.mode, p.num_processes, p.multi_gpu, p.deepspeed, p.mixed_precision) == ("accelerate", 4, True, False,
                                                                                      "no")
    assert launched.rerank_plan(paper, "paper", gpus=0, env={"LAB_NUM_PROCESSES": "2"}).num_processes == 2
    assert launched.rerank_plan(paper, "paper", gpus=4, env={"LAB_LAUNCHED": "1"}).mode == "inprocess"  # no relaunch
    for profile in ("smoke", "tiny"):
        cfg = load_cfg(profile)
        assert cfg.rerank.launch == "inprocess"
        assert launched.rerank_plan(cfg, profile, gpus=4, env={}).mode == "inprocess"


def test_two_process_launch_writes_the_in_process_trec_runs(fake_data, tiny_llama, tmp_path, monkeypatch, capsys):
    # 3 queries x 3 windows (depth 8, window 4, stride 2), batches of 2 queries: rank 0 reranks one batch of 2
    # queries, rank 1 the last query
    cfg = load_cfg("tiny", threads=1, rerank={"first_stages": ("bm25",), "window": 4, "stride": 2, "batch_size": 2,
                                              "configs": {"bm25": ("zeroshot:single", "zeroshot:gen")}})
    first_common.setup_torch(cfg, 0)
    sets = first_rerank.eval_sets(cfg, fake_data)
    assert len(sets[0].runs["bm25"]) == 3
    runs, timing, generations = first_rerank.rerank_all(cfg, sets, model_path=tiny_llama, adapters_dir=tmp_path)
    first_rerank.save_runs(runs, tmp_path / "inprocess")

    monkeypatch.setattr(lab.config, "active_profile", lambda *a, **k: "paper")
    monkeypatch.setenv("LAB_NUM_PROCESSES", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for var in ("LAB_LAUNCHED", "LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    capsys.readouterr()
    cfg2 = replace(cfg, rerank=replace(cfg.rerank, launch="accelerate"))
    runs2, timing2, generations2 = first_rerank.rerank_all(cfg2, sets, model_path=tiny_llama, adapters_dir=tmp_path)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"command"')]
    assert printed == [{"command": "rerank", "world": 2, "sets": 1, "runs": 3}]      # rank 0 alone reported
    first_rerank.save_runs(runs2, tmp_path / "launched")

    files = sorted(p.relative_to(tmp_path / "inprocess") for p in (tmp_path / "inprocess").rglob("*.trec"))
    assert [str(f) for f in files] == ["trec-dl-2019/bm25.trec", "trec-dl-2019/bm25__zeroshot_gen.trec",
                                       "trec-dl-2019/bm25__zeroshot_single.trec"]
    assert sorted(p.relative_to(tmp_path / "launched") for p in (tmp_path / "launched").rglob("*.trec")) == files
    for f in files:
        assert (tmp_path / "launched" / f).read_bytes() == (tmp_path / "inprocess" / f).read_bytes(), f
    # what the notebook reads besides the runs: texts kept, the same windows and generations
    assert runs2["trec-dl-2019"]["bm25/zeroshot_single"]["19001"].candidates[0].text
    assert list(runs2["trec-dl-2019"]) == list(runs["trec-dl-2019"])
    assert timing2[["config", "windows", "complete"]].equals(timing[["config", "windows", "complete"]])
    assert generations2.equals(generations) and len(generations) == 9
