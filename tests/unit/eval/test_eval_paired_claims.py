"""p-values for claims about a difference between two systems: every run against a reference (lab.eval.report) and
FIRST's configuration differences (lab.rerank.evaluation.claims), the keys experiments/*/expected.yaml reads."""

import pandas as pd
import pytest

from lab.eval.report import Comparison
from lab.eval.significance import paired_test
from lab.rerank.evaluation import claims

A = {"1": 0.50, "2": 0.40, "3": 0.70, "4": 0.20, "5": 0.65}
B = {"1": 0.52, "2": 0.38, "3": 0.71, "4": 0.22, "5": 0.66}      # within noise of A
C = {"1": 0.90, "2": 0.85, "3": 0.95, "4": 0.70, "5": 0.92}      # far above


def long(runs, **cols):
    return pd.DataFrame([{**cols, "run": r, "config": r, "qid": q, "measure": "ndcg_10", "value": v}
                         for r, values in runs.items() for q, v in values.items()])


def test_comparison_tests_every_run_against_a_reference():
    comp = Comparison(summary=pd.DataFrame(), per_query=long({"teacher": C, "a": A, "b": B}))
    out = comp.tests("a")
    assert set(out) == {"teacher", "b"}
    assert out["b"]["ndcg_10_p"] == pytest.approx(paired_test(B, A).pvalue)
    assert out["b"]["ndcg_10_delta"] == pytest.approx(paired_test(B, A).mean_diff)
    assert out["teacher"]["ndcg_10_p"] < 0.01 < out["b"]["ndcg_10_p"]


def test_first_claims_carry_the_p_of_each_difference():
    per_query = long({"first_stage": A, "zeroshot_single": B, "joint_single": C, "lm_single": B}, dataset="d",
                     first_stage="bm25")
    summary = (per_query.groupby(["dataset", "first_stage", "config", "measure"], as_index=False)["value"].mean()
               .rename(columns={"value": "mean"}).assign(p_value_fs=0.5))
    taus = pd.DataFrame(columns=["dataset", "first_stage", "model", "qid", "tau"])
    found = claims(summary, taus, None, dataset="d", first_stage="bm25", per_query=per_query)
    assert found["joint_minus_lm_p"] == pytest.approx(paired_test(C, B).pvalue)
    assert found["trained_single_minus_zeroshot_p"] == found["joint_minus_lm_p"]
    assert "joint_minus_rank_p" not in found                     # no rank_single run: no p, the claim is `not run`
    assert "joint_minus_lm_p" not in claims(summary, taus, None, dataset="d", first_stage="bm25")
