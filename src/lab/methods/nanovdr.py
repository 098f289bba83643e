"""NanoVDR (Liu, Zhang & Xiao, arXiv 2603.12824): wiring of the three stages.

1. :func:`build_index`: render each pool passage as a page image, let the frozen teacher embed every
   page once (the index) and every training / validation / test query once (the targets), cached on
   disk; also the teacher's top-K pages of the *training* pool per training query (for the
   document-aware baselines).
2. :func:`distill`: train one student under one objective (:mod:`lab.losses.distill`) on query text
   only; best epoch by validation loss; saved as safetensors; resumable.
3. :func:`evaluate`: student vs teacher vs BM25 over the same test page pool (nDCG@10 / nDCG@5,
   retention = student / teacher, paired test against the teacher).

Paper profile: ``cfg.benchmarks`` (ViDoRe v1/v2/v3 sets) adds a teacher page index per set to step 1
and :func:`evaluate_benchmarks` (NDCG@5, retention as the paper defines it), in
:mod:`lab.methods.nanovdr_vidore`; with no benchmarks (smoke, tiny) nothing changes.

Data split (smoke): test = ``eval_dataset`` (DL19) queries over its page pool; training queries = the
unlabelled MS MARCO dev-subset (after a held-out validation slice) + ``train_dataset`` (DL20) queries;
the document-aware objectives see the DL20 page pool's teacher embeddings, never the test pool.
No DL19 query ever enters training (checked). ``cfg`` is the ``nanovdr`` section (NanoVDRConfig).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from lab.data.formats import read_topics, write_topics
from lab.data.pages import Page, render_pages
from lab.data.translate import augment, build_translator
from lab.data.trecdl import load_materialised, load_query_pool
from lab.paths import atomic_path, cache_dir, dumps_json, write_json
from lab.records import Query, Run

__all__ = ["IndexArtifacts", "page_pool", "split_queries", "build_index", "load_index", "distill_data",
           "distill", "evaluate", "evaluate_benchmarks", "bm25_run", "train_settings"]


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


def _write_pool(pages: Sequence[Page], path: Path, root: Path) -> None:
    lines = [json.dumps({"docid": p.docid, "text": p.text,
                         "page": p.image.relative_to(root).as_posix() if p.image else None},
                        ensure_ascii=False, sort_keys=True) + "\n" for p in pages]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def build_index(cfg, out_dir: str | Path, *, seed: int = 0, teacher=None, cache=None,
                progress: bool = True) -> dict[str, Any]:
    """Write the index stage's outputs under ``out_dir``; return counts and timings (see module doc)."""
    from lab.retrieval.dense import EmbeddingCache
    from lab.retrieval.index import DenseIndex
    from lab.retrieval.teachers import build_teacher, encode_cached
    from lab.retrieval.train import TrainSettings

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
        _write_pool(pools[split], out / "pools" / f"{split}.jsonl", out)
        _save_npy(out / "emb" / f"{split}_pages.npy", page_emb[split])
    queries = split_queries(cfg, seed)
    query_emb = {}
    for split, qs in queries.items():
        t0 = time.perf_counter()
        query_emb[split] = encode_cached(teacher, "queries", [q.text for q in qs], cache, progress=progress)
        timings[f"teacher_{split}_queries_s"] = time.perf_counter() - t0
        write_topics(qs, out / "queries" / f"{split}.tsv")
        _save_npy(out / "emb" / f"{split}_queries.npy", query_emb[split])
    if cfg.benchmarks:                  # paper profile: ViDoRe pages and queries, same teacher and cache
        from lab.methods.nanovdr_vidore import index_benchmarks

        t0 = time.perf_counter()
        benchmarks = index_benchmarks(cfg, out, teacher, cache, exclude=queries["train"] + queries["val"],
                                      progress=progress)
        timings["teacher_benchmarks_s"] = time.perf_counter() - t0
    k = TrainSettings(**_train_kwargs(cfg)).top_k_needed
    train_index = DenseIndex([p.docid for p in pools["train"]], page_emb["train"])
    for split in ("train", "val"):
        scores, pos = train_index.topk(query_emb[split], k)                    # [Q, K], [Q, K]
        _save_npy(out / "topk" / f"{split}.npy", pos.astype(np.int64))
        _save_npy(out / "topk" / f"{split}_scores.npy", scores.astype(np.float32))
    dim = int(page_emb["eval"].shape[1])
    manifest = {"teacher": teacher.name, "dim": dim, "top_k": k,
                "pages": {s: len(p) for s, p in pools.items()}, "queries": {s: len(q) for s, q in queries.items()},
                "fingerprint": hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in
                                                       (*page_emb.values(), *query_emb.values()))).hexdigest()}
    if cfg.benchmarks:                  # not in the fingerprint: students do not train on them
        manifest["benchmarks"] = benchmarks
    write_json(out / "manifest.json", manifest)
    return {**manifest, "timings": timings, "cache": {"computed": dict(cache.computed), "hits": dict(cache.hits)}}


def _train_kwargs(cfg) -> dict:
    t = cfg.train
    return {f: getattr(t, f) for f in ("epochs", "batch_size", "lr", "weight_decay", "warmup_pct", "grad_clip",
                                       "finetune_backbone", "temperature", "kl_top_k", "kl_weight", "negatives",
                                       "negative_offset", "select_by", "num_threads")}


def train_settings(cfg, objective: str, seed: int):
    from lab.retrieval.train import TrainSettings

    return TrainSettings(objective=objective, seed=seed, **_train_kwargs(cfg))


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


# -------------------------------------------------------------------------------------------- distill

def distill_data(art: IndexArtifacts):
    """Query texts + teacher targets (+ the training page pool's teacher embeddings and top-K). No page text."""
    from lab.retrieval.train import DistillData

    return DistillData(
        train_texts=[q.text for q in art.queries["train"]], train_targets=art.query_emb["train"],
        val_texts=[q.text for q in art.queries["val"]], val_targets=art.query_emb["val"],
        doc_emb=art.page_emb["train"], train_topk=art.topk["train"], train_topk_scores=art.topk_scores["train"],
        val_topk=art.topk["val"], val_topk_scores=art.topk_scores["val"])


def distill(cfg, objective: str, out_path: str | Path, *, index_dir: str | Path | None = None, seed: int = 0,
            student=None, resume: bool = True, callback: Callable[[dict], None] | None = None,
            progress: bool = True, cache="default") -> pd.DataFrame:
    """Train one student with ``objective``; save it to ``out_path`` (safetensors); return its learning curve.

    An interrupted call leaves its checkpoint under ``<LAB_CACHE>/nanovdr/resume/<key>`` (key = sha256 of
    settings, student and index fingerprint) and the next identical call resumes from it. With a frozen
    backbone the student's pooled query states come from ``cache`` (an EmbeddingCache; ``None``: computed),
    so six objectives share one backbone pass.
    """
    from lab.retrieval.dense import EmbeddingCache, Encoder, model_fingerprint
    from lab.retrieval.train import train_student

    art = load_index(index_dir or cfg.index_dir)
    settings = train_settings(cfg, objective, seed)
    student = student or Encoder.from_ref(cfg.student, out_dim=art.dim, projector_hidden=cfg.projector_hidden,
                                          max_length=cfg.student_max_length, seed=seed)
    key = hashlib.sha256(dumps_json({"settings": asdict(settings), "student": student.settings(),
                                     "index": art.manifest["fingerprint"]}).encode()).hexdigest()[:24]
    ckpt = cache_dir("nanovdr", "resume") / key
    if not resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    t0 = time.perf_counter()
    data, features = distill_data(art), None
    cache = EmbeddingCache() if cache == "default" else cache
    if not settings.finetune_backbone and cache is not None:
        features = tuple(cache.get_or_compute(
            EmbeddingCache.key(f"pooled:{model_fingerprint(student.ref)}", texts, student.instruction,
                               {"max_length": student.max_length}),
            lambda texts=texts: student.encode_pooled(texts, progress=progress, desc="student backbone"), kind="student")
            for texts in (data.train_texts, data.val_texts))
    result = train_student(student, data, settings, ckpt_dir=ckpt, callback=callback, progress=progress,
                           features=features)
    student.save(out_path, parts="all" if settings.finetune_backbone else "projector")
    shutil.rmtree(ckpt, ignore_errors=True)
    curve = pd.DataFrame(result.history).assign(objective=objective)
    curve.attrs.update(best_epoch=result.best_epoch, best_score=result.best_score, resumed_from=result.resumed_from,
                       seconds=time.perf_counter() - t0)
    return curve


# ------------------------------------------------------------------------------------------- evaluate

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
    :mod:`lab.methods.nanovdr_vidore`."""
    from lab.methods.nanovdr_vidore import evaluate_benchmarks as run

    return run(cfg, students, index_dir=index_dir or cfg.index_dir)


@dataclass
class EvalReport:
    comparison: Any                 # lab.eval.report.Comparison (baseline: teacher)
    retention: pd.DataFrame         # run, measure, mean, teacher, retention
    runs: dict[str, Run]
    encode_ms_per_query: dict[str, float]


def evaluate(cfg, students: Mapping[str, str | Path], *, index_dir: str | Path | None = None) -> EvalReport:
    """Teacher, BM25 and every student over the test page pool; paired t-test of each against the teacher."""
    from lab.eval.report import compare_runs
    from lab.retrieval.dense import Encoder
    from lab.retrieval.index import DenseIndex

    art = load_index(index_dir or cfg.index_dir)
    qrels = load_materialised(cfg.data_dir, cfg.eval_dataset, []).qrels
    queries = art.queries["eval"]
    index = DenseIndex([p.docid for p in art.pools["eval"]], art.page_emb["eval"])
    runs = {"teacher": index.search(art.query_emb["eval"], cfg.search_depth, queries=queries, name="teacher"),
            "bm25": bm25_run(art.pools["eval"], queries, cfg.search_depth)}
    ms = {}
    for name, path in students.items():
        enc = Encoder.load(path)
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
