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

__all__ = ["bm25_run", "evaluate", "EvalReport", "evaluate_benchmarks", "encode_queries", "UNTRAINED"]

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
    index_dir = index_dir or cfg.index_dir
    if not cfg.benchmarks:
        raise ValueError("nanovdr.benchmarks is empty: no ViDoRe set to evaluate")
    texts = {key: [q.text for q in vidore.load_queries(index_dir, key)] for key in cfg.benchmarks}
    dim = int(vidore.load_benchmark(index_dir, cfg.benchmarks[0]).page_emb.shape[1])
    q_emb, _ = encode_queries(cfg, students, texts, dim=dim)
    return vidore.evaluate_benchmarks(cfg, students, index_dir=index_dir, query_emb=q_emb)


def encode_queries(cfg, students: Mapping[str, str | Path | None], texts: Mapping[str, Sequence[str]], *,
                   dim: int, seed: int = 0) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """``({set: {student: [Q, D] rows}}, {student: ms per query})``: every student (a saved encoder, or ``None``:
    the untrained student of ``seed``, as :func:`~lab.methods.nanovdr.distill.build_student` draws it) encodes
    every set's query texts. Under ``accelerate launch`` each process encodes its block of each set on its own
    device (:mod:`lab.eval.shard`), every process gets all rows. ``nanovdr.inference_launch: accelerate`` (paper
    profile): when :func:`lab.methods.nanovdr.launched.inference_plan` says so, this runs under ``accelerate
    launch`` (``python -m lab.methods.nanovdr.evaluate encode``) and the rows are read back."""
    if cfg.inference_launch == "accelerate":
        from lab.methods.nanovdr import launched

        plan = launched.inference_plan(cfg)
        if plan.mode == "accelerate":
            return launched.encode_launched(plan, cfg, students, texts, dim=dim, seed=seed)
    from lab.eval import shard
    from lab.methods.nanovdr.distill import build_student
    from lab.retrieval.dense import Encoder

    emb: dict[str, dict[str, Any]] = {key: {} for key in texts}
    ms = {}
    dev = shard.device()               # under a launch: this process's GPU (CPU without CUDA); else as before
    for name, path in students.items():
        enc = Encoder.load(path) if path is not None else build_student(cfg, dim, seed)
        enc = enc.to(dev) if dev is not None else enc
        t0 = time.perf_counter()
        for key, t in texts.items():
            emb[key][name] = shard.map_array(lambda xs: enc.encode(xs, progress=False), list(t))   # [Q, D]
        ms[name] = 1000 * (time.perf_counter() - t0) / max(sum(len(t) for t in texts.values()), 1)
    return emb, ms


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
    from lab.retrieval.index import DenseIndex

    art = load_index(index_dir or cfg.index_dir)
    qrels = load_materialised(cfg.data_dir, cfg.eval_dataset, []).qrels
    queries = art.queries["eval"]
    index = DenseIndex([p.docid for p in art.pools["eval"]], art.page_emb["eval"])
    runs = {"teacher": index.search(art.query_emb["eval"], cfg.search_depth, queries=queries, name="teacher"),
            "bm25": bm25_run(art.pools["eval"], queries, cfg.search_depth)}
    if untrained and UNTRAINED in students:
        raise ValueError(f"{UNTRAINED!r} names the untrained baseline; give that student another name")
    q_emb, ms = encode_queries(cfg, {**students, **({UNTRAINED: None} if untrained else {})},
                               {"eval": [q.text for q in queries]}, dim=art.dim, seed=seed)
    for name, emb in q_emb["eval"].items():
        runs[name] = index.search(emb, cfg.search_depth, queries=queries, name=name)     # emb: [Q, D]
    comp = compare_runs(runs, qrels, dict(cfg.measures), baseline="teacher", test=cfg.test, alpha=cfg.alpha)
    s = comp.summary
    teacher = s[s["run"] == "teacher"].set_index("measure")["mean"]
    retention = s[["run", "measure", "mean"]].assign(teacher=lambda d: d["measure"].map(teacher))
    retention["retention"] = retention["mean"] / retention["teacher"]
    return EvalReport(comp, retention.reset_index(drop=True), runs, ms)


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.methods.nanovdr.evaluate encode --cfg CFG.json --jobs JOBS.json --out DIR``: what
    :func:`lab.methods.nanovdr.launched.encode_launched` starts under ``accelerate launch``; every process encodes
    its block, rank 0 writes ``DIR/<set>_<student>.npy`` (positions) and ``DIR/ms.json``."""
    import argparse
    import json

    from lab.data.formats import save_npy
    from lab.eval import shard
    from lab.methods.nanovdr.launched import load_cfg
    from lab.paths import write_json

    p = argparse.ArgumentParser(prog="python -m lab.methods.nanovdr.evaluate", description=main.__doc__)
    p.add_argument("command", choices=["encode"])
    p.add_argument("--cfg", required=True)
    p.add_argument("--jobs", required=True, help="{students: {name: path | null}, texts: {set: [...]}, dim, seed}")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    jobs = json.loads(Path(args.jobs).read_text())
    emb, ms = encode_queries(load_cfg(args.cfg), jobs["students"], jobs["texts"], dim=jobs["dim"], seed=jobs["seed"])
    if shard.is_main():                # every rank holds all rows; one writes them
        for i, by_name in enumerate(emb.values()):
            for j, name in enumerate(jobs["students"]):
                save_npy(Path(args.out) / f"{i}_{j}.npy", by_name[name])
        write_json(Path(args.out) / "ms.json", ms)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
