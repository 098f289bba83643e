"""lab.eval.metrics against pytrec_eval called directly, and against the README's published values."""

from __future__ import annotations

import math

import ir_measures
import pytest
import pytrec_eval

from lab.eval.metrics import evaluate, trec_order
from lab.records import Qrels

RUNS = ("bm25", "bm25rm3", "tasb", "ada2", "splade_pp_ed", "repllama")
MEASURES = {
    "ndcg_10": "nDCG@10", "map": "AP(rel=2)", "mrr_10": "RR(rel=2)@10", "recall_100": "R(rel=2)@100",
    "rr": "RR(rel=2)",
}

# shared/data/README.md, pytrec-eval-terrier 0.5.11: nDCG@10, R@100 (rel>=2), MRR (rel>=1, no cutoff)
README = {
    ("dl19", "bm25"): (0.5058, 0.4910, 0.8245), ("dl20", "bm25"): (0.4796, 0.5599, 0.8269),
    ("dl19", "bm25rm3"): (0.5216, 0.5259, 0.8100), ("dl20", "bm25rm3"): (0.4896, 0.6182, 0.7669),
    ("dl19", "tasb"): (0.7210, 0.6097, 0.9510), ("dl20", "tasb"): (0.6854, 0.7135, 0.9242),
    ("dl19", "ada2"): (0.7035, 0.6235, 0.9186), ("dl20", "ada2"): (0.6759, 0.7237, 0.9393),
    ("dl19", "splade_pp_ed"): (0.7308, 0.6390, 0.9729), ("dl20", "splade_pp_ed"): (0.7197, 0.7653, 0.9565),
    ("dl19", "repllama"): (0.7384, 0.6579, 0.9884), ("dl20", "repllama"): (0.7195, 0.7311, 0.9427),
}


def direct(qrels: Qrels, scores, measures, **kw):
    return pytrec_eval.RelevanceEvaluator(qrels.judgements, set(measures), **kw).evaluate(scores)


@pytest.mark.parametrize("fs", RUNS)
@pytest.mark.parametrize("which", ["dl19", "dl20"])
def test_equals_pytrec_eval_per_query(request, which, fs):
    ds = request.getfixturevalue(which)
    run, qrels = ds.runs[fs], ds.qrels
    scores = run.scores()
    res = evaluate(run, qrels, MEASURES)
    assert res.qids == qrels.qids and res.missing == [] and res.unjudged == []
    graded = direct(qrels, scores, {"ndcg_cut_10"})
    binary = direct(qrels, scores, {"map", "recip_rank", "recall_100"}, relevance_level=2)
    top10 = {q: dict(trec_order(d)[:10]) for q, d in scores.items()}
    binary10 = direct(qrels, top10, {"recip_rank"}, relevance_level=2)
    graded10 = direct(qrels, top10, {"ndcg_cut_10"})
    for key, ref in [("ndcg_10", {q: v["ndcg_cut_10"] for q, v in graded.items()}),
                     ("map", {q: v["map"] for q, v in binary.items()}),
                     ("rr", {q: v["recip_rank"] for q, v in binary.items()}),
                     ("recall_100", {q: v["recall_100"] for q, v in binary.items()}),
                     ("mrr_10", {q: v["recip_rank"] for q, v in binary10.items()})]:
        ours = res.values(key)
        assert set(ours) == set(ref) == set(qrels.qids), key
        for q in ref:
            assert math.isclose(ours[q], ref[q], rel_tol=0, abs_tol=1e-9), (key, q)
        assert math.isclose(res.means[key], sum(ref.values()) / len(ref), abs_tol=1e-12), key
    rr = res.values("rr")
    for q, v in res.values("mrr_10").items():
        # RR@10 is recip_rank when the first relevant is in the top 10, else 0: checks the cut itself
        assert v == (rr[q] if rr[q] >= 0.1 else 0.0), q
        # cutting at 10 in trec_order keeps exactly trec_eval's top 10 (ties included)
        assert math.isclose(graded10[q]["ndcg_cut_10"], graded[q]["ndcg_cut_10"], abs_tol=1e-12), q


@pytest.mark.parametrize("fs", RUNS)
@pytest.mark.parametrize("which", ["dl19", "dl20"])
def test_readme_values(request, which, fs):
    ds = request.getfixturevalue(which)
    res = evaluate(ds.runs[fs], ds.qrels, {"ndcg": "nDCG@10", "r100": "R(rel=2)@100", "mrr": "RR"})
    ndcg, r100, mrr = README[(which, fs)]
    assert round(res.means["ndcg"], 4) == ndcg
    assert round(res.means["r100"], 4) == r100
    assert round(res.means["mrr"], 4) == mrr


def test_repllama_by_stored_rank(dl19, dl20):
    """trec_eval ignores the rank column; scores made from the ranks reproduce the stored order."""
    for ds, by_score, by_rank in ((dl19, 0.7384, 0.7439), (dl20, 0.7195, 0.7205)):
        run = ds.runs["repllama"]
        ranks = {q: {c.docid: float(len(r) + 1 - c.rank) for c in r.candidates} for q, r in run.rankings.items()}
        assert round(evaluate(run, ds.qrels, {"n": "nDCG@10"}).means["n"], 4) == by_score
        assert round(evaluate(ranks, ds.qrels, {"n": "nDCG@10"}).means["n"], 4) == by_rank


def test_rr_cut_agrees_with_msmarco_provider_without_ties(dl19, dl20):
    """An independent RR@10 (ir-measures' msmarco provider) agrees wherever scores have no ties."""
    m = ir_measures.parse_measure("RR(rel=2)@10")
    for ds in (dl19, dl20):
        for fs in ("bm25", "bm25rm3", "tasb", "ada2", "splade_pp_ed"):
            ours = evaluate(ds.runs[fs], ds.qrels, {"m": "RR(rel=2)@10"}).values("m")
            ref = {x.query_id: x.value for x in ir_measures.msmarco.iter_calc([m], ds.qrels.judgements, ds.runs[fs].scores())}
            assert all(math.isclose(ours[q], ref.get(q, 0.0), abs_tol=1e-12) for q in ours), fs


def test_missing_query_zero_or_skip(dl19):
    run, qrels = dl19.runs["bm25"], dl19.qrels
    dropped = qrels.qids[3]
    partial = {q: d for q, d in run.scores().items() if q != dropped}
    partial["not-judged"] = {"x": 1.0}                             # ignored, as by trec_eval
    full = evaluate(run, qrels, {"n": "nDCG@10"})
    zero = evaluate(partial, qrels, {"n": "nDCG@10"})
    skip = evaluate(partial, qrels, {"n": "nDCG@10"}, missing="skip")
    assert zero.missing == skip.missing == [dropped] and zero.unjudged == ["not-judged"]
    assert zero.n == 43 and skip.n == 42 and dropped not in skip.values("n")
    assert zero.values("n")[dropped] == 0.0
    total = sum(full.values("n").values())
    assert math.isclose(zero.means["n"], (total - full.values("n")[dropped]) / 43, abs_tol=1e-12)
    assert math.isclose(skip.means["n"], (total - full.values("n")[dropped]) / 42, abs_tol=1e-12)
    plain = direct(qrels, partial, {"ndcg_cut_10"})                # trec_eval's own mean = skip
    assert math.isclose(skip.means["n"], sum(v["ndcg_cut_10"] for v in plain.values()) / len(plain), abs_tol=1e-12)
    empty = {**partial, dropped: {}}                               # an empty ranking counts as missing
    assert evaluate(empty, qrels, {"n": "nDCG@10"}).missing == [dropped]


def test_result_shapes_and_errors(dl19):
    res = evaluate(dl19.runs["tasb"], dl19.qrels, {"a": "nDCG@10", "b": "nDCG@10", "p": "P(rel=2)@10"})
    assert list(res.per_query.columns) == ["qid", "measure", "value"] and len(res.per_query) == 3 * 43
    assert res.means["a"] == res.means["b"]
    wide = res.wide()
    assert list(wide.index) == dl19.qids and list(wide.columns) == ["a", "b", "p"]
    with pytest.raises(ValueError, match="not available from the pytrec_eval backend"):
        evaluate(dl19.runs["tasb"], dl19.qrels, {"e": "ERR@10"})
    with pytest.raises(ValueError, match="cannot parse"):
        evaluate(dl19.runs["tasb"], dl19.qrels, {"e": "nDCG@@10"})
    with pytest.raises(ValueError, match="missing"):
        evaluate(dl19.runs["tasb"], dl19.qrels, {"n": "nDCG@10"}, missing="ignore")
    with pytest.raises(KeyError):
        res.values("zzz")


def test_ties_follow_trec_eval_order():
    qrels = Qrels({"q": {"a": 1, "b": 0, "c": 0}})
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}      # all tied: trec_eval ranks c, b, a (docid descending)
    assert trec_order(run["q"]) == [("c", 1.0), ("b", 1.0), ("a", 1.0)]
    res = evaluate(run, qrels, {"rr": "RR@10", "rr2": "RR@2"})
    assert res.means["rr"] == pytest.approx(1 / 3) and res.means["rr2"] == 0.0
