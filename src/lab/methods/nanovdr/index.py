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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lab.data.formats import read_topics, save_npy, write_topics
from lab.data.pages import Page, render_pages, write_pool
from lab.data.translate import augment, build_translator
from lab.data.trecdl import load_materialised, load_query_pool
from lab.methods.nanovdr.config import objective_kwargs, translator_kwargs
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
    if cfg.train_source == "nanovdr_train":
        train, val = nanovdr_train_queries(cfg, seed)
        return _no_leak(cfg, train, val, evalq)
    pool = _query_pool(cfg.data_dir, cfg.query_pool)
    order = np.random.default_rng(seed).permutation(len(pool))
    shuffled = [pool[i] for i in order]
    val = shuffled[:cfg.val_queries]
    rest = shuffled[cfg.val_queries:]
    train = (rest[:cfg.train_queries] if cfg.train_queries else rest)
    train = train + load_materialised(cfg.data_dir, cfg.train_dataset, []).queries
    return _no_leak(cfg, translated(cfg, train, seed), val, evalq)


def translated(cfg, train: list[Query], seed: int) -> list[Query]:
    """``train`` + its machine translations (``cfg.languages``), each language a seeded sample of at most
    ``translate.per_language`` queries (the paper's balance, :func:`lab.data.translate.augment`)."""
    if not cfg.languages:
        return list(train)
    return augment(train, build_translator(cfg.translator, **translator_kwargs(cfg)), cfg.languages,
                   per_language=cfg.translate.per_language, seed=seed)


def _no_leak(cfg, train: list[Query], val: list[Query], evalq: list[Query]) -> dict[str, list[Query]]:
    test_ids, test_texts = {q.qid for q in evalq}, {q.text.strip().lower() for q in evalq}
    leaks = [q.qid for q in train + val if q.qid in test_ids or q.text.strip().lower() in test_texts]
    if leaks:
        raise ValueError(f"{len(leaks)} test ({cfg.eval_dataset}) queries found in training/validation: {leaks[:5]}")
    return {"train": train, "val": val, "eval": evalq}


def nanovdr_train_pool(cfg, seed: int, pages_dir: Path) -> tuple[list[Page], dict[str, str]]:
    """The training page pool under ``train_source: nanovdr_train``: the ground-truth pages of the training and
    validation queries (written once, content-addressed, streamed from the parquet files; a page shared by several
    queries is one page), and ``{qid: docid}``. The teacher embeds them for the ranking-KL sweep points and the
    hard-label InfoNCE; the student never sees them."""
    from lab.data import nanovdr_train as T

    train, val = nanovdr_train_records(cfg, seed)
    paths = T.extract_pages(train + val, pages_dir)
    pool: dict[str, Page] = {}
    page_of = {}
    for q in train + val:
        if q.qid in paths:
            docid = f"ntrain:{paths[q.qid].stem[:16]}"
            pool.setdefault(docid, Page(docid, "", paths[q.qid]))
            page_of[q.qid] = docid
    return list(pool.values()), page_of


def nanovdr_train_records(cfg, seed: int):
    """(train, val) :class:`~lab.data.nanovdr_train.TrainQuery` lists of :func:`nanovdr_train_queries`."""
    from lab.data import nanovdr_train as T

    kw = {"root": cfg.train_dir or None, "repo": cfg.train_repo, "languages": cfg.train_languages}
    rng = np.random.default_rng(seed)

    def sample(qs, n):
        if not n or n >= len(qs):
            return list(qs)
        return [qs[i] for i in np.sort(rng.choice(len(qs), size=n, replace=False))]

    train = sample(T.balance(T.read_queries("train", **kw), cfg.per_language, seed), cfg.train_queries)
    return train, sample(T.read_queries(cfg.val_split, **kw), cfg.val_queries)


def nanovdr_train_queries(cfg, seed: int) -> tuple[list[Query], list[Query]]:
    """The paper's training queries and its validation split (:mod:`lab.data.nanovdr_train`): languages filtered
    (``train_languages``), translated languages balanced (``per_language``), then a seeded sample of
    ``train_queries`` / ``val_queries`` (0 = all), each kept in file order. Translations come with the data set
    (``cfg.languages`` adds machine translations on top only if set)."""
    records = nanovdr_train_records(cfg, seed)
    train, val = ([q.query() for q in qs] for qs in records)
    return translated(cfg, train, seed), val


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
    positives: dict[str, np.ndarray] = field(default_factory=dict)   # "train" / "val" -> [Q] hard labels, -1 none

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])


def build_index(cfg, out_dir: str | Path, *, seed: int = 0, teacher=None, cache=None,
                progress: bool = True) -> dict[str, Any]:
    """Write the index stage's outputs under ``out_dir``; return counts and timings (see module doc)."""
    from lab.retrieval.dense import EmbeddingCache
    from lab.retrieval.index import DenseIndex
    from lab.retrieval.teachers import encode_cached
    from lab.retrieval.distill import ObjectiveSettings

    out = Path(out_dir)
    cache = EmbeddingCache() if cache is None else cache
    if teacher is None:
        teacher = _teacher(cfg)
        if cfg.inference_launch == "accelerate":      # paper: every page / query encoding under `accelerate launch`
            from lab.methods.nanovdr import launched

            plan = launched.inference_plan(cfg)
            if plan.mode == "accelerate":
                teacher = launched.LaunchedTeacher(teacher, plan, cfg)
    timings: dict[str, float] = {}
    pools, page_emb, page_of = {}, {}, None
    for split, dataset, depth in (("eval", cfg.eval_dataset, cfg.eval_pool_depth),
                                  ("train", cfg.train_dataset, cfg.train_pool_depth)):
        own = split == "train" and cfg.train_source == "nanovdr_train"   # the training queries' own pages
        docs = [] if own else page_pool(cfg.data_dir, dataset, cfg.pool_first_stages, depth)
        t0 = time.perf_counter()
        if own:
            pools[split], page_of = nanovdr_train_pool(cfg, seed, out / "pages" / "nanovdr-train")
        elif cfg.render_pages:
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
    if "infonce_hard" in cfg.objectives:      # hard labels only where an objective reads them (smoke: none)
        for split, pos in hard_labels(cfg, queries, pools["train"], page_of).items():
            save_npy(out / "topk" / f"{split}_positives.npy", pos)
    dim = int(page_emb["eval"].shape[1])
    manifest = {"teacher": teacher.name, "dim": dim, "top_k": k,
                "pages": {s: len(p) for s, p in pools.items()}, "queries": {s: len(q) for s, q in queries.items()},
                "fingerprint": hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in
                                                       (*page_emb.values(), *query_emb.values()))).hexdigest()}
    if cfg.benchmarks:                  # not in the fingerprint: students do not train on them
        manifest["benchmarks"] = benchmarks
    write_json(out / "manifest.json", manifest)
    return {**manifest, "timings": timings, "cache": {"computed": dict(cache.computed), "hits": dict(cache.hits)}}


def _teacher(cfg):
    """The frozen teacher ``cfg`` names (lazy: no weights load before the first encoding)."""
    from lab.retrieval.teachers import build_teacher

    return build_teacher(cfg.teacher_kind, cfg.teacher, page_max_length=cfg.page_max_length,
                         query_max_length=cfg.query_max_length, instruction=cfg.teacher_instruction,
                         batch_size=cfg.teacher_batch_size)


def hard_labels(cfg, queries: dict[str, list[Query]], pool: Sequence[Page],
                page_of: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Ground-truth page of each training / validation query as a position in the training pool (``-1``: none).
    ``page_of`` (NanoVDR-Train: ``{qid: docid}`` of each query's own page): that page. Else the highest-graded
    judged page of the training dataset's qrels that is in the pool (ties: pool order): only the training
    dataset's queries are judged; unlabelled pool queries get -1 and leave the hard-label InfoNCE out."""
    where = {p.docid: i for i, p in enumerate(pool)}
    if page_of is not None:
        return {split: np.asarray([where.get(page_of.get(q.qid, ""), -1) for q in queries[split]], dtype=np.int64)
                for split in ("train", "val")}
    qrels = load_materialised(cfg.data_dir, cfg.train_dataset, []).qrels.judgements
    out = {}
    for split in ("train", "val"):
        pos = np.full(len(queries[split]), -1, dtype=np.int64)
        for i, q in enumerate(queries[split]):
            judged = [(-g, where[d]) for d, g in qrels.get(q.qid, {}).items() if g > 0 and d in where]
            if judged:
                pos[i] = min(judged)[1]
        out[split] = pos
    return out


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
        {s: load("topk", f"{s}_scores.npy") for s in ("train", "val")},
        {s: load("topk", f"{s}_positives.npy") for s in ("train", "val")
         if (folder / "topk" / f"{s}_positives.npy").is_file()})


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.methods.nanovdr.index encode pages|queries --cfg CFG.json --items ITEMS.jsonl --out E.npy``:
    what :class:`lab.methods.nanovdr.launched.LaunchedTeacher` starts under ``accelerate launch``. Every process
    builds the teacher on its own device and encodes its block of the items; rank 0 writes the ``[N, D]`` rows."""
    import argparse

    from lab.eval import shard
    from lab.methods.nanovdr.launched import load_cfg

    p = argparse.ArgumentParser(prog="python -m lab.methods.nanovdr.index", description=main.__doc__)
    p.add_argument("command", choices=["encode"])
    p.add_argument("kind", choices=["pages", "queries"])
    p.add_argument("--cfg", required=True)
    p.add_argument("--items", required=True, help="JSONL: {docid, text, image} per page, {text} per query")
    p.add_argument("--out", required=True)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    teacher = _teacher(load_cfg(args.cfg))
    dev = shard.device()
    if dev is not None:                # before the first encoding loads the weights
        if hasattr(teacher, "device"):
            teacher.device = str(dev)  # Qwen3-VL loads onto it
        else:
            teacher.encoder.to(dev)    # the text teacher's sentence encoder
    rows = [json.loads(line) for line in Path(args.items).read_text("utf-8").splitlines()]
    if args.kind == "pages":
        items = [Page(r["docid"], r["text"], Path(r["image"]) if r["image"] else None) for r in rows]
        emb = shard.map_array(lambda ps: teacher.encode_pages(ps, progress=args.progress), items)      # [N, D]
    else:
        emb = shard.map_array(lambda ts: teacher.encode_queries(ts, progress=args.progress),
                              [r["text"] for r in rows])                                              # [Q, D]
    if shard.is_main():
        save_npy(args.out, emb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
