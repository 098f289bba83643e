"""NanoVDR report stage: student vs teacher vs BM25 over the same test page pool.

:func:`evaluate`: nDCG@10 / nDCG@5, retention = student / teacher, paired test against the teacher, with the
untrained student (``student-untrained``: the seeded projector distillation starts from) as the floor the six
objectives are read against. Paper profile: :func:`evaluate_benchmarks` on the ViDoRe sets
(:mod:`lab.methods.nanovdr.vidore`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from lab.data.pages import Page
from lab.data.trecdl import load_materialised
from lab.methods.nanovdr import vidore
from lab.methods.nanovdr.index import load_index
from lab.records import Query, Run

__all__ = ["bm25_run", "evaluate", "EvalReport", "evaluate_benchmarks", "UNTRAINED"]

UNTRAINED = "student-untrained"     # run name of the never-trained student (distill's seeded starting point)


def bm25_run(pages: Sequence[Page], queries: Sequence[Query], k: int, name: str = "bm25") -> Run:
    """BM25 (``bm25s``, Lucene variant, k1=0.9 b=0.4 as Anserini) over the page texts of the same pool."""
    import bm25s

    from lab.records import Candidate, Ranking

    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index(bm25s.tokenize([p.text for p in pages], stopwords="en", show_progress=False), show_progress=False)
    docs, scores = retriever.retrieve(bm25s.tokenize([q.text for q in queries], stopwords="en", show_progress=False),
                                      k=min(k, len(pages)), show_progress=False, n_threads=1)
    run = Run(name)
    for q, d_row, s_row in zip(queries, docs, scores):
        run.add(Ranking(q, [Candidate(pages[int(d)].docid, float(s), rank=r + 1)
                            for r, (d, s) in enumerate(zip(d_row, s_row)) if float(s) > 0]))
    return run


def evaluate_benchmarks(cfg, students: Mapping[str, str | Path], *, index_dir: str | Path | None = None):
    """Paper profile: teacher and students on every ViDoRe set of ``cfg.benchmarks`` (NDCG@5 per set,
    macro average per version, retention = mean over versions of student / teacher); see
    :mod:`lab.methods.nanovdr.vidore`."""
    return vidore.evaluate_benchmarks(cfg, students, index_dir=index_dir or cfg.index_dir)


@dataclass
class EvalReport:
    comparison: Any                 # lab.eval.report.Comparison (baseline: teacher)
    retention: pd.DataFrame         # run, measure, mean, teacher, retention
    runs: dict[str, Run]
    encode_ms_per_query: dict[str, float]


def evaluate(cfg, students: Mapping[str, str | Path], *, index_dir: str | Path | None = None, seed: int = 0,
             untrained: bool = True) -> EvalReport:
    """Teacher, BM25 and every student over the test page pool; paired t-test of each against the teacher.

    With ``untrained`` the run ``student-untrained`` is added: the student built exactly as
    :func:`~lab.methods.nanovdr.distill.distill` builds it with ``seed`` (the stage's seed), never trained, so
    the retention table shows what the objectives add over a random projector into the teacher's space.
    """
    from lab.eval.report import compare_runs
    from lab.methods.nanovdr.distill import build_student
    from lab.retrieval.dense import Encoder
    from lab.retrieval.index import DenseIndex

    art = load_index(index_dir or cfg.index_dir)
    qrels = load_materialised(cfg.data_dir, cfg.eval_dataset, []).qrels
    queries = art.queries["eval"]
    index = DenseIndex([p.docid for p in art.pools["eval"]], art.page_emb["eval"])
    runs = {"teacher": index.search(art.query_emb["eval"], cfg.search_depth, queries=queries, name="teacher"),
            "bm25": bm25_run(art.pools["eval"], queries, cfg.search_depth)}
    ms = {}
    if untrained and UNTRAINED in students:
        raise ValueError(f"{UNTRAINED!r} names the untrained baseline; give that student another name")
    for name, path in [*students.items(), *([(UNTRAINED, None)] if untrained else [])]:
        enc = Encoder.load(path) if path is not None else build_student(cfg, art.dim, seed)
        t0 = time.perf_counter()
        q_emb = enc.encode([q.text for q in queries], progress=False)                 # [Q, D]
        ms[name] = 1000 * (time.perf_counter() - t0) / max(len(queries), 1)
        runs[name] = index.search(q_emb, cfg.search_depth, queries=queries, name=name)
    comp = compare_runs(runs, qrels, dict(cfg.measures), baseline="teacher", test=cfg.test, alpha=cfg.alpha)
    s = comp.summary
    teacher = s[s["run"] == "teacher"].set_index("measure")["mean"]
    retention = s[["run", "measure", "mean"]].assign(teacher=lambda d: d["measure"].map(teacher))
    retention["retention"] = retention["mean"] / retention["teacher"]
    return EvalReport(comp, retention.reset_index(drop=True), runs, ms)
