"""What FIRST's training (:mod:`lab.methods.first.train`) and reranking (:mod:`lab.methods.first.rerank`) share:
torch setup, the base causal LM and a stage stopwatch. Both import this module; it imports neither.
"""

from __future__ import annotations

import time
from pathlib import Path

from lab.methods.first.config import FirstConfig


def setup_torch(cfg: FirstConfig, seed: int) -> None:
    """:func:`lab.models.setup_torch` with ``first.threads``."""
    from lab.models import setup_torch as setup

    setup(cfg.threads, seed)


def load_base(model_path: str | Path, dtype: str = "float32"):
    from lab.models import load_model, load_tokenizer

    return load_model(model_path, kind="causal_lm", dtype=dtype), load_tokenizer(model_path)


class Stopwatch:
    """Wall-clock seconds since creation (stage timings in metrics.json)."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.t0, 1)
