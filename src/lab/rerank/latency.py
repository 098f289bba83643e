"""Seconds per window: FIRST single-token scoring against generating the permutation, same windows, same model.

Each window is scored alone (batch of one), after one untimed warm-up window per mode, with
``time.perf_counter`` around the scorer call (prompt building and tokenisation included, as a reranker
pays them). The ratio is generation time / single-token time, so > 1 means FIRST is faster; the paper
reports about 1.5x for Zephyr-7B under vLLM (Reddy et al. 2024, §4.3), where prompt processing dominates
more than on a CPU.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Sequence

from lab.rerank.listwise import GenerationScorer, SingleTokenScorer

__all__ = ["LatencyResult", "measure_latency"]


@dataclass
class LatencyResult:
    single: list[float] = field(default_factory=list)   # seconds per window
    gen: list[float] = field(default_factory=list)
    gen_tokens: list[int] = field(default_factory=list)  # new tokens generated per window
    gen_complete: list[bool] = field(default_factory=list)   # free generation named every passage once
    constrained: list[float] = field(default_factory=list)   # grammar-constrained decoding (optional)

    @property
    def single_mean(self) -> float:
        return statistics.fmean(self.single)

    @property
    def gen_mean(self) -> float:
        return statistics.fmean(self.gen)

    @property
    def ratio(self) -> float:
        return self.gen_mean / self.single_mean

    def summary(self) -> dict[str, float]:
        out = {"single_s_per_window": self.single_mean, "gen_s_per_window": self.gen_mean,
               "ratio": self.ratio, "windows": float(len(self.single)),
               "gen_new_tokens": statistics.fmean(self.gen_tokens) if self.gen_tokens else 0.0,
               "gen_complete": statistics.fmean(self.gen_complete) if self.gen_complete else 0.0}
        if self.constrained:
            out["constrained_s_per_window"] = statistics.fmean(self.constrained)
            out["ratio_constrained"] = out["constrained_s_per_window"] / self.single_mean
        return out


def measure_latency(single: SingleTokenScorer, gen: GenerationScorer, queries: Sequence[str],
                    windows: Sequence[Sequence[str]], warmup: bool = True, constrained=None) -> LatencyResult:
    """Time ``single`` and ``gen`` (and ``constrained``) on each ``(query, window)`` pair, one window per call."""
    from lab.rerank.evaluation import permutation_complete

    if not windows or len(queries) != len(windows):
        raise ValueError("need as many queries as windows, at least one")
    if warmup:
        single([queries[0]], [windows[0]])
        gen([queries[0]], [windows[0]])
        if constrained is not None:
            constrained([queries[0]], [windows[0]])
    out = LatencyResult()
    for q, w in zip(queries, windows):
        t0 = time.perf_counter()
        single([q], [w])
        out.single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        gen([q], [w])
        out.gen.append(time.perf_counter() - t0)
        text = gen.last_texts[0]
        out.gen_tokens.append(len(gen.tokenizer(text, add_special_tokens=False)["input_ids"]))
        out.gen_complete.append(permutation_complete(text, len(w), gen.prompt.identifiers))
        if constrained is not None:
            constrained.memo.clear()                 # time a real decode, not a memo hit
            t0 = time.perf_counter()
            constrained([q], [w])
            out.constrained.append(time.perf_counter() - t0)
    return out
