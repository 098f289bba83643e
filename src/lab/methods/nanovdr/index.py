"""NanoVDR index stage: page pools, the query split, and the frozen teacher's embeddings of both.

:func:`build_index` renders each pool passage as a page image, lets the frozen teacher embed every page once
(the index) and every training / validation / test query once (the targets), cached on disk; also the
teacher's top-K pages of the *training* pool per training query (for the document-aware baselines). With
``cfg.benchmarks`` it also indexes the ViDoRe sets (:mod:`lab.methods.nanovdr.vidore`). See
:mod:`lab.methods.nanovdr` for the data split.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lab.data.formats import read_topics, save_npy, write_topics
from lab.data.pages import Page, render_pages, write_pool
from lab.data.translate import augment, build_translator
from lab.data.trecdl import load_materialised, load_query_pool
from lab.methods.nanovdr.config import objective_kwargs
from lab.paths import write_json
from lab.records import Query

__all__ = ["IndexArtifacts", "page_pool", "split_queries", "build_index", "load_index"]


# --------------------------------------------------------------------------------------------- pools

def page_pool(data_dir: str | Path, dataset: str, first_stages: Sequence[str], depth: int) -> list[tuple[str, str]]:
    """``(docid, text)`` of the union of each first stage's top-``depth`` candidates, first-seen order
    (queries in qrels order, first stages in the given order, then rank)."""
    ds = load_materialised(data_dir, dataset, list(first_stages))
    seen: dict[str, str] = {}
    for qid in ds.qids:
        for fs in first_stages:
            for c in ds.runs[fs][qid].candidates[:depth]:
                seen.setdefault(c.docid, c.text or "")
    return list(seen.items())


def _query_pool(data_dir: str | Path, name: str) -> list[Query]:
    path = Path(data_dir) / "pools" / f"{name}.tsv"     # materialised by the DVC data stage
    return read_topics(path) if path.is_file() else load_query_pool(name)


def split_queries(cfg, seed: int) -> dict[str, list[Query]]:
    """``{"train", "val", "eval"}`` queries. The pool is shuffled with ``seed``; validation takes the
    first ``val_queries``, training the next ``train_queries`` (0 = the rest) plus the training
    dataset's queries, then translations (``cfg.languages``). Raises if a test query leaks in."""
    evalq = load_materialised(cfg.data_dir, cfg.eval_dataset, []).queries
    pool = _query_pool(cfg.data_dir, cfg.query_pool)
    order = np.random.default_rng(seed).permutation(len(pool))
    shuffled = [pool[i] for i in order]
    val = shuffled[:cfg.val_queries]
    rest = shuffled[cfg.val_queries:]
    train = (rest[:cfg.train_queries] if cfg.train_queries else rest)
    train = train + load_materialised(cfg.data_dir, cfg.train_dataset, []).queries
    train = augment(train, build_translator(cfg.translator) if cfg.languages else None, cfg.languages)
    test_ids, test_texts = {q.qid for q in evalq}, {q.text.strip().lower() for q in evalq}
    leaks = [q.qid for q in train + val if q.qid in test_ids or q.text.strip().lower() in test_texts]
    if leaks:
        raise ValueError(f"{len(leaks)} test ({cfg.eval_dataset}) queries found in training/validation: {leaks[:5]}")
    return {"train": train, "val": val, "eval": evalq}


# --------------------------------------------------------------------------------------------- index

@dataclass
class IndexArtifacts:
    folder: Path
    manifest: dict
    pools: dict[str, list[Page]]             # "eval" / "train" -> pages (docid, text, png path)
    page_emb: dict[str, np.ndarray]          # "eval" / "train" -> [N, D] teacher page embeddings
    queries: dict[str, list[Query]]          # "train" / "val" / "eval"
    query_emb: dict[str, np.ndarray]         # [Q, D] teacher query embeddings
    topk: dict[str, np.ndarray]              # "train" / "val" -> [Q, K] positions in the train pool
    topk_scores: dict[str, np.ndarray]       # [Q, K] teacher scores

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])


def build_index(cfg, out_dir: str | Path, *, seed: int = 0, teacher=None, cache=None,
                progress: bool = True) -> dict[str, Any]:
    """Write the index stage's outputs under ``out_dir``; return counts and timings (see module doc)."""
    from lab.retrieval.dense import EmbeddingCache
    from lab.retrieval.index import DenseIndex
    from lab.retrieval.teachers import build_teacher, encode_cached
    from lab.retrieval.distill import ObjectiveSettings

    out = Path(out_dir)
    cache = EmbeddingCache() if cache is None else cache
    teacher = teacher or build_teacher(cfg.teacher_kind, cfg.teacher, page_max_length=cfg.page_max_length,
                                       query_max_length=cfg.query_max_length, instruction=cfg.teacher_instruction,
                                       batch_size=cfg.teacher_batch_size)
    timings: dict[str, float] = {}
    pools, page_emb = {}, {}
    for split, dataset, depth in (("eval", cfg.eval_dataset, cfg.eval_pool_depth),
                                  ("train", cfg.train_dataset, cfg.train_pool_depth)):
        docs = page_pool(cfg.data_dir, dataset, cfg.pool_first_stages, depth)
        t0 = time.perf_counter()
        if cfg.render_pages:
            pools[split] = render_pages(docs, out / "pages", width=cfg.pages.width, height=cfg.pages.height,
                                        font_size=cfg.pages.font_size, progress=progress)
        else:
            pools[split] = [Page(d, t) for d, t in docs]
        timings[f"render_{split}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        page_emb[split] = encode_cached(teacher, "pages", pools[split], cache, progress=progress)   # [N, D]
        timings[f"teacher_{split}_pages_s"] = time.perf_counter() - t0
        write_pool(pools[split], out / "pools" / f"{split}.jsonl", out)
        save_npy(out / "emb" / f"{split}_pages.npy", page_emb[split])
    queries = split_queries(cfg, seed)
    query_emb = {}
    for split, qs in queries.items():
        t0 = time.perf_counter()
        query_emb[split] = encode_cached(teacher, "queries", [q.text for q in qs], cache, progress=progress)
        timings[f"teacher_{split}_queries_s"] = time.perf_counter() - t0
        write_topics(qs, out / "queries" / f"{split}.tsv")
        save_npy(out / "emb" / f"{split}_queries.npy", query_emb[split])
    if cfg.benchmarks:                  # paper profile: ViDoRe pages and queries, same teacher and cache
        from lab.methods.nanovdr import vidore   # here, not at the top: the distill stage needs none of it

        t0 = time.perf_counter()
        benchmarks = vidore.index_benchmarks(cfg, out, teacher, cache, exclude=queries["train"] + queries["val"],
                                             progress=progress)
        timings["teacher_benchmarks_s"] = time.perf_counter() - t0
    k = ObjectiveSettings(**objective_kwargs(cfg)).top_k_needed
    train_index = DenseIndex([p.docid for p in pools["train"]], page_emb["train"])
    for split in ("train", "val"):
        scores, pos = train_index.topk(query_emb[split], k)                    # [Q, K], [Q, K]
        save_npy(out / "topk" / f"{split}.npy", pos.astype(np.int64))
        save_npy(out / "topk" / f"{split}_scores.npy", scores.astype(np.float32))
    dim = int(page_emb["eval"].shape[1])
    manifest = {"teacher": teacher.name, "dim": dim, "top_k": k,
                "pages": {s: len(p) for s, p in pools.items()}, "queries": {s: len(q) for s, q in queries.items()},
                "fingerprint": hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in
                                                       (*page_emb.values(), *query_emb.values()))).hexdigest()}
    if cfg.benchmarks:                  # not in the fingerprint: students do not train on them
        manifest["benchmarks"] = benchmarks
    write_json(out / "manifest.json", manifest)
    return {**manifest, "timings": timings, "cache": {"computed": dict(cache.computed), "hits": dict(cache.hits)}}


def load_index(index_dir: str | Path) -> IndexArtifacts:
    folder = Path(index_dir)
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"{folder}: no NanoVDR index (run the nanovdr_index stage first)")
    pools = {}
    for split in ("eval", "train"):
        rows = [json.loads(line) for line in (folder / "pools" / f"{split}.jsonl").read_text("utf-8").splitlines()]
        pools[split] = [Page(r["docid"], r["text"], folder / r["page"] if r["page"] else None) for r in rows]
    load = lambda *p: np.load(folder.joinpath(*p))  # noqa: E731
    return IndexArtifacts(
        folder, json.loads((folder / "manifest.json").read_text()), pools,
        {s: load("emb", f"{s}_pages.npy") for s in ("eval", "train")},
        {s: read_topics(folder / "queries" / f"{s}.tsv") for s in ("train", "val", "eval")},
        {s: load("emb", f"{s}_queries.npy") for s in ("train", "val", "eval")},
        {s: load("topk", f"{s}.npy") for s in ("train", "val")},
        {s: load("topk", f"{s}_scores.npy") for s in ("train", "val")})
