"""Agreement between two rankings of the same items: Kendall's tau, per query and averaged.

FIRST (Reddy et al., EMNLP 2024, §4) compares the order single-token decoding gives with the order the
generated permutation gives on the same windows; tau = 1 means the two decodings agree exactly.
``tau`` here is Kendall's tau-b over the items both rankings hold (``scipy.stats.kendalltau``; no ties
occur in rankings, so it equals tau-a). Rankings are compared by **position**, so their scores do not matter.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from scipy import stats

from lab.records import Run

__all__ = ["kendall_tau", "run_kendall_tau"]


def kendall_tau(a: Sequence[str], b: Sequence[str]) -> float:
    """Kendall's tau between two orderings (best first) of the same items.

    Items present in only one ordering are ignored; fewer than two shared items give ``nan`` (nothing to
    compare). Repeated items are refused: an ordering is a permutation.
    """
    if len(set(a)) != len(a) or len(set(b)) != len(b):
        raise ValueError("an ordering must not repeat items")
    shared = [x for x in a if x in set(b)]
    if len(shared) < 2:
        return float("nan")
    pos_b = {x: i for i, x in enumerate(b)}
    if len(shared) == 2:   # scipy needs no special case, but keep the definition explicit
        return 1.0 if pos_b[shared[0]] < pos_b[shared[1]] else -1.0
    res = stats.kendalltau(list(range(len(shared))), [pos_b[x] for x in shared])
    return float(res.statistic)


def run_kendall_tau(a: Run, b: Run, depth: int | None = None) -> Mapping[str, float]:
    """``{qid: tau}`` between the top ``depth`` of two runs' rankings (queries in both; order of ``a``).

    Queries whose tau is undefined (< 2 shared items) are left out.
    """
    out: dict[str, float] = {}
    for ranking in a:
        qid = ranking.query.qid
        if qid not in b:
            continue
        left = [c.docid for c in ranking.candidates[:depth]]
        right = [c.docid for c in b[qid].candidates[:depth]]
        tau = kendall_tau(left, right)
        if not math.isnan(tau):
            out[qid] = tau
    return out
