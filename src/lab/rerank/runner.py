"""Run several window scorers over one first-stage run: reranked runs, per-configuration timing, generated texts.

The method modules decide *which* scorers (models, decodings); this module only runs them the same way and
records what each did, so every configuration's timing and generation log have one shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from lab.records import Run
from lab.rerank.evaluation import permutation_complete
from lab.rerank.listwise import WindowScorer, rerank, sliding_windows

__all__ = ["Recorder", "ConfigResult", "run_scorers", "windows_per_query"]


class Recorder:
    """Wraps a scorer; keeps every generated text (scorers with ``last_texts``) with its window size."""

    def __init__(self, inner: WindowScorer):
        self.inner, self.texts = inner, []

    def __call__(self, queries, windows):
        orders = self.inner(queries, windows)
        for query, window, text in zip(queries, windows, getattr(self.inner, "last_texts", [])):
            self.texts.append((query, len(window), text))
        return orders


@dataclass
class ConfigResult:
    run: Run
    windows: int
    seconds: float
    complete: float                      # share of generated texts naming every passage once (nan: no texts)
    texts: list[tuple[str, int, str, bool]] = field(default_factory=list)   # query, passages, text, complete


def windows_per_query(run: Run, window: int, stride: int, depth: int) -> int:
    n = min(depth, max((len(x) for x in run), default=0))
    return len(sliding_windows(n, window, stride))


def run_scorers(base: Run, scorers: Mapping[str, WindowScorer], *, window: int, stride: int, depth: int,
                batch_size: int, identifiers: Sequence[str], progress: bool = False) -> dict[str, ConfigResult]:
    """Rerank ``base`` with each scorer in order; keys are run names (``<first stage>/<config>``)."""
    out = {}
    n_win = len(base) * windows_per_query(base, window, stride, depth)
    for name, scorer in scorers.items():
        rec = Recorder(scorer)
        t0 = time.perf_counter()
        reranked = rerank(base, rec, window=window, stride=stride, depth=depth, progress=progress,
                          batch_size=batch_size, name=name)
        secs = time.perf_counter() - t0
        ok = [permutation_complete(t, n, identifiers) for _, n, t in rec.texts]
        out[name] = ConfigResult(reranked, n_win, secs, sum(ok) / len(ok) if ok else float("nan"),
                                 [(q, n, t, c) for (q, n, t), c in zip(rec.texts, ok)])
    return out
