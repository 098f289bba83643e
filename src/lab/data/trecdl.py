"""TREC DL 2019/2020 passage: judged queries, qrels and the six rank_llm first-stage runs.

Query order is the **qrels file order** (ascending numeric qid for DL19 and DL20). The topics file
order and the order inside the rank_llm JSONs differ from it and from each other, so one fixed order
is imposed here; every run is re-keyed into it, and ``max_queries`` (the tiny profile) keeps the first
N of it. Only judged topics are kept: DL20 has 200 topics, 54 judged.

:func:`materialise` writes what the DVC ``data`` stage outputs, and :func:`load_materialised` reads it
back, so later stages depend on ``data/`` (tracked by DVC) rather than on the mirror.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lab.data.formats import (
    DataFormatError, read_candidates_jsonl, read_qrels, read_rank_llm_json, read_topics, write_candidates_jsonl,
    write_qrels, write_topics, write_trec_run,
)
from lab.data.sources import resolve
from lab.paths import atomic_path
from lab.records import Qrels, Query, Run
from lab.sections import FIRST_STAGES, DataConfig

__all__ = [
    "TrecDataset", "DATASETS", "QUERY_POOLS", "BEIR_SETS", "RUN_DEPTH", "load_dataset", "load_query_pool",
    "load_beir_topics_qrels", "materialise", "load_materialised",
]

RUN_DEPTH = 100   # every rank_llm JSON holds exactly the top 100 per query


@dataclass(frozen=True)
class _Files:
    topics: str
    qrels: str
    year: str     # suffix of the rank_llm run files

    def run(self, first_stage: str) -> str:
        return f"trec-dl/{first_stage}_top100_{self.year}.json"


DATASETS = {
    "trec-dl-2019": _Files("trec-dl/topics.dl19-passage.txt", "trec-dl/qrels.dl19-passage.txt", "dl19"),
    "trec-dl-2020": _Files("trec-dl/topics.dl20.txt", "trec-dl/qrels.dl20-passage.txt", "dl20"),
}
QUERY_POOLS = {"msmarco-passage-dev-subset": "queries/topics.msmarco-passage.dev-subset.txt"}
BEIR_SETS = ("scifact", "nfcorpus", "fiqa", "arguana", "trec-covid")


@dataclass
class TrecDataset:
    name: str
    queries: list[Query]                               # judged queries, qrels order
    qrels: Qrels                                       # restricted to ``queries``
    runs: dict[str, Run] = field(default_factory=dict)  # first stage -> candidates with passage text

    @property
    def qids(self) -> list[str]:
        return [q.qid for q in self.queries]


def _check_name(name: str, known: Iterable[str], what: str) -> None:
    if name not in known:
        raise ValueError(f"unknown {what} {name!r}; known: {sorted(known)}")


def load_dataset(
    name: str, *, first_stages: Iterable[str] = FIRST_STAGES, depth: int = RUN_DEPTH, max_queries: int = 0
) -> TrecDataset:
    """Judged queries, qrels and first-stage candidates (top ``depth``, scores and ranks as in the file).

    ``depth`` above 100 is refused rather than silently giving 100. Each run must hold every kept
    judged query, with the topic's text (checked by :func:`read_rank_llm_json`).
    """
    _check_name(name, DATASETS, "dataset")
    first_stages = list(first_stages)
    for fs in first_stages:
        _check_name(fs, FIRST_STAGES, "first stage")
    if not 1 <= depth <= RUN_DEPTH:
        raise ValueError(f"depth must be in 1..{RUN_DEPTH} (the rank_llm runs hold {RUN_DEPTH} per query), got {depth}")
    if max_queries < 0:
        raise ValueError(f"max_queries must be >= 0 (0 = all), got {max_queries}")
    files = DATASETS[name]
    topics_path, qrels_path = resolve(files.topics), resolve(files.qrels)
    topics = {q.qid: q.text for q in read_topics(topics_path)}
    qrels = read_qrels(qrels_path)
    missing = [q for q in qrels.qids if q not in topics]
    if missing:
        raise DataFormatError(qrels_path, None, f"{len(missing)} judged qids have no topic in {topics_path}: {missing[:5]}")
    qids = qrels.qids[:max_queries] if max_queries else qrels.qids
    queries = [Query(q, topics[q]) for q in qids]
    runs = {}
    for fs in first_stages:
        path = resolve(files.run(fs))
        run = read_rank_llm_json(path, fs, topics)
        absent = [q for q in qids if q not in run]
        if absent:
            raise DataFormatError(path, None, f"run {fs} lacks {len(absent)} judged queries: {absent[:5]}")
        runs[fs] = run.subset(qids).top(depth)    # subset() re-keys into qrels order
    return TrecDataset(name, queries, qrels.subset(qids), runs)


def load_query_pool(name: str) -> list[Query]:
    """Unlabelled training queries (``msmarco-passage-dev-subset``: 6,980, text kept as is)."""
    _check_name(name, QUERY_POOLS, "query pool")
    return read_topics(resolve(QUERY_POOLS[name]))


def load_beir_topics_qrels(name: str) -> tuple[list[Query], Qrels]:
    """Anserini's BEIR v1.0.0 test topics (file order, all of them) and qrels; no corpus (see lab.data.beir)."""
    _check_name(name, BEIR_SETS, "BEIR set")
    topics_path = resolve(f"queries/topics.beir-v1.0.0-{name}.test.tsv")
    qrels_path = resolve(f"queries/qrels.beir-v1.0.0-{name}.test.txt")
    topics, qrels = read_topics(topics_path), read_qrels(qrels_path)
    known = {q.qid for q in topics}
    missing = [q for q in qrels.qids if q not in known]
    if missing:
        raise DataFormatError(qrels_path, None, f"{len(missing)} judged qids have no topic: {missing[:5]}")
    return topics, qrels


# ------------------------------------------------------------------------------------ DVC data stage

def _grades(qrels: Qrels) -> dict[str, int]:
    counts = Counter(g for docs in qrels.judgements.values() for g in docs.values())
    return {str(g): counts[g] for g in sorted(counts)}


def summarise(ds: TrecDataset) -> dict[str, Any]:
    """Counts for metrics/logging: queries, judgements, grade histogram, candidates per run."""
    return {
        "queries": len(ds.queries),
        "judgements": ds.qrels.n_pairs(),
        "grades": _grades(ds.qrels),
        "candidates": {fs: sum(len(r) for r in run) for fs, run in ds.runs.items()},
        "candidates_per_query": {fs: sorted({len(r) for r in run}) for fs, run in ds.runs.items()},
    }


def materialise(cfg: DataConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the ``data`` stage outputs under ``out_dir`` and return a summary (JSON-ready).

    ``<dataset>/queries.tsv``, ``qrels.txt``, ``runs/<fs>.trec``, ``candidates/<fs>.jsonl``;
    ``pools/<pool>.tsv``; and for ``cfg.beir`` sets ``beir/<name>/queries.tsv`` + ``qrels.txt`` (the
    corpora come from the Hub in :mod:`lab.data.beir`). Each folder is replaced atomically and as a
    whole, so a first stage dropped from the config leaves no stale file, and a crash leaves the old
    folder. Output bytes depend only on the config and the data.
    """
    out = Path(out_dir)
    summary: dict[str, Any] = {"datasets": {}, "pools": {}, "beir": {}}
    for name in cfg.datasets:
        ds = load_dataset(name, first_stages=cfg.first_stages, depth=cfg.depth, max_queries=cfg.max_queries)
        with atomic_path(out / name, is_dir=True) as tmp:
            write_topics(ds.queries, tmp / "queries.tsv")
            write_qrels(ds.qrels, tmp / "qrels.txt")
            for fs, run in ds.runs.items():
                write_trec_run(run, tmp / "runs" / f"{fs}.trec", tag=fs)
                write_candidates_jsonl(run, tmp / "candidates" / f"{fs}.jsonl")
        summary["datasets"][name] = summarise(ds)
    if cfg.query_pools:
        with atomic_path(out / "pools", is_dir=True) as tmp:
            for pool in cfg.query_pools:
                queries = load_query_pool(pool)
                write_topics(queries, tmp / f"{pool}.tsv")
                summary["pools"][pool] = {"queries": len(queries)}
    for name in cfg.beir:
        topics, qrels = load_beir_topics_qrels(name)
        with atomic_path(out / "beir" / name, is_dir=True) as tmp:
            write_topics(topics, tmp / "queries.tsv")
            write_qrels(qrels, tmp / "qrels.txt")
        summary["beir"][name] = {"queries": len(topics), "judgements": qrels.n_pairs(), "grades": _grades(qrels)}
    return summary


def load_materialised(
    out_dir: str | os.PathLike, dataset: str, first_stages: Iterable[str] | None = None
) -> TrecDataset:
    """Read back what :func:`materialise` wrote (runs from ``candidates/*.jsonl``, with text).

    ``first_stages=None`` loads every run present, in name order.
    """
    folder = Path(out_dir) / dataset
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no materialised dataset (run the DVC 'data' stage first)")
    queries = read_topics(folder / "queries.tsv")
    qrels = read_qrels(folder / "qrels.txt")
    if first_stages is None:
        first_stages = sorted(p.stem for p in (folder / "candidates").glob("*.jsonl"))
    runs = {}
    for fs in first_stages:
        path = folder / "candidates" / f"{fs}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: first stage {fs!r} was not materialised (check data.first_stages)")
        runs[fs] = read_candidates_jsonl(path, fs)
    return TrecDataset(dataset, queries, qrels, runs)
