"""Ranking and language-modelling losses for listwise LLM rerankers (pure tensor functions).

Conventions: ``scores[B, n]`` are model scores (higher = more relevant; for FIRST the first-identifier
logits); ``ranks[B, n]`` are 1-based gold ranks (1 = best; ties allowed: tied items form no pair);
``mask[B, n]`` marks real items (False = padding). Every per-list loss is averaged over the lists that
have at least one pair / item and returns a zero that keeps the graph when none does (the official
FIRST trainer skips a NaN ranking loss instead).

Normalisation follows the official FIRST trainer (gangiswag/llm-reranker, scripts/train_ranking.py +
scripts/utils/loss.py): RankNet is ``BCEWithLogitsLoss(weight=w)`` with the default mean reduction, i.e.
the *mean over the n(n-1)/2 ordered pairs* of ``w_ij * log(1 + exp(-(s_i - s_j)))`` (weights are not
renormalised), then the mean over the batch; the LM loss is the token-level mean over all non-ignored
target tokens of the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def _valid(scores: Tensor, mask: Tensor | None) -> Tensor:
    return torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.to(torch.bool)


def _zero(x: Tensor) -> Tensor:
    return x.sum() * 0.0


def weighted_ranknet(scores: Tensor, ranks: Tensor, mask: Tensor | None = None, weighted: bool = True,
                     pair_mask: Tensor | None = None) -> Tensor:
    """Weighted RankNet of FIRST (Reddy et al., EMNLP 2024, arXiv 2406.15657, §3 "L_Rank").

    ``L_rank = mean_{(i,j): r_i < r_j} w_ij * log(1 + exp(-(s_i - s_j)))``, ``w_ij = 1 / (r_i + r_j)``
    (``weighted=False``: ``w_ij = 1``, plain RankNet of Burges et al., ICML 2005, cross-entropy cost with
    target probability 1). The mean runs over the gold-ordered pairs of each list, then over lists.

    ``pair_mask[B, n, n]`` (optional) keeps only the pairs ``(i, j)`` where it is True: with gold labels that tie
    (``label_i == label_j``), the ranks still break the tie for the weights, but the pair is dropped - the official
    ``rank_net`` (scripts/utils/loss.py) keeps only ``y_true_i - y_true_j > 0`` while its weights come from the
    sorted positions.
    """
    s = scores.float().masked_fill(~_valid(scores, mask), 0.0)             # [B, n]
    valid = _valid(scores, mask)                                           # [B, n]
    r = ranks.to(s.dtype)                                                  # [B, n]
    pair = (r[:, :, None] < r[:, None, :]) & valid[:, :, None] & valid[:, None, :]   # [B, n, n] i above j
    if pair_mask is not None:
        pair = pair & pair_mask.to(torch.bool)                             # [B, n, n]
    diff = s[:, :, None] - s[:, None, :]                                   # [B, n, n] s_i - s_j
    w = 1.0 / (r[:, :, None] + r[:, None, :]) if weighted else torch.ones_like(diff)  # [B, n, n]
    terms = torch.where(pair, w * F.softplus(-diff), torch.zeros_like(diff))          # [B, n, n]
    n_pairs = pair.sum(dim=(1, 2))                                         # [B]
    has = n_pairs > 0                                                      # [B]
    if not bool(has.any()):
        return _zero(s)
    per_list = terms.sum(dim=(1, 2)) / n_pairs.clamp(min=1)                # [B]
    return per_list[has].mean()


def targets_from_ranks(scores: Tensor, ranks: Tensor, mask: Tensor | None = None) -> Tensor:
    """Target scores for a rank-supervised listwise loss, as the official FIRST trainer builds them.

    The model's own scores, sorted descending, re-assigned so that the item of gold rank k gets the k-th
    largest score (``true_scores = gather(sort(s, desc), rank - 1)``). Detached here (the official code
    lets gradients flow through this target too). Padding gets ``-inf``.
    """
    valid = _valid(scores, mask)                                           # [B, n]
    s = scores.detach().float().masked_fill(~valid, float("-inf"))         # [B, n]
    sorted_desc = s.sort(dim=-1, descending=True).values                   # [B, n]
    idx = (ranks.long() - 1).clamp(0, s.shape[-1] - 1).masked_fill(~valid, 0)  # [B, n]
    return sorted_desc.gather(-1, idx).masked_fill(~valid, float("-inf"))  # [B, n]


def listnet(
    scores: Tensor, target: Tensor | None = None, *, ranks: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    """ListNet with top-one probabilities (Cao et al., ICML 2007, §4: P_s(j) = softmax, cross entropy).

    ``L = mean_lists( -sum_j softmax(target)_j * log softmax(scores)_j )``. Give ``target`` scores, or
    gold ``ranks`` (then :func:`targets_from_ranks`, the official FIRST ListNet target). FIRST's trainer
    adds it with weight 0.1.
    """
    if (target is None) == (ranks is None):
        raise ValueError("listnet: give exactly one of target= or ranks=")
    valid = _valid(scores, mask)                                           # [B, n]
    if target is None:
        target = targets_from_ranks(scores, ranks, mask)                   # [B, n]
    s = scores.float().masked_fill(~valid, float("-inf"))                  # [B, n]
    t = target.float().masked_fill(~valid, float("-inf"))                  # [B, n]
    p_t = torch.softmax(t, dim=-1)                                         # [B, n]
    log_p_s = torch.log_softmax(s, dim=-1)                                 # [B, n]
    ce = -torch.where(valid, p_t * log_p_s, torch.zeros_like(s)).sum(-1)   # [B]
    has = valid.any(-1)                                                    # [B]
    return ce[has].mean() if bool(has.any()) else _zero(s)


def lambdarank(
    scores: Tensor, relevance: Tensor, mask: Tensor | None = None, sigma: float = 1.0, k: int | None = None,
) -> Tensor:
    """LambdaRank as the NDCG-Loss2 scheme of LambdaLoss (Wang et al., CIKM 2018, §4, "NDCG-Loss2").

    Items are placed at their *predicted* positions p (sorted by ``scores``); for every pair with
    ``rel_p > rel_q`` (both within the top ``k`` predicted positions when ``k`` is given):
    ``l_pq = -delta_pq * |G_p - G_q| * log2 sigmoid(sigma * (s_p - s_q))`` with
    ``G = (2^rel - 1) / maxDCG`` and ``delta_pq = |1/log2(1+|p-q|) - 1/log2(2+|p-q|)|``;
    mean over the pairs of each list, then over lists. Same scheme, sigma, base-2 log and mean
    reduction as the official FIRST ``lambdarank`` (added there with weight 1).
    """
    valid = _valid(scores, mask)                                           # [B, n]
    n = scores.shape[-1]
    s = scores.float().masked_fill(~valid, torch.finfo(torch.float32).min)  # [B, n] padding sorts last
    rel = relevance.float().clamp(min=0).masked_fill(~valid, 0.0)          # [B, n]
    s_sorted, order = s.sort(dim=-1, descending=True, stable=True)         # [B, n]
    rel_p = rel.gather(-1, order)                                          # [B, n] relevance at predicted pos
    valid_p = valid.gather(-1, order)                                      # [B, n]
    pos = torch.arange(1, n + 1, device=s.device, dtype=s.dtype)           # [n]
    disc = torch.log2(1.0 + pos)                                           # [n]
    ideal = rel.sort(dim=-1, descending=True).values                       # [B, n]
    max_dcg = ((2.0 ** ideal - 1.0) / disc)[:, :k].sum(-1).clamp(min=1e-10)  # [B]
    gain = (2.0 ** rel_p - 1.0) / max_dcg[:, None]                         # [B, n]
    dist = (pos[:, None] - pos[None, :]).abs()                             # [n, n] |p - q|
    delta = (1.0 / torch.log2(1.0 + dist) - 1.0 / torch.log2(2.0 + dist)).abs()  # [n, n]
    delta = delta.masked_fill(dist == 0, 0.0)                              # [n, n]
    weight = delta[None] * (gain[:, :, None] - gain[:, None, :]).abs()      # [B, n, n]
    pair = (rel_p[:, :, None] > rel_p[:, None, :]) & valid_p[:, :, None] & valid_p[:, None, :]  # [B, n, n]
    if k is not None:
        top = pos <= k                                                     # [n]
        pair = pair & top[None, :, None] & top[None, None, :]
    diff = (s_sorted[:, :, None] - s_sorted[:, None, :]).clamp(-1e8, 1e8)  # [B, n, n]
    terms = -weight * F.logsigmoid(sigma * diff) / math.log(2.0)           # [B, n, n]
    terms = torch.where(pair, terms, torch.zeros_like(terms))              # [B, n, n]
    n_pairs = pair.sum(dim=(1, 2))                                         # [B]
    has = n_pairs > 0
    if not bool(has.any()):
        return _zero(s_sorted)
    return (terms.sum(dim=(1, 2)) / n_pairs.clamp(min=1))[has].mean()


def lm_nll(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Causal-LM token NLL (FIRST's L_LM, Reddy et al. 2024 §3; standard next-token cross entropy).

    ``logits[B, L, V]`` at position t predict ``labels[B, t+1]`` (shifted here); positions labelled
    ``ignore_index`` (prompt, padding) are skipped; the mean runs over all remaining tokens of the batch.
    """
    shift_logits = logits[:, :-1, :]                                       # [B, L-1, V]
    shift_labels = labels[:, 1:]                                           # [B, L-1]
    active = shift_labels != ignore_index                                  # [B, L-1]
    n_active = int(active.sum())
    if n_active == 0:
        return _zero(logits.float())
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]).float(),          # [B*(L-1), V]
        shift_labels.reshape(-1), ignore_index=ignore_index, reduction="sum",
    )
    return total / n_active


def first_loss(lm: Tensor, rank: Tensor, lam: float = 10.0) -> Tensor:
    """FIRST's joint objective ``L_joint = L_LM + lambda * L_rank`` (Reddy et al. 2024 §3; lambda = 10)."""
    return lm + lam * rank


def kl_to_teacher(
    student_scores: Tensor, teacher_scores: Tensor, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` per list, mean over lists.

    Knowledge distillation with temperature (Hinton et al., 2015, §2: softened softmax, gradients scaled
    by T^2); the list-level KL used for reranker -> retriever relevance feedback in FIRST (Reddy et al.
    2024, §5). The teacher is detached.
    """
    valid = _valid(student_scores, mask)                                   # [B, n]
    log_ps = torch.log_softmax(
        student_scores.float().masked_fill(~valid, float("-inf")) / temperature, dim=-1)   # [B, n]
    log_pt = torch.log_softmax(
        teacher_scores.detach().float().masked_fill(~valid, float("-inf")) / temperature, dim=-1)  # [B, n]
    kl = torch.where(valid, log_pt.exp() * (log_pt - log_ps), torch.zeros_like(log_ps)).sum(-1)  # [B]
    has = valid.any(-1)
    return (kl[has].mean() if bool(has.any()) else _zero(log_ps)) * temperature**2
