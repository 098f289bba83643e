"""FIRST relevance feedback (Reddy et al., EMNLP 2024, arXiv 2406.15657, §5), wired from the layers.

The LLM reranker's ranking supervises the dense retriever's query vector, which then retrieves again
(:mod:`lab.retrieval.feedback` holds the refit; the official procedure is gangiswag/llm-reranker
``scripts/distill.py`` run by ``bash/run_distill.sh``). Stage ``first_feedback`` (notebook
``notebooks/first/04-first-feedback.py``) calls :func:`run_feedback` and :func:`evaluate`.

What the data here force, and how each choice stays close to the official data flow:

* **Corpus.** The union of the passages of every materialised first-stage top-100 of the evaluation set
  (DL19: six runs, 11,843 passages): the only passages with text here. The paper retrieves from the full
  MS MARCO corpus (8.8M), so our recall is recall within this pool, easier than the paper's and not comparable.
* **Dense retriever.** ``models/<encoder_role>`` (all-MiniLM-L6-v2 at smoke scale; the paper: Contriever).
* **Teacher (stage 1).** The paper distils a cross-encoder first; none is available here, so the
  ``models/<teacher_role>`` *bi-encoder* (all-mpnet-base-v2) scores the dense top ``teacher_top_k`` as
  ``teacher_scale * cosine`` instead. ``teacher_role: none`` skips the stage (the official ``ce_top_k = 0``).
* **LLM rankings (stage 2).** The official LLM reranks the dense retriever's own top-k. Ours reranked
  ``first_stage``'s top ``first.rerank.depth`` (stage first_rerank; rerunning the LLM on the dense lists
  would cost minutes per configuration). Pool ``dense_overlap`` keeps the LLM-ordered passages that are
  also in the dense top ``depth`` (every passage the official LLM ordered was a dense candidate);
  ``reranked`` keeps every LLM-ordered passage (more pairs, but passages the dense retriever did not rank).
  Since the LLM saw another retriever's candidates, configuration ``first_stage`` refits toward that
  retriever's own order of the same passages (rows ``*_fs_refit``): the control for what the LLM adds.
* **Stage-2 targets.** The official reranked run keeps the retriever's scores and re-deals them by the LLM's
  order; here, the dense retriever's scores (``q0 . p``) of each list's passages, re-dealt in the LLM's (or the
  control's) order, so the stage-2 range scaler is ~1 as there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.data.formats import read_trec_run
from lab.data.trecdl import load_materialised
from lab.methods.first.config import FirstConfig
from lab.records import Candidate, Qrels, Query, Ranking, Run

TEACHER_OFF = "none"
FIRST_STAGE_CONTROL = "first_stage"    # a feedback "configuration" that is the first stage's order, not an LLM's


@dataclass
class FeedbackData:
    dataset: str
    queries: list[Query]               # evaluated queries, in topic-file order
    qrels: Qrels
    corpus: dict[str, str]             # docid -> passage text, sorted by docid (byte-stable embeddings)


def load_data(cfg: FirstConfig, data_dir: str | Path) -> FeedbackData:
    """The first evaluation set of ``first.rerank`` and its corpus: every materialised first stage's passages."""
    name = cfg.rerank.datasets[0]
    ds = load_materialised(data_dir, name)                   # every first stage present
    qids = ds.qids[: cfg.feedback.max_queries] if cfg.feedback.max_queries else ds.qids
    texts: dict[str, str] = {}
    for fs in sorted(ds.runs):
        for ranking in ds.runs[fs]:
            for c in ranking.candidates:
                if c.text is None:
                    raise ValueError(f"{name}/{fs}: passage {c.docid} has no text (rerun the data stage)")
                texts.setdefault(c.docid, c.text)
    keep = set(qids)
    return FeedbackData(name, [q for q in ds.queries if q.qid in keep], ds.qrels.subset(qids),
                        {d: texts[d] for d in sorted(texts)})


def embed(ref: str | Path, texts: list[str], *, kind: str, max_length: int, batch_size: int, cache) -> np.ndarray:
    """``[N, D]`` embeddings of ``texts`` by the encoder at ``ref``, through ``cache`` (the model loads on a miss)."""
    from lab.retrieval.dense import EmbeddingCache, Encoder, model_fingerprint

    def compute() -> np.ndarray:
        enc = Encoder.from_ref(str(ref), max_length=max_length)
        return enc.encode(texts, batch_size=batch_size, progress=False, desc=kind)

    key = EmbeddingCache.key(model_fingerprint(str(ref)), texts, "", {"kind": kind, "max_length": max_length})
    return cache.get_or_compute(key, compute, kind=kind) if cache is not None else compute()


def teacher_scores(ref: str | Path, queries: list[Query], candidates: Run, corpus: dict[str, str], *, top_k: int,
                   scale: float, max_length: int, query_max_length: int, batch_size: int,
                   cache) -> dict[str, dict[str, float]]:
    """``{qid: {docid: scale * cos(teacher(q), teacher(p))}}`` over each query's dense top ``top_k``."""
    needed = sorted({c.docid for r in candidates for c in r.candidates[:top_k]})
    p = embed(ref, [corpus[d] for d in needed], kind="teacher_passages", max_length=max_length,
              batch_size=batch_size, cache=cache)                                   # [N, D']
    q = embed(ref, [x.text for x in queries], kind="teacher_queries", max_length=query_max_length,
              batch_size=batch_size, cache=cache)                                   # [Q, D']
    pos = {d: i for i, d in enumerate(needed)}
    out = {}
    for k, query in enumerate(queries):
        ids = [c.docid for c in candidates[query.qid].candidates[:top_k]]
        sims = p[[pos[d] for d in ids]] @ q[k]                                      # [k]
        out[query.qid] = {d: float(scale * s) for d, s in zip(ids, sims)}
    return out


def rerank_by(candidates: Run, scores: dict[str, dict[str, float]], name: str) -> Run:
    """The scored prefix of each ranking, reordered by ``scores`` (the teacher's own ranking, for reference)."""
    run = Run(name)
    for r in candidates:
        s = scores[r.query.qid]
        cands = sorted((c for c in r.candidates if c.docid in s), key=lambda c: (-s[c.docid], c.rank))
        run.add(Ranking(r.query, [Candidate(c.docid, s[c.docid], i + 1) for i, c in enumerate(cands)]))
    return run


def llm_run(runs_dir: str | Path, dataset: str, first_stage: str, config: str, depth: int,
            queries: list[Query]) -> Run:
    """first_rerank's run ``<first stage>__<config>.trec`` cut to its LLM-ordered prefix of ``depth``; config
    ``first_stage`` reads ``<first stage>.trec`` instead: the first stage's own order, the control that shows
    what the LLM adds over the candidates it was given.

    Scores become ``len - position`` (what first_rerank writes for the LLM runs): they carry the order only.
    The refit's targets are the dense retriever's own scores re-dealt in this order
    (:func:`lab.retrieval.feedback.llm_targets`, as gangiswag/llm-reranker ``RankLLM.receive_permutation`` and
    ``distill.py`` ``prepare_distill_llm`` do), so the control's targets are the same scores and only the order
    differs.
    """
    stem = first_stage if config == FIRST_STAGE_CONTROL else f"{first_stage}__{config}"
    path = Path(runs_dir) / dataset / f"{stem}.trec"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no first_rerank run (first.rerank.configs must list "
                                f"{config.replace('_', ':', 1)!r} for {first_stage!r})")
    run = read_trec_run(path, stem.replace("__", "/"), queries).subset([q.qid for q in queries])
    for r in run:
        r.candidates = [replace(c, score=float(len(r) - i), rank=i + 1) for i, c in enumerate(r.candidates)]
    return run.top(depth)


def refit_settings(cfg: FirstConfig):
    from lab.retrieval.feedback import RefitSettings

    fb = cfg.feedback
    if fb.llm_top_k > cfg.rerank.depth:
        raise ValueError(f"first.feedback.llm_top_k = {fb.llm_top_k} > first.rerank.depth = {cfg.rerank.depth}: "
                         "only the reranked prefix carries the LLM's order")
    return RefitSettings(lr=fb.lr, updates=fb.updates,
                         teacher_top_k=0 if fb.teacher_role == TEACHER_OFF else fb.teacher_top_k,
                         llm_top_k=fb.llm_top_k, llm_lr_divisor=fb.llm_lr_divisor,
                         llm_updates_divisor=fb.llm_updates_divisor, weighted=fb.weighted)


@dataclass
class FeedbackResult:
    dataset: str
    qrels: Qrels
    runs: dict[str, Run]               # row -> retrieval (or reference) run; "dense" is the baseline
    diagnostics: pd.DataFrame          # per row x query: LLM list size, agreement before / after, cos to q0
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-12)   # [Q]


def run_feedback(cfg: FirstConfig, *, data_dir: str | Path, models_dir: str | Path, runs_dir: str | Path,
                 cache="default") -> FeedbackResult:
    """Dense baseline, teacher refit, teacher + LLM refit per (configuration, pool); every refit searches again."""
    import torch

    from lab.retrieval import DenseIndex, EmbeddingCache
    from lab.retrieval.feedback import dots, pair_agreement, refit_queries

    fb, settings = cfg.feedback, refit_settings(cfg)
    cache = EmbeddingCache() if cache == "default" else cache
    data = load_data(cfg, data_dir)
    qids = [q.qid for q in data.queries]
    # read first: a missing run fails before any encoding, and the runs are in memory if first_rerank reruns
    llm_runs = {c: llm_run(runs_dir, data.dataset, fb.first_stage, c, settings.llm_top_k, data.queries)
                for c in fb.configs}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    enc = Path(models_dir) / fb.encoder_role
    docids = list(data.corpus)
    p = embed(enc, list(data.corpus.values()), kind="passages", max_length=fb.passage_max_length,
              batch_size=fb.batch_size, cache=cache)                                 # [N, D]
    q0 = embed(enc, [q.text for q in data.queries], kind="queries", max_length=fb.query_max_length,
               batch_size=fb.batch_size, cache=cache)                                # [Q, D]
    index = DenseIndex(docids, p)
    dense = index.search(q0, fb.depth, queries=data.queries, name="dense")
    seconds["encode"] = time.perf_counter() - t0
    runs, rows = {"dense": dense}, []
    teacher, q1, prefix = None, q0, "llm_refit"
    t0 = time.perf_counter()
    if settings.teacher_top_k > 0:
        teacher = teacher_scores(Path(models_dir) / fb.teacher_role, data.queries, dense, data.corpus,
                                 top_k=settings.teacher_top_k, scale=fb.teacher_scale,
                                 max_length=fb.passage_max_length, query_max_length=fb.query_max_length,
                                 batch_size=fb.batch_size, cache=cache)
        runs["teacher_rerank"] = rerank_by(dense, teacher, "teacher_rerank")
        seconds["teacher"] = time.perf_counter() - t0
        q1, _, _ = refit_queries(q0, qids, index, dense, None, teacher, settings)     # [Q, D]
        runs["teacher_refit"] = index.search(q1, fb.depth, queries=data.queries, name="teacher_refit")
        rows += [{"run": "teacher_refit", "qid": q, "llm_passages": 0, "agreement_before": np.nan,
                  "agreement_after": np.nan, "cos_to_q0": c} for q, c in zip(qids, _cos(q1, q0))]
        prefix = "teacher_llm_refit"
    t0 = time.perf_counter()
    overlap = {}
    for config in fb.configs:
        llm = llm_runs[config]
        overlap[config] = float(np.mean([len({c.docid for c in llm[q].candidates} & {c.docid for c in dense[q].candidates})
                                         if q in llm else 0 for q in qids]))
        for pool in fb.llm_pools:
            # stage 2 only depends on the stage-1 vector, so it starts from q1 (computed once above)
            # targets: the dense retriever's q0 scores in the LLM's order (official: rank.tsv's scores re-dealt)
            q2, _, lists = refit_queries(q1, qids, index, dense, llm, None, settings, retriever_q=q0,
                                         restrict_to_candidates=pool == "dense_overlap")   # [Q, D]
            name = (f"{prefix.replace('llm', 'fs')}/{fb.first_stage}/{pool}" if config == FIRST_STAGE_CONTROL
                    else f"{prefix}/{config}/{pool}")
            runs[name] = index.search(q2, fb.depth, queries=data.queries, name=name)
            before = pair_agreement(dots(torch.from_numpy(q1), lists.passages), lists.scores, lists.mask).numpy()
            after = pair_agreement(dots(torch.from_numpy(q2), lists.passages), lists.scores, lists.mask).numpy()
            rows += [{"run": name, "qid": q, "llm_passages": int(n), "agreement_before": b, "agreement_after": a,
                      "cos_to_q0": c} for q, n, b, a, c in zip(qids, lists.sizes.tolist(), before, after, _cos(q2, q0))]
    seconds["refit"] = time.perf_counter() - t0
    notes = {"corpus_passages": len(docids), "queries": len(qids), "dim": int(p.shape[1]),
             "llm_in_dense_top": overlap, "cache_hits": dict(getattr(cache, "hits", {})),
             "cache_computed": dict(getattr(cache, "computed", {}))}
    diag = pd.DataFrame(rows, columns=["run", "qid", "llm_passages", "agreement_before", "agreement_after",
                                       "cos_to_q0"])
    return FeedbackResult(data.dataset, data.qrels, runs, diag, {k: round(v, 1) for k, v in seconds.items()}, notes)


def evaluate(cfg: FirstConfig, res: FeedbackResult):
    """``(summary, per_query)``: every row against the dense baseline, paired per query (lab.eval)."""
    from lab.eval.report import compare_runs

    fb = cfg.feedback
    comp = compare_runs(res.runs, res.qrels, fb.measures, baseline="dense", test=fb.test, alpha=fb.alpha)
    summary = _against_control(comp.summary, comp.per_query, fb.test)
    return summary.assign(dataset=res.dataset), comp.per_query.assign(dataset=res.dataset)


def control_of(run: str, runs) -> str | None:
    """The no-LLM control of an LLM refit row: ``[teacher_]llm_refit/<config>/<pool>`` -> the one
    ``[teacher_]fs_refit/<stage>/<pool>``
    (the retriever's own order of the same passages), None when there is none (or more than one)."""
    head, sep, _ = run.partition("llm_refit/")        # head: "" or "teacher_" (the teacher-stage rows)
    if not sep or head not in ("", "teacher_"):
        return None
    pool = run.rsplit("/", 1)[-1]
    found = [r for r in runs if r.startswith(f"{head}fs_refit/") and r.rsplit("/", 1)[-1] == pool]
    return found[0] if len(found) == 1 else None


def _against_control(summary: pd.DataFrame, per_query: pd.DataFrame, test: str) -> pd.DataFrame:
    """Adds ``control_delta`` / ``control_p``: each LLM refit row minus its no-LLM control, paired per query. What
    the LLM's ranking adds is this difference, not the gain over dense (the control's candidates get most of it)."""
    from lab.eval.significance import paired_test

    values = {(r, m): dict(zip(g["qid"], g["value"].astype(float)))
              for (r, m), g in per_query.groupby(["run", "measure"], sort=False)}
    runs = list(dict.fromkeys(summary["run"]))
    deltas, ps = [], []
    for row in summary.itertuples():
        control = control_of(row.run, runs)
        if control is None:
            deltas.append(float("nan"))
            ps.append(float("nan"))
            continue
        t = paired_test(values[(row.run, row.measure)], values[(control, row.measure)], method=test)
        deltas.append(t.mean_diff)
        ps.append(t.pvalue)
    return summary.assign(control_delta=deltas, control_p=ps)


def nested_metrics(res: FeedbackResult, summary: pd.DataFrame) -> dict[str, Any]:
    """metrics.json: ``{dataset: {row path: {measure, measure_delta, measure_p}}}``, diagnostics, seconds."""
    out: dict[str, Any] = {}

    def node_of(run: str) -> dict:
        node = out.setdefault(res.dataset, {})
        for part in run.split("/"):
            node = node.setdefault(part, {})
        return node

    for row in summary.itertuples():
        node = node_of(row.run)
        node[row.measure] = float(row.mean)
        if row.run != "dense":
            node[f"{row.measure}_delta"] = float(row.delta)
            node[f"{row.measure}_p"] = float(row.p_value)
        if not np.isnan(row.control_p):  # LLM refit minus its no-LLM control
            node[f"{row.measure}_vs_control_delta"] = float(row.control_delta)
            node[f"{row.measure}_vs_control_p"] = float(row.control_p)
    diag = res.diagnostics.groupby("run", sort=False)[["llm_passages", "agreement_before", "agreement_after",
                                                        "cos_to_q0"]].mean()
    for name, values in diag.iterrows():
        node_of(name).update({f"refit_{k}": float(v) for k, v in values.items() if not np.isnan(v)})
    out["corpus_passages"] = res.notes["corpus_passages"]
    out["llm_in_dense_top"] = res.notes["llm_in_dense_top"]
    out["seconds"] = res.seconds
    return out
