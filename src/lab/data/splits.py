"""Train/evaluation separation for methods that train on TREC DL: never train on an evaluation query.

FIRST's and LaSER's training refuses an evaluation set as training data and any training qid that is an
evaluation qid (qids read from the materialised topics the ``data`` stage wrote).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from lab.data.formats import read_topics

__all__ = ["eval_qids", "check_no_leak"]


def eval_qids(data_dir: str | os.PathLike, datasets: Iterable[str]) -> set[str]:
    """Every query id of the materialised ``datasets`` (``<data_dir>/<name>/queries.tsv``)."""
    return {q.qid for name in datasets for q in read_topics(Path(data_dir) / name / "queries.tsv")}


def check_no_leak(train_dataset: str, train_qids: Iterable[str], eval_datasets: Iterable[str],
                  data_dir: str | os.PathLike, key: str = "train.dataset") -> None:
    """Raise ``ValueError`` (naming ``key``) if the training set is an evaluation set or shares a qid with one."""
    evals = list(eval_datasets)
    if train_dataset in evals:
        raise ValueError(f"{key} {train_dataset!r} is an evaluation set ({evals})")
    leaked = set(train_qids) & eval_qids(data_dir, evals)
    if leaked:
        raise ValueError(f"{key}: training data hold {len(leaked)} evaluation queries: {sorted(leaked)[:5]}")
