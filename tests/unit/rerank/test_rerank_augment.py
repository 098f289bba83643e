"""Training windows: gold orders from graded qrels with ties by first-stage rank, augmentation, determinism."""

from lab.records import Candidate, Qrels, Query, Ranking, Run
from lab.rerank.augment import training_windows, window_example


def _ranking(n=30):
    return Ranking(Query("q1", "query"), [Candidate(f"d{i}", 100.0 - i, i + 1, f"text {i}") for i in range(n)])


QRELS = Qrels({"q1": {"d3": 2, "d7": 3, "d12": 1, "d20": 2, "d25": 0}})


def test_gold_is_grade_then_first_stage_rank_even_when_shuffled():
    ranking = _ranking()
    ex = window_example(ranking, QRELS["q1"], [20, 3, 5, 7, 4])      # grades 2, 2, 0, 3, 0
    assert ex.order == [3, 1, 0, 4, 2]     # d7 (3); d3 before d20 (both 2, d3 ranks higher); d4 before d5
    assert ex.relevance == [2.0, 2.0, 0.0, 3.0, 0.0]


def test_top_and_random_windows():
    run = Run("bm25", {"q1": _ranking(), "q2": Ranking(Query("q2", "x"), _ranking().candidates)})
    qrels = Qrels({**QRELS.judgements, "q2": {"d29": 1}})
    wins = training_windows(run, qrels, window=10, depth=30, top_windows=2, random_windows=3, shuffle=True, seed=5)
    q1 = [w for w in wins if w.qid == "q1"]
    assert [w.indices for w in q1 if w.kind == "top"] == [tuple(range(10)), tuple(range(5, 15))]
    randoms = [w for w in q1 if w.kind == "random"]
    assert len(randoms) == 3 and all(len(set(w.indices)) == 10 for w in randoms)
    assert all(any(QRELS["q1"].get(f"d{i}", 0) > 0 for i in w.indices) for w in randoms)
    assert any(list(w.indices) != sorted(w.indices) for w in randoms)           # shuffled presentation
    q2 = [w for w in wins if w.qid == "q2"]
    assert [w.kind for w in q2] == ["random"] * 3                                # no relevant passage in its top windows
    again = training_windows(run, qrels, window=10, depth=30, top_windows=2, random_windows=3, shuffle=True, seed=5)
    assert [w.indices for w in again] == [w.indices for w in wins]


def test_unshuffled_random_windows_keep_first_stage_order_and_max_queries():
    run = Run("bm25", {"q1": _ranking()})
    wins = training_windows(run, QRELS, window=8, depth=30, top_windows=0, random_windows=2, shuffle=False, seed=1)
    assert all(list(w.indices) == sorted(w.indices) for w in wins)
    assert training_windows(run, QRELS, window=8, max_queries=1, top_windows=1)[0].qid == "q1"
