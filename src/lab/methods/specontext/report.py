"""Stage specontext_report: the claims ``experiments/specontext/expected.yaml`` checks, from measured tables.

A difference between two methods is paired over the same (context, haystack, budget) units and tested with
:func:`lab.eval.significance.paired_test` (two-sided t-test); ``*_p`` keys hold the p-values.
"""

from __future__ import annotations

import math

import pandas as pd

BASELINES = ("streamingllm", "h2o", "snapkv", "quest", "random", "gemfilter")


def main_table(fid: pd.DataFrame) -> pd.DataFrame:
    """Method x budget means over contexts and haystacks."""
    cols = ["agreement", "kl", "mass_recall", "oracle_recall", "changed_fraction", "changed_bytes_per_step"]
    return fid.groupby(["method", "budget"], as_index=False)[cols].mean().round(6)


def _units(fid: pd.DataFrame, method: str, metric: str) -> dict[str, float]:
    sub = fid[fid.method == method]
    return {f"{r.context}-{r.sample}-{r.budget}": float(getattr(r, metric)) for r in sub.itertuples()}


def _diff(fid, a: str, b: str, metric: str) -> tuple[float, float]:
    from lab.eval.significance import paired_test

    x, y = _units(fid, a, metric), _units(fid, b, metric)
    if not x or not y:
        return math.nan, math.nan
    if len(x) < 2:
        return float(sum(x.values()) - sum(y.values())), math.nan
    res = paired_test(x, y)
    return res.mean_diff, res.pvalue


def claims(fid: pd.DataFrame, reduction: pd.DataFrame, dlm_metrics: dict, needles: pd.DataFrame) -> dict:
    out: dict[str, float] = {}
    methods = sorted(fid.method.unique())
    for m in methods:
        sub = fid[fid.method == m]
        out[f"agreement.{m}"] = float(sub.agreement.mean())
        out[f"kl.{m}"] = float(sub.kl.mean())
        out[f"mass_recall.{m}"] = float(sub.mass_recall.mean())
        out[f"changed_fraction.{m}"] = float(sub.changed_fraction.mean())
    if "specontext" in methods:
        for other in [*BASELINES, "oracle_global", "oracle_layer", "specontext_undistilled"]:
            if other in methods:
                for metric in ("agreement", "kl"):
                    d, p = _diff(fid, "specontext", other, metric)
                    out[f"specontext_minus_{other}.{metric}"], out[f"specontext_minus_{other}.{metric}_p"] = d, p
        best = max((b for b in BASELINES if b in methods), key=lambda b: out[f"agreement.{b}"], default=None)
        if best is not None:
            out["best_baseline_agreement"] = out[f"agreement.{best}"]
            d, p = _diff(fid, "specontext", best, "agreement")
            out["specontext_minus_best_baseline.agreement"], out["specontext_minus_best_baseline.agreement_p"] = d, p
    head = reduction[reduction.model == "head_distilled"]
    if len(head):
        out["reduction.vs_dlm_with_embedding"] = float(head.reduction_vs_dlm_with_embedding.iloc[0])
        out["reduction.vs_dlm_without_embedding"] = float(head.reduction_vs_dlm_without_embedding.iloc[0])
    kl = dlm_metrics.get("heldout_kl", {})
    if kl:
        out["dlm_heldout_kl.distilled"], out["dlm_heldout_kl.undistilled"] = kl["distilled"], kl["undistilled"]
    if len(needles):
        out["needles.full_success_rate"] = float(needles.full_success_rate.iloc[0])
        for r in needles.itertuples():
            out[f"needles.{r.method}.B{r.budget}"] = float(r.accuracy)
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}
