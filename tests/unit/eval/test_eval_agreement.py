"""Kendall tau between two orderings / two runs (single-token vs generation agreement in FIRST)."""

import math

import pytest
from scipy import stats

from lab.eval.agreement import kendall_tau, run_kendall_tau
from lab.records import Candidate, Query, Ranking, Run


def test_identical_reversed_and_one_swap():
    a = ["a", "b", "c", "d"]
    assert kendall_tau(a, a) == 1.0
    assert kendall_tau(a, a[::-1]) == -1.0
    assert kendall_tau(a, ["b", "a", "c", "d"]) == pytest.approx(1 - 2 * 1 / 6)   # 1 discordant pair of 6


def test_matches_scipy_on_a_permutation():
    a = list("abcdefgh")
    b = list("cadbhgef")
    expected = stats.kendalltau(range(8), [b.index(x) for x in a]).statistic
    assert kendall_tau(a, b) == pytest.approx(expected)


def test_only_shared_items_count_and_degenerate_cases():
    assert kendall_tau(["a", "b", "x"], ["b", "a", "y"]) == -1.0
    assert math.isnan(kendall_tau(["a"], ["a"])) and math.isnan(kendall_tau(["a", "b"], ["c", "d"]))
    with pytest.raises(ValueError, match="repeat"):
        kendall_tau(["a", "a"], ["a"])


def _run(name, orders):
    return Run(name, {q: Ranking(Query(q, q), [Candidate(d, float(len(o) - i), i + 1) for i, d in enumerate(o)])
                      for q, o in orders.items()})


def test_run_kendall_tau_per_query_with_depth():
    a = _run("a", {"1": ["x", "y", "z", "w"], "2": ["p", "q"], "3": ["s"]})
    b = _run("b", {"1": ["y", "x", "z", "w"], "2": ["p", "q"], "3": ["s"]})
    taus = run_kendall_tau(a, b)
    assert taus["1"] == pytest.approx(2 / 3) and taus["2"] == 1.0 and "3" not in taus   # "3": one item, undefined
    assert run_kendall_tau(a, b, depth=2)["1"] == -1.0
