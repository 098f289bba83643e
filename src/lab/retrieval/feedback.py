"""Relevance feedback for a dense retriever: refit each query vector on a reranker's ranking, then search again.

FIRST (Reddy et al., EMNLP 2024, arXiv 2406.15657, §5) shows that a listwise LLM reranker's ranking of the
top-k can teach the *first stage* too: the dense query vector becomes a free parameter, fit so that its
inner products with the fixed passage vectors reproduce the reranker's ordering, and the fitted vector
retrieves again from the whole index. Nothing but the query vector changes, so the passage index is reused.

Two stages, as the official code runs them (gangiswag/llm-reranker ``scripts/distill.py``, settings from
``bash/run_distill.sh``; read, not copied):

1. *teacher* (optional; ``ce_top_k = 100`` there, 0 skips it): over the retriever's top ``teacher_top_k``,
   ``KL(softmax(t) || softmax(c/2 * q P^T))`` with the teacher's scores ``t`` as log-targets (``KLDivLoss``,
   ``batchmean`` over one query = the plain sum over passages), where ``c = range(t) / range(q0 P^T)`` fixes
   the student's score range to the teacher's at the start; Adam, lr 0.005, 100 updates.
2. *LLM*: over the passages the LLM ordered, weighted RankNet of ``c'/2 * q P^T`` toward the LLM's scores
   (``--llm_loss ranknet`` in the bash script; pair weight ``1 / (r_i + r_j)``, mean over gold-ordered pairs),
   with ``c'`` recomputed from the stage-1 vector and the LLM scores; Adam with lr / 5 for updates // 5 steps.
   The "LLM's scores" are the *retriever's own scores handed out in the LLM's order* (:func:`llm_targets`), as
   the official reranked run carries them, so ``c'`` is ~1 (rank-position targets made it 33-191 at smoke scale).

Every query has its own parameters and Adam is element-wise, so a batch ``[B, D]`` fit on the *sum* of the
per-query losses is exactly ``B`` independent fits (the official loop runs queries one at a time). Losses come
from :mod:`lab.losses.ranking` (``kl_to_teacher``, ``weighted_ranknet``); lists are padded with a mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from lab.losses.ranking import kl_to_teacher, targets_from_ranks, weighted_ranknet
from lab.records import Run

__all__ = ["RefitSettings", "FeedbackLists", "RefitResult", "range_scaler", "dots", "feedback_scores", "teacher_kl",
           "llm_ranknet", "ranks_from_scores", "llm_targets", "pair_agreement", "fit_teacher", "fit_llm", "refit",
           "pack_lists", "passage_vectors", "feedback_lists", "refit_queries"]

RANGE_EPS = 1e-12      # a list whose initial scores are all equal has no range to match


@dataclass(frozen=True)
class RefitSettings:
    """Optimisation of the query vector; defaults are the official ``distill.py`` / ``run_distill.sh`` values."""

    lr: float = 0.005                  # Adam, stage 1 (teacher)
    updates: int = 100                 # stage-1 updates
    teacher_top_k: int = 100           # ce_top_k: the retriever's top-k the teacher scores; 0 = no stage 1
    llm_top_k: int = 100               # at most this many LLM-ordered passages per query
    llm_lr_divisor: float = 5.0        # stage 2: lr / 5 ...
    llm_updates_divisor: int = 5       # ... for updates // 5 steps
    weighted: bool = True              # weighted RankNet (1 / (r_i + r_j)), as the official ranknet call

    @property
    def llm_lr(self) -> float:
        return self.lr / self.llm_lr_divisor

    @property
    def llm_updates(self) -> int:
        return self.updates // self.llm_updates_divisor


@dataclass
class FeedbackLists:
    """One padded list per query: passage vectors ``[B, n, D]``, target scores ``[B, n]``, ``mask [B, n]``."""

    passages: Tensor
    scores: Tensor
    mask: Tensor

    @property
    def sizes(self) -> Tensor:
        return self.mask.sum(-1)                                           # [B]


@dataclass
class RefitResult:
    vectors: Tensor                    # [B, D] after every stage that ran
    after_teacher: Tensor              # [B, D] after stage 1 (= the input when it did not run)
    losses: dict[str, list[float]] = field(default_factory=dict)   # stage -> summed loss per update


# ------------------------------------------------------------------------------------------ pure functions
def _valid(x: Tensor, mask: Tensor | None) -> Tensor:
    return torch.ones_like(x, dtype=torch.bool) if mask is None else mask.to(torch.bool)


def _range(x: Tensor, valid: Tensor) -> Tensor:
    if x.shape[-1] == 0:
        return x.new_zeros(x.shape[:-1])                                   # [B]
    hi = x.masked_fill(~valid, float("-inf")).amax(-1)                    # [B]
    lo = x.masked_fill(~valid, float("inf")).amin(-1)                     # [B]
    return torch.where(valid.any(-1), hi - lo, torch.zeros_like(hi))      # [B]


def range_scaler(target: Tensor, init: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(max t - min t) / (max s0 - min s0)`` per list: the factor that gives the student's initial scores the
    teacher's spread, so the targets are neither far sharper nor far flatter than the prediction. Constant
    (no gradient), as in the official code; 0 for a list with no target spread."""
    valid = _valid(target, mask)                                           # [B, n]
    t = _range(target.detach().float(), valid)                             # [B]
    s = _range(init.detach().float(), valid)                               # [B]
    return t / s.clamp(min=RANGE_EPS)                                      # [B]


def dots(q: Tensor, passages: Tensor) -> Tensor:
    """``q_b . p_bn`` for every passage of each query's list: ``[B, D] x [B, n, D] -> [B, n]``."""
    return torch.einsum("bd,bnd->bn", q, passages)                         # [B, n]


def feedback_scores(q: Tensor, passages: Tensor, scaler: Tensor) -> Tensor:
    """The refit's prediction ``(c / 2) * q . p`` for every passage of each query's list."""
    return (scaler[:, None] / 2.0) * dots(q, passages)                     # [B, n]


def teacher_kl(q: Tensor, lists: FeedbackLists, scaler: Tensor) -> Tensor:
    """Stage-1 loss summed over queries: ``sum_b KL(softmax(t_b) || softmax(c_b/2 q_b P_b^T))``.

    The official ``KLDivLoss(batchmean, log_target=True)`` sees one query at a time, so its value is the
    plain per-query KL; ``kl_to_teacher`` averages over lists, hence the product with the list count.
    """
    pred = feedback_scores(q, lists.passages, scaler)                      # [B, n]
    n_lists = lists.mask.any(-1).sum()
    return kl_to_teacher(pred, lists.scores, mask=lists.mask) * n_lists


def ranks_from_scores(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """1-based ranks, best first: ``1 + #{valid j: s_j > s_i}`` (ties share a rank, so they form no pair).

    The LLM's order carries no ties (positions; retriever scores re-dealt by position), so these are the
    positions. Padding ranks last.
    """
    valid = _valid(scores, mask)                                           # [B, n]
    s = scores.detach().float()                                            # [B, n]
    above = (s[:, None, :] > s[:, :, None]) & valid[:, None, :]            # [B, n, n] j above i
    ranks = 1 + above.sum(-1)                                              # [B, n]
    return ranks.masked_fill(~valid, scores.shape[-1] + 1)                 # [B, n]


def llm_targets(retriever: Tensor, order: Tensor, mask: Tensor | None = None) -> Tensor:
    """Stage-2 targets ``[B, n]`` as the official data flow makes them: each list's *retriever* scores sorted
    descending, handed out by the LLM's order (``order``: higher = the LLM ranked it higher), so the passage the LLM
    put k-th gets the k-th largest retriever score. Padding gets 0.

    Official (gangiswag/llm-reranker): ``RankLLM.receive_permutation`` (scripts/utils/rankllm.py) moves every hit
    of a window to its new position but keeps the *position's* score (``hits[j + rank_start]["score"] =
    cut_range[j]["score"]``); the hits are rank.tsv's Contriever scores (scripts/convert_results.py), so the
    reranked run ``rerank_100_llm_FIRST_alpha.json`` is those scores in the LLM's order, and ``distill.py``
    ``prepare_distill_llm`` reads them as ``reranked_target_scores``. Their range is the retriever's own range:
    the scaler ``c' = range(q0 P^T) / range(q1 P^T)`` is exactly 1 without stage 1. Targets ``len - position``
    instead give ``c' = 19 / range(cosines)``: 33-191 (median 66) for all-MiniLM-L6-v2 on 8 DL19 queries' SPLADE++ED
    top 20 (measured): RankNet logits 33-191 times the retriever's own score gaps.
    """
    valid = _valid(order, mask)                                            # [B, n]
    ranks = ranks_from_scores(order, valid)                                # [B, n] the LLM's positions, 1 = best
    return targets_from_ranks(retriever, ranks, valid).masked_fill(~valid, 0.0)   # [B, n]


def llm_ranknet(q: Tensor, lists: FeedbackLists, scaler: Tensor, weighted: bool = True) -> Tensor:
    """Stage-2 loss summed over queries: weighted RankNet of ``c_b/2 q_b P_b^T`` toward the LLM's order."""
    pred = feedback_scores(q, lists.passages, scaler)                      # [B, n]
    ranks = ranks_from_scores(lists.scores, lists.mask)                    # [B, n]
    valid = lists.mask.to(torch.bool)                                      # [B, n]
    has_pair = ((ranks[:, :, None] < ranks[:, None, :]) & valid[:, :, None] & valid[:, None, :]).any((1, 2))  # [B]
    return weighted_ranknet(pred, ranks, lists.mask, weighted=weighted) * has_pair.sum()


def pair_agreement(scores: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of the target-ordered pairs (``t_i > t_j``) that ``scores`` order the same way, per list
    (NaN for a list without pairs): how far the refit vector agrees with the ranking it was fit to."""
    valid = _valid(target, mask)                                           # [B, n]
    both = valid[:, :, None] & valid[:, None, :]                           # [B, n, n]
    t, s = target.detach().float(), scores.detach().float()                # [B, n]
    pairs = (t[:, :, None] > t[:, None, :]) & both                         # [B, n, n] i above j in the target
    right = pairs & (s[:, :, None] > s[:, None, :])                        # [B, n, n]
    n = pairs.sum((1, 2)).float()                                          # [B]
    return torch.where(n > 0, right.sum((1, 2)).float() / n.clamp(min=1), torch.full_like(n, float("nan")))


def _adam(q0: Tensor, loss_fn, lr: float, updates: int) -> tuple[Tensor, list[float]]:
    q = torch.nn.Parameter(q0.detach().clone().float())                    # [B, D]
    opt = torch.optim.Adam([q], lr=lr)
    losses = []
    for _ in range(updates):
        opt.zero_grad()
        loss = loss_fn(q)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return q.detach(), losses


def fit_teacher(q0: Tensor, lists: FeedbackLists, lr: float, updates: int) -> tuple[Tensor, list[float]]:
    """Stage 1: ``updates`` Adam steps on :func:`teacher_kl`, scaler from ``q0``; returns ``([B, D], losses)``."""
    scaler = range_scaler(lists.scores, dots(q0.float(), lists.passages), lists.mask)        # [B]
    return _adam(q0, lambda q: teacher_kl(q, lists, scaler), lr, updates)


def fit_llm(q1: Tensor, lists: FeedbackLists, lr: float, updates: int,
            weighted: bool = True) -> tuple[Tensor, list[float]]:
    """Stage 2: Adam steps on :func:`llm_ranknet`, scaler recomputed from ``q1`` (the stage-1 vector)."""
    scaler = range_scaler(lists.scores, dots(q1.float(), lists.passages), lists.mask)        # [B]
    return _adam(q1, lambda q: llm_ranknet(q, lists, scaler, weighted), lr, updates)


def refit(q0: Tensor, teacher: FeedbackLists | None, llm: FeedbackLists | None,
          settings: RefitSettings = RefitSettings()) -> RefitResult:
    """Stage 1 when ``teacher`` is given (and ``teacher_top_k > 0``), then stage 2 when ``llm`` is given."""
    q, losses = q0.detach().float(), {}
    if teacher is not None and settings.teacher_top_k > 0 and settings.updates > 0:
        q, losses["teacher"] = fit_teacher(q, teacher, settings.lr, settings.updates)
    after_teacher = q
    if llm is not None and settings.llm_updates > 0:
        q, losses["llm"] = fit_llm(q, llm, settings.llm_lr, settings.llm_updates, settings.weighted)
    return RefitResult(q, after_teacher, losses)


# ------------------------------------------------------------------------------------------------ driver
def passage_vectors(index, docids: Sequence[str], positions: Mapping[str, int] | None = None) -> np.ndarray:
    """The stored ``[n, D]`` vectors of ``docids`` in a :class:`~lab.retrieval.index.DenseIndex` (exact copies:
    ``IndexFlatIP`` keeps the raw floats), so the refit sees the vectors the search scores against."""
    positions = positions if positions is not None else {d: i for i, d in enumerate(index.docids)}
    if not docids:
        return np.zeros((0, index.dim), np.float32)
    return np.stack([index.index.reconstruct(positions[d]) for d in docids]).astype(np.float32)   # [n, D]


def pack_lists(index, docids: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> FeedbackLists:
    """Per-query (docids, target scores) -> padded :class:`FeedbackLists` with the index's passage vectors."""
    positions = {d: i for i, d in enumerate(index.docids)}
    n = max((len(d) for d in docids), default=0)
    b = len(docids)
    passages = torch.zeros(b, n, index.dim)                                # [B, n, D]
    target = torch.zeros(b, n)                                             # [B, n]
    mask = torch.zeros(b, n, dtype=torch.bool)                             # [B, n]
    for i, (ids, sc) in enumerate(zip(docids, scores)):
        if len(ids) != len(sc):
            raise ValueError(f"list {i}: {len(ids)} docids but {len(sc)} scores")
        if ids:
            passages[i, : len(ids)] = torch.from_numpy(passage_vectors(index, ids, positions))
            target[i, : len(ids)] = torch.tensor([float(s) for s in sc])
            mask[i, : len(ids)] = True
    return FeedbackLists(passages, target, mask)


def feedback_lists(qids: Sequence[str], candidates: Run, llm_run: Run | None,
                   teacher_scores: Mapping[str, Mapping[str, float]] | None, settings: RefitSettings, *,
                   restrict_to_candidates: bool = False) -> tuple[list[tuple[list[str], list[float]]] | None,
                                                                  list[tuple[list[str], list[float]]] | None]:
    """Which passages each stage fits to, per query, as ``(docids, scores)``.

    Stage 1: the candidates' top ``teacher_top_k`` (the retriever's own list, as the official code) with the
    teacher's scores. Stage 2: the LLM run's first ``llm_top_k`` passages (its reranked prefix) with the run's
    scores (its order; :func:`refit_queries` turns them into :func:`llm_targets`); with ``restrict_to_candidates``
    only those also among ``candidates`` (the official code's LLM reranked the retriever's own top-k, so every
    LLM-ordered passage was a candidate).
    """
    teacher = None
    if teacher_scores is not None and settings.teacher_top_k > 0:
        teacher = []
        for q in qids:
            ids = [c.docid for c in candidates[q].candidates[: settings.teacher_top_k]] if q in candidates else []
            missing = [d for d in ids if d not in teacher_scores.get(q, {})]
            if missing:
                raise KeyError(f"query {q}: no teacher score for {len(missing)} candidates, e.g. {missing[0]}")
            teacher.append((ids, [teacher_scores[q][d] for d in ids]))
    llm = None
    if llm_run is not None:
        llm = []
        for q in qids:
            cands = llm_run[q].candidates[: settings.llm_top_k] if q in llm_run else []
            if restrict_to_candidates:
                pool = {c.docid for c in candidates[q].candidates} if q in candidates else set()
                cands = [c for c in cands if c.docid in pool]
            llm.append(([c.docid for c in cands], [c.score for c in cands]))
    return teacher, llm


def refit_queries(q_emb: np.ndarray, qids: Sequence[str], index, candidates: Run, llm_run: Run | None,
                  teacher_scores: Mapping[str, Mapping[str, float]] | None = None,
                  settings: RefitSettings = RefitSettings(), *, restrict_to_candidates: bool = False,
                  retriever_q: np.ndarray | None = None,
                  ) -> tuple[np.ndarray, RefitResult, FeedbackLists | None]:
    """Refit ``q_emb [Q, D]`` (rows in ``qids`` order) on the teacher scores and/or the LLM's reranked run.

    The LLM run gives the *order* only: its passages' targets are the retriever's scores ``retriever_q . p``
    re-dealt in that order (:func:`llm_targets`, the official data flow); ``retriever_q [Q, D]`` is the
    retriever's own query vectors (default ``q_emb``; pass the original vectors when ``q_emb`` is a stage-1 refit).

    Returns the refit vectors ``[Q, D]`` (search them with ``index.search``), the :class:`RefitResult` and the
    stage-2 lists with those targets (for :func:`pair_agreement` before / after). A query without an LLM list
    keeps its vector.
    """
    if len(qids) != len(q_emb):
        raise ValueError(f"{len(qids)} qids but {len(q_emb)} query vectors")
    retriever_q = q_emb if retriever_q is None else retriever_q
    if retriever_q.shape != q_emb.shape:
        raise ValueError(f"retriever_q {retriever_q.shape} != q_emb {q_emb.shape}")
    teacher, llm = feedback_lists(qids, candidates, llm_run, teacher_scores, settings,
                                  restrict_to_candidates=restrict_to_candidates)
    t_lists = pack_lists(index, *zip(*teacher)) if teacher else None
    l_lists = pack_lists(index, *zip(*llm)) if llm else None
    if l_lists is not None:
        q_r = torch.from_numpy(np.ascontiguousarray(retriever_q, dtype=np.float32))    # [Q, D]
        l_lists = FeedbackLists(l_lists.passages, llm_targets(dots(q_r, l_lists.passages), l_lists.scores,
                                                              l_lists.mask), l_lists.mask)
    q0 = torch.from_numpy(np.ascontiguousarray(q_emb, dtype=np.float32))  # [Q, D]
    result = refit(q0, t_lists, l_lists, settings)
    return result.vectors.numpy().astype(np.float32), result, l_lists   # [Q, D]
