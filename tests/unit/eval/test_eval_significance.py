"""lab.eval.significance: paired t-test and permutation test, aligned by qid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lab.eval.metrics import evaluate
from lab.eval.significance import paired_test

RNG = np.random.default_rng(7)
A = {f"q{i}": float(v) for i, v in enumerate(RNG.uniform(0.3, 0.9, 40))}
BETTER = {q: min(1.0, v + 0.15 + RNG.normal(0, 0.03)) for q, v in A.items()}


@pytest.mark.parametrize("method", ["ttest", "permutation"])
def test_identical_runs(method):
    res = paired_test(A, dict(A), method=method)
    assert (res.pvalue, res.statistic, res.mean_diff, res.n, res.method) == (1.0, 0.0, 0.0, 40, method)


@pytest.mark.parametrize("method", ["ttest", "permutation"])
def test_clearly_better_run(method):
    res = paired_test(BETTER, A, method=method, n_resamples=2000)
    assert res.pvalue < 1e-3 and res.mean_diff > 0.1 and res.significant()
    assert paired_test(A, BETTER, method=method, n_resamples=2000).mean_diff == pytest.approx(-res.mean_diff)


def test_aligned_by_qid_not_position():
    shuffled = dict(reversed(list(BETTER.items())))
    assert paired_test(shuffled, A) == paired_test(BETTER, A)
    qids = sorted(A)
    ref = stats.ttest_rel([BETTER[q] for q in qids], [A[q] for q in qids])
    assert paired_test(BETTER, A).pvalue == pytest.approx(ref.pvalue, rel=1e-12)


def test_int_and_str_qids_pair_up():
    a = {1: 0.5, 2: 0.7, 3: 0.2}
    b = {"1": 0.4, "2": 0.1, "3": 0.3}
    assert paired_test(a, b).n == 3


def test_mismatched_qids_refused():
    b = dict(A)
    b.pop("q3")
    b["extra"] = 0.5
    with pytest.raises(ValueError, match=r"1 qids only in a \(e.g. \['q3'\]\), 1 only in b \(e.g. \['extra'\]\)"):
        paired_test(A, b)
    with pytest.raises(ValueError, match="at least 2"):
        paired_test({"q": 1.0}, {"q": 0.0})
    with pytest.raises(ValueError, match="method"):
        paired_test(A, A, method="wilcoxon")
    with pytest.raises(ValueError, match="finite"):
        paired_test({"a": 1.0, "b": float("nan")}, {"a": 1.0, "b": 0.0})


def test_permutation_exact_for_few_queries_and_seeded():
    a, b = {"1": 0.9, "2": 0.8, "3": 0.7, "4": 0.95, "5": 0.6}, {"1": 0.1, "2": 0.2, "3": 0.3, "4": 0.1, "5": 0.2}
    # 2**5 = 32 sign patterns <= n_resamples: exact; only all-positive and all-negative are as extreme
    assert paired_test(a, b, "permutation").pvalue == pytest.approx(2 / 32)
    r1 = paired_test(BETTER, A, "permutation", n_resamples=500, seed=3)
    assert r1 == paired_test(BETTER, A, "permutation", n_resamples=500, seed=3)


def test_splade_vs_bm25_dl19(dl19):
    m = {"ndcg_10": "nDCG@10"}
    splade = evaluate(dl19.runs["splade_pp_ed"], dl19.qrels, m).values("ndcg_10")
    bm25 = evaluate(dl19.runs["bm25"], dl19.qrels, m).values("ndcg_10")
    res = paired_test(splade, bm25, "ttest")
    assert res.n == 43 and res.mean_diff == pytest.approx(0.7308 - 0.5058, abs=2e-4)
    assert res.pvalue < 1e-4
    perm = paired_test(splade, bm25, "permutation")
    assert perm.pvalue < 1e-3
    print(f"SPLADE++ED vs BM25, DL19 nDCG@10: t={res.statistic:.4f} p={res.pvalue:.3g}; permutation p={perm.pvalue:.3g}")
