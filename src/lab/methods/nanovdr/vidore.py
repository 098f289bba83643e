"""NanoVDR on ViDoRe (paper profile): the teacher's page index per set, NDCG@5, retention.

The paper evaluates on ViDoRe v1 (10 sets), v2 (4) and v3 (8): NDCG@5 with binary qrels per set, the
macro average per version, and retention = the mean over v1/v2/v3 of (student average / teacher
average): NanoVDR-S-Multi's 95.1% is mean(82.2/84.3, 61.9/65.3, 46.5/50.0). The sets are the
``nanovdr.benchmarks`` keys of ``lab/data/vidore.yaml``.

:func:`index_benchmarks` runs inside the index stage (:func:`lab.methods.nanovdr.index.build_index`): the
frozen teacher embeds every page of every set once and every query once, through the same interface and
embedding cache as the smoke pools, and the results go under the stage's existing folders::

    pages/vidore/<sha256>.<ext>                 page images (content-addressed, shared by sets)
    pools/vidore/<v>/<name>.jsonl               pages (docid, text, image path)
    queries/vidore/<v>/<name>.jsonl | .qrels.json   queries (JSONL: ViDoRe texts may hold line breaks), binary qrels
    emb/vidore/<v>/<name>_pages.npy | _queries.npy  [N, D] / [Q, D] teacher embeddings

:func:`evaluate_benchmarks` (report stage) searches each set's teacher index with the teacher's own
query vectors and with every student's, and scores NDCG@5 with trec_eval conventions.

Imports only layers (the pool and ``.npy`` writers are :func:`lab.data.pages.write_pool` and
:func:`lab.data.formats.save_npy`); :mod:`lab.methods.nanovdr.index` imports this module, never the reverse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from lab.data.formats import save_npy
from lab.data.pages import Page, write_pool
from lab.paths import atomic_path, write_json
from lab.records import Qrels, Query

__all__ = ["MEASURE", "index_benchmarks", "load_benchmark", "load_queries", "evaluate_benchmarks", "BenchmarkReport"]

MEASURE = {"ndcg_5": "nDCG@5"}          # the paper's measure; binary qrels make trec_eval's nDCG binary


def _paths(root: Path, key: str) -> dict[str, Path]:
    version, name = key.split("/", 1)
    return {"pool": root / "pools" / "vidore" / version / f"{name}.jsonl",
            "queries": root / "queries" / "vidore" / version / f"{name}.jsonl",
            "qrels": root / "queries" / "vidore" / version / f"{name}.qrels.json",
            "pages_emb": root / "emb" / "vidore" / version / f"{name}_pages.npy",
            "queries_emb": root / "emb" / "vidore" / version / f"{name}_queries.npy"}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def index_benchmarks(cfg, out_dir: str | Path, teacher, cache, *, exclude: Sequence[Query] = (),
                     progress: bool = True) -> dict[str, dict[str, Any]]:
    """Teacher page and query embeddings of every set in ``cfg.benchmarks``; counts per set.

    Raises if a benchmark query text is also a training / validation query (``exclude``).
    """
    from lab.data.vidore import load_vidore
    from lab.retrieval.teachers import encode_cached

    out = Path(out_dir)
    seen = {_norm(q.text) for q in exclude}
    counts: dict[str, dict[str, Any]] = {}
    for key in cfg.benchmarks:
        ds = load_vidore(key, out / "pages" / "vidore", root=cfg.benchmark_dir or None,
                         languages=cfg.benchmark_languages)
        leaks = [q.qid for q in ds.queries if _norm(q.text) in seen]
        if leaks:
            raise ValueError(f"{key}: {len(leaks)} benchmark queries are also training/validation queries: {leaks[:5]}")
        paths = _paths(out, key)
        page_emb = encode_cached(teacher, "pages", ds.pages, cache, progress=progress)                 # [N, D]
        query_emb = encode_cached(teacher, "queries", [q.text for q in ds.queries], cache, progress=progress)  # [Q, D]
        write_pool(ds.pages, paths["pool"], out)
        with atomic_path(paths["queries"]) as tmp:
            tmp.write_text("".join(json.dumps({"qid": q.qid, "text": q.text}, ensure_ascii=False) + "\n"
                                   for q in ds.queries), encoding="utf-8")
        write_json(paths["qrels"], ds.qrels.judgements)
        save_npy(paths["pages_emb"], page_emb)
        save_npy(paths["queries_emb"], query_emb)
        counts[key] = {"repo": ds.set.repo, "pages": len(ds.pages), "queries": len(ds.queries),
                       "skipped": dict(ds.skipped)}
    return counts


@dataclass
class BenchmarkArtifacts:
    key: str
    pages: list[Page]
    page_emb: np.ndarray          # [N, D] teacher page embeddings
    queries: list[Query]
    query_emb: np.ndarray         # [Q, D] teacher query embeddings
    qrels: Qrels                  # binary


def load_benchmark(index_dir: str | Path, key: str) -> BenchmarkArtifacts:
    root = Path(index_dir)
    paths = _paths(root, key)
    if not paths["pool"].is_file():
        raise FileNotFoundError(f"{paths['pool']}: no teacher index for ViDoRe set {key} (rerun the nanovdr_index "
                                "stage with it in nanovdr.benchmarks)")
    rows = [json.loads(line) for line in paths["pool"].read_text("utf-8").splitlines()]
    pages = [Page(r["docid"], r["text"], root / r["page"] if r["page"] else None) for r in rows]
    queries = [Query(**json.loads(line)) for line in paths["queries"].read_text("utf-8").splitlines()]
    qrels = Qrels(json.loads(paths["qrels"].read_text("utf-8")))
    return BenchmarkArtifacts(key, pages, np.load(paths["pages_emb"]), queries, np.load(paths["queries_emb"]), qrels)


def load_queries(index_dir: str | Path, key: str) -> list[Query]:
    """One set's queries alone (what the students encode), without its page embeddings."""
    path = _paths(Path(index_dir), key)["queries"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no teacher index for ViDoRe set {key} (rerun the nanovdr_index stage with "
                                "it in nanovdr.benchmarks)")
    return [Query(**json.loads(line)) for line in path.read_text("utf-8").splitlines()]


@dataclass
class BenchmarkReport:
    per_set: pd.DataFrame         # version, set, run, ndcg_5, queries
    per_version: pd.DataFrame     # version, run, mean (macro over sets), teacher, retention
    retention: pd.DataFrame       # run, retention (mean over versions of student / teacher)

    def long(self) -> pd.DataFrame:
        """run, qid (= set), measure, value, version: the long form :mod:`lab.eval.plots` draws."""
        d = self.per_set
        return pd.DataFrame({"run": d["run"], "qid": d["version"] + "/" + d["set"], "measure": "ndcg_5",
                             "value": d["ndcg_5"], "version": d["version"]})

    def metrics(self) -> dict[str, Any]:
        """``{"ndcg_5": {run: {version: mean}}, "retention": {run: r}}`` (metrics.json nesting)."""
        means = {run: dict(zip(g["version"], g["mean"].astype(float))) for run, g in self.per_version.groupby("run")}
        return {"ndcg_5": means, "retention": dict(zip(self.retention["run"], self.retention["retention"].astype(float)))}


def evaluate_benchmarks(cfg, students: Mapping[str, str | Path], *, index_dir: str | Path,
                        query_emb: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> BenchmarkReport:
    """Teacher and every student on each ViDoRe set's teacher page index (see module docstring).
    ``query_emb``: ``{set: {student: [Q, D]}}`` already encoded (:func:`lab.methods.nanovdr.evaluate.encode_queries`,
    under ``accelerate launch`` in the paper profile); else the students are loaded and encode here."""
    from lab.eval import evaluate, shard
    from lab.retrieval.dense import Encoder
    from lab.retrieval.index import DenseIndex

    if not cfg.benchmarks:
        raise ValueError("nanovdr.benchmarks is empty: no ViDoRe set to evaluate")
    encoders = {} if query_emb is not None else {name: Encoder.load(path) for name, path in students.items()}
    rows = []
    for key in cfg.benchmarks:
        art = load_benchmark(index_dir, key)
        index = DenseIndex([p.docid for p in art.pages], art.page_emb)
        q_emb = {"teacher": art.query_emb}                                                  # [Q, D]
        q_emb.update({name: shard.map_array(lambda t, e=enc: e.encode(t, progress=False),   # [Q, D], sharded
                                            [q.text for q in art.queries])                  # under a launch
                      for name, enc in encoders.items()} if query_emb is None
                     else {name: query_emb[key][name] for name in students})
        version, name = key.split("/", 1)
        for run_name, emb in q_emb.items():
            run = index.search(emb, cfg.search_depth, queries=art.queries, name=run_name)
            result = evaluate(run, art.qrels, MEASURE)
            rows.append({"version": version, "set": name, "run": run_name, "ndcg_5": result.means["ndcg_5"],
                         "queries": result.n})
    per_set = pd.DataFrame(rows)
    per_version = per_set.groupby(["version", "run"], sort=False, as_index=False)["ndcg_5"].mean()
    per_version = per_version.rename(columns={"ndcg_5": "mean"})
    teacher = per_version[per_version["run"] == "teacher"].set_index("version")["mean"]
    per_version["teacher"] = per_version["version"].map(teacher)
    per_version["retention"] = per_version["mean"] / per_version["teacher"]
    retention = per_version.groupby("run", sort=False, as_index=False)["retention"].mean()
    return BenchmarkReport(per_set, per_version, retention)
