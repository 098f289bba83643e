"""Training windows with gold orders from graded qrels, and window augmentation.

A window is a list of candidate indices (into one first-stage ranking) in the order they are shown to
the model. Its gold order sorts by qrels grade (unjudged = 0), ties broken by **first-stage rank**, so a
shuffled window still has the same gold order as the same passages shown in first-stage order.

Per query: the ``top_windows`` sliding windows nearest the top of the ranking (first-stage order, what
reranking shows the model), plus ``random_windows`` augmented ones: ``window`` candidates drawn from the
top ``depth`` with at least ``min_relevant`` relevant (grade > 0) passages, shown shuffled or in
first-stage order. Sampling uses one ``random.Random(seed)`` walked in query order, so the same inputs
give the same windows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Sequence

from lab.records import Qrels, Ranking, Run
from lab.rerank.listwise import sliding_windows
from lab.rerank.train import RankExample

__all__ = ["LabelledWindow", "window_example", "training_windows"]


@dataclass(frozen=True)
class LabelledWindow:
    qid: str
    indices: tuple[int, ...]    # candidate indices in the ranking, in presentation order
    kind: str                   # "top" (sliding window, first-stage order) or "random"
    example: RankExample


def window_example(ranking: Ranking, judgements: Mapping[str, int], indices: Sequence[int]) -> RankExample:
    """The window ``indices`` of ``ranking`` (presentation order) with its gold ranks.

    Gold: grade descending, ties by first-stage position (the index into ``ranking``); unjudged = 0.
    """
    cands = [ranking.candidates[i] for i in indices]
    missing = [c.docid for c in cands if c.text is None]
    if missing:
        raise ValueError(f"query {ranking.query.qid}: candidates without text {missing[:5]}")
    grades = [float(judgements.get(c.docid, 0)) for c in cands]
    gold = sorted(range(len(indices)), key=lambda k: (-grades[k], indices[k]))
    ranks = [0] * len(indices)
    for pos, k in enumerate(gold):
        ranks[k] = pos + 1
    return RankExample(ranking.query.text, [c.text for c in cands], ranks, grades)


def _random_window(rng: random.Random, n: int, relevant: list[int], window: int, min_relevant: int,
                   shuffle: bool) -> list[int]:
    k = min(window, n)
    chosen = set(rng.sample(relevant, min_relevant))
    rest = [i for i in range(n) if i not in chosen]
    chosen.update(rng.sample(rest, k - len(chosen)))
    out = sorted(chosen)
    if shuffle:
        rng.shuffle(out)
    return out


def training_windows(run: Run, qrels: Qrels, *, window: int = 20, depth: int = 100, top_windows: int = 1,
                     random_windows: int = 0, shuffle: bool = False, min_relevant: int = 1, stride: int | None = None,
                     seed: int = 0, max_queries: int = 0) -> list[LabelledWindow]:
    """Labelled windows for every judged query of ``run`` (``qrels`` order), see the module docstring.

    Queries with fewer than ``min_relevant`` relevant passages in the top ``depth`` give no window;
    a sliding window without ``min_relevant`` relevant passages is skipped (nothing to learn).
    """
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    if min_relevant < 0 or top_windows < 0 or random_windows < 0:
        raise ValueError("min_relevant, top_windows and random_windows must be >= 0")
    rng = random.Random(seed)
    out: list[LabelledWindow] = []
    qids = [q for q in qrels.qids if q in run]
    if max_queries:
        qids = qids[:max_queries]
    for qid in qids:
        ranking, judged = run[qid], qrels[qid]
        n = min(depth, len(ranking))
        relevant = [i for i in range(n) if judged.get(ranking.candidates[i].docid, 0) > 0]
        if n < 2 or len(relevant) < min_relevant:
            continue
        slides = sliding_windows(n, window, stride or max(1, window // 2))
        for s, e in slides[len(slides) - min(top_windows, len(slides)):][::-1]:   # top of the ranking first
            idx = list(range(s, e))
            if e - s > 1 and sum(i in relevant for i in idx) >= min_relevant:
                out.append(LabelledWindow(qid, tuple(idx), "top", window_example(ranking, judged, idx)))
        for _ in range(random_windows):
            idx = _random_window(rng, n, relevant, window, min_relevant, shuffle)
            out.append(LabelledWindow(qid, tuple(idx), "random", window_example(ranking, judged, idx)))
    return out
