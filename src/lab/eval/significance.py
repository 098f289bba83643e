"""Paired significance tests on two runs' per-query values (the standard IR comparison).

Values are paired **by qid**, never by position: two dicts built in different query orders would
otherwise be compared query-against-wrong-query without any error. Differing qid sets are refused
(evaluate both runs with ``missing="zero"`` over the same qrels to get equal sets).

* ``ttest``: ``scipy.stats.ttest_rel`` (two-sided). When every difference is exactly 0 scipy's
  statistic is 0/0 = nan; the runs are then indistinguishable, so we report statistic 0 and p = 1.
* ``permutation``: ``scipy.stats.permutation_test`` with ``permutation_type="samples"`` (randomly
  swaps a/b within each query, i.e. sign flips of the differences), statistic = mean difference,
  two-sided, ``n_resamples`` random sign patterns from ``seed`` (exact when 2**n <= n_resamples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
from scipy import stats

__all__ = ["PairedTestResult", "paired_test"]


@dataclass(frozen=True)
class PairedTestResult:
    mean_diff: float     # mean over queries of a - b
    statistic: float     # t for the t-test, the mean difference for the permutation test
    pvalue: float        # two-sided
    n: int               # number of paired queries
    method: str

    def significant(self, alpha: float = 0.05) -> bool:
        return self.pvalue < alpha


def _aligned(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    ka, kb = {str(q) for q in a}, {str(q) for q in b}
    if len(ka) != len(a) or len(kb) != len(b):
        raise ValueError("qids collide once cast to str (e.g. 1 and '1' both present)")
    if ka != kb:
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        raise ValueError(
            f"paired test needs the same queries on both sides: {len(only_a)} qids only in a "
            f"(e.g. {only_a[:5]}), {len(only_b)} only in b (e.g. {only_b[:5]}); "
            "evaluate both runs on the same qrels with missing='zero'"
        )
    qids = sorted(ka)
    sa, sb = {str(q): v for q, v in a.items()}, {str(q): v for q, v in b.items()}
    x = np.array([float(sa[q]) for q in qids])
    y = np.array([float(sb[q]) for q in qids])
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("per-query values must be finite numbers")
    return qids, x, y


def paired_test(
    a: Mapping[str, float],
    b: Mapping[str, float],
    method: Literal["ttest", "permutation"] = "ttest",
    n_resamples: int = 10000,
    seed: int = 0,
) -> PairedTestResult:
    """Two-sided paired test of ``a`` against ``b`` (``{qid: value}`` each); see the module docstring."""
    if method not in ("ttest", "permutation"):
        raise ValueError(f"method must be 'ttest' or 'permutation', got {method!r}")
    _, x, y = _aligned(a, b)
    n = len(x)
    if n < 2:
        raise ValueError(f"a paired test needs at least 2 queries, got {n}")
    d = x - y
    mean_diff = float(d.mean())
    if not d.any():      # identical per-query values: nothing to test, and scipy would give nan
        return PairedTestResult(0.0, 0.0, 1.0, n, method)
    if method == "ttest":
        res = stats.ttest_rel(x, y, alternative="two-sided")
        statistic, pvalue = float(res.statistic), float(res.pvalue)
    else:
        res = stats.permutation_test(
            (x, y),
            lambda u, v, axis: np.mean(u - v, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        )
        statistic, pvalue = float(res.statistic), float(res.pvalue)
    if math.isnan(pvalue):
        raise ArithmeticError(f"{method}: p-value is nan for {n} queries (mean difference {mean_diff})")
    return PairedTestResult(mean_diff, statistic, pvalue, n, method)
