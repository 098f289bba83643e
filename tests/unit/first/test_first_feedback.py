"""FIRST relevance feedback wiring (lab.methods.first.feedback) on fake materialised data and random:bert-tiny."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lab.data.formats import write_trec_run
from lab.data.trecdl import load_materialised
from lab.methods.first import feedback as first_feedback
from lab.records import Run
from lab.retrieval import EmbeddingCache
from tests.unit.first.conftest import load_cfg


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from lab.models import resolve

    root = tmp_path_factory.mktemp("fb-models")
    for role in ("encoder", "encoder_large"):
        (root / role).symlink_to(resolve("random:bert-tiny"), target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def runs_dir(fake_data, tmp_path_factory):
    """first_rerank-shaped runs: the LLM puts each query's judged passages first (grade order), scores len - pos."""
    root = tmp_path_factory.mktemp("fb-runs")
    ds = load_materialised(fake_data, "trec-dl-2019", ["splade_pp_ed"])
    write_trec_run(ds.runs["splade_pp_ed"], root / "trec-dl-2019" / "splade_pp_ed.trec")
    for config, flip in (("zeroshot_single", False), ("joint_single", True)):
        run = Run(f"splade_pp_ed__{config}")
        for r in ds.runs["splade_pp_ed"]:
            grades = ds.qrels[r.query.qid] if r.query.qid in ds.qrels else {}
            order = sorted(range(len(r)), key=lambda i: (-grades.get(r.candidates[i].docid, -1), i))
            run.add(r.reranked(order[::-1] if flip else order))
        write_trec_run(run, root / "trec-dl-2019" / f"splade_pp_ed__{config}.trec")
    return root


def cfg_with(**feedback):
    cfg = load_cfg("tiny")
    return replace(cfg, feedback=replace(cfg.feedback, **feedback))


def test_rows_metrics_and_cache(fake_data, models_dir, runs_dir, tmp_path, monkeypatch):
    # stage 2 at 100 x lr 0.005: the official 20 x lr 0.001 barely moves a vector toward soft (scaler ~1) targets
    cfg = cfg_with(updates=100, depth=10, teacher_top_k=10, llm_top_k=8, llm_updates_divisor=1, llm_lr_divisor=1.0)
    assert cfg.feedback.configs == ("first_stage", "zeroshot_single", "joint_single")
    cache = EmbeddingCache(tmp_path / "emb")
    import lab.retrieval.feedback as layer

    calls, refit_queries = [], layer.refit_queries

    def spy(q_emb, *args, **kw):
        calls.append((q_emb, kw.get("retriever_q")))
        return refit_queries(q_emb, *args, **kw)

    monkeypatch.setattr(layer, "refit_queries", spy)
    res = first_feedback.run_feedback(cfg, data_dir=fake_data, models_dir=models_dir, runs_dir=runs_dir, cache=cache)
    monkeypatch.undo()
    # stage 2 starts from the teacher refit q1 but its targets are the dense retriever's own q0 scores (official)
    q0 = calls[0][0]
    assert len(calls) == 1 + 3 * 2 and all(r is q0 and q is not q0 for q, r in calls[1:])
    pools = [f"teacher_llm_refit/{c}/{p}" for c in ("zeroshot_single", "joint_single")
             for p in ("dense_overlap", "reranked")]
    control = [f"teacher_fs_refit/splade_pp_ed/{p}" for p in ("dense_overlap", "reranked")]
    assert list(res.runs) == ["dense", "teacher_rerank", "teacher_refit", *control, *pools]
    ds = load_materialised(fake_data, "trec-dl-2019")
    assert res.notes["corpus_passages"] == len({c.docid for run in ds.runs.values() for r in run for c in r.candidates})
    assert all(len(r.candidates) == 10 for r in res.runs["dense"])
    diag = res.diagnostics.set_index(["run", "qid"])
    gold = diag.loc["teacher_llm_refit/zeroshot_single/reranked"]
    assert (gold["llm_passages"] == 8).all()
    assert gold["agreement_after"].mean() > gold["agreement_before"].mean()      # the refit learns the LLM order
    overlap = diag.loc["teacher_llm_refit/zeroshot_single/dense_overlap", "llm_passages"]
    assert (overlap <= 8).all()
    summary, per_query = first_feedback.evaluate(cfg, res)
    assert set(summary["measure"]) == set(cfg.feedback.measures) and summary["n"].eq(4).all()
    assert summary.loc[summary["run"] != "dense", "p_value"].notna().all()
    metrics = first_feedback.nested_metrics(res, summary)
    node = metrics["trec-dl-2019"]["teacher_llm_refit"]["joint_single"]["reranked"]
    assert {"ndcg_10", "ndcg_10_p", "recall_100_delta", "refit_agreement_after", "refit_llm_passages"} <= set(node)
    # what the LLM adds: each LLM row against its no-LLM control, paired per query (a direct paired t-test)
    from scipy.stats import ttest_rel

    control = metrics["trec-dl-2019"]["teacher_fs_refit"]["splade_pp_ed"]["reranked"]
    assert node["ndcg_10_vs_control_delta"] == pytest.approx(node["ndcg_10"] - control["ndcg_10"], abs=1e-12)
    q = per_query[per_query["measure"] == "ndcg_10"].pivot(index="qid", columns="run", values="value")
    a, b = q["teacher_llm_refit/joint_single/reranked"], q["teacher_fs_refit/splade_pp_ed/reranked"]
    if (a - b).abs().max() > 0:
        assert node["ndcg_10_vs_control_p"] == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-9)
    assert "ndcg_10_vs_control_p" not in control and "ndcg_10_vs_control_p" not in metrics["trec-dl-2019"]["dense"]
    assert set(metrics["seconds"]) == {"encode", "teacher", "refit"}
    assert cache.computed == {"passages": 1, "queries": 1, "teacher_passages": 1, "teacher_queries": 1}
    again = first_feedback.run_feedback(cfg, data_dir=fake_data, models_dir=models_dir, runs_dir=runs_dir, cache=cache)
    assert sum(cache.computed.values()) == 4 and sum(cache.hits.values()) == 4        # second run: all cached
    for name, run in res.runs.items():                                                 # and the same rankings
        assert all([c.docid for c in r.candidates] == [c.docid for c in again.runs[name][r.query.qid].candidates]
                   for r in run), name


def test_runs_are_cut_to_the_llm_prefix_and_rescored_by_position(fake_data, runs_dir):
    queries = first_feedback.load_data(cfg_with(), fake_data).queries
    llm = first_feedback.llm_run(runs_dir, "trec-dl-2019", "splade_pp_ed", "zeroshot_single", 3, queries)
    fs = first_feedback.llm_run(runs_dir, "trec-dl-2019", "splade_pp_ed", "first_stage", 3, queries)
    r = llm[queries[0].qid]
    assert [c.score for c in r.candidates] == [8.0, 7.0, 6.0] and r.candidates[0].docid.endswith("-0")
    assert [c.score for c in fs[queries[0].qid].candidates] == [8.0, 7.0, 6.0] and fs.name == "splade_pp_ed"


def test_teacher_off_starts_stage_two_from_the_dense_vector(fake_data, models_dir, runs_dir):
    cfg = cfg_with(teacher_role="none", configs=("zeroshot_single",), llm_pools=("reranked",), depth=10)
    res = first_feedback.run_feedback(cfg, data_dir=fake_data, models_dir=models_dir, runs_dir=runs_dir, cache=None)
    assert list(res.runs) == ["dense", "llm_refit/zeroshot_single/reranked"] and "teacher" not in res.seconds


def test_bad_settings_fail_before_encoding(fake_data, models_dir, runs_dir):
    with pytest.raises(ValueError, match="llm_top_k"):
        first_feedback.run_feedback(cfg_with(llm_top_k=9), data_dir=fake_data, models_dir=models_dir,
                                    runs_dir=runs_dir, cache=None)
    with pytest.raises(FileNotFoundError, match="lm:single"):
        first_feedback.run_feedback(cfg_with(configs=("lm_single",)), data_dir=fake_data,
                                    models_dir=models_dir / "absent", runs_dir=runs_dir, cache=None)


def test_teacher_scores_are_scaled_cosines(fake_data, models_dir):
    from lab.retrieval import Encoder

    data = first_feedback.load_data(cfg_with(), fake_data)
    dense = load_materialised(fake_data, "trec-dl-2019", ["bm25"]).runs["bm25"]
    scores = first_feedback.teacher_scores(models_dir / "encoder_large", data.queries, dense, data.corpus, top_k=3,
                                           scale=20.0, max_length=32, query_max_length=16, batch_size=8, cache=None)
    enc = Encoder.from_ref(str(models_dir / "encoder_large"), max_length=32)
    q = data.queries[0]
    ids = [c.docid for c in dense[q.qid].candidates[:3]]
    p = enc.encode([data.corpus[d] for d in ids], progress=False)
    enc.max_length = 16
    want = 20.0 * p @ enc.encode([q.text], progress=False)[0]
    assert list(scores[q.qid]) == ids and np.allclose([scores[q.qid][d] for d in ids], want, atol=1e-4)
