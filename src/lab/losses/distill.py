"""Embedding-distillation objectives compared in NanoVDR (Liu, Zhang & Xiao, arXiv 2603.12824).

NanoVDR trains a text-only query encoder ``f`` to reproduce a frozen VLM retriever's query embedding
``T(q)``; the teacher's page index ``{d_j}`` is reused unchanged, so a student query is scored by
``<f(q), d_j>``. The paper compares six objectives at equal budget and finds plain pointwise cosine
alignment best; the other five are the baselines reproduced here. The paper's equations are written
out in each docstring (its equation numbers are not cited: they were not checked against the PDF).

Shapes: ``B`` queries, ``D`` embedding width, ``K`` candidate documents per query.
Conventions: every function returns the batch mean (a 0-d tensor); inputs are used as given except
where a docstring says it L2-normalises (the student's forward already L2-normalises). Teacher inputs
are treated as constants (detached).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_alignment", "mse_alignment", "infonce", "listwise_kl", "margin_mse", "cosine_plus_kl",
           "alignment_kl", "OBJECTIVES"]

OBJECTIVES = ("cosine", "mse", "infonce", "listwise_kl", "margin_mse", "cosine_kl")


def cosine_alignment(student: Tensor, teacher: Tensor) -> Tensor:
    """Pointwise cosine alignment, NanoVDR's objective: ``L = 1 - mean_i cos(f(q_i), T(q_i))``.

    Both sides are L2-normalised here, so ``L`` lies in [0, 2] and is 0 exactly when every student
    vector points where its teacher vector does. No documents, negatives or labels enter.
    student, teacher: [B, D].
    """
    s = F.normalize(student.float(), dim=-1)                 # [B, D]
    t = F.normalize(teacher.detach().float(), dim=-1)        # [B, D]
    return 1.0 - (s * t).sum(dim=-1).mean()


def mse_alignment(student: Tensor, teacher: Tensor) -> Tensor:
    """Embedding regression: ``L = mean_{i,k} (f(q_i)_k - T(q_i)_k)^2`` (element-wise MSE).

    On vectors as given (no normalisation). With both sides unit-norm this equals
    ``2 (1 - cos) / D`` per query: the cosine objective rescaled by ``2/D``, which Adam's
    per-parameter normalisation largely undoes; differences then come from gradient clipping and
    weight decay acting at a different scale. student, teacher: [B, D].
    """
    return F.mse_loss(student.float(), teacher.detach().float())


def infonce(student: Tensor, positives: Tensor, negatives: Tensor | None = None, *,
            temperature: float = 0.05, pos_ids: Tensor | None = None, neg_ids: Tensor | None = None) -> Tensor:
    """Contrastive InfoNCE against teacher document embeddings (the paper's contrastive baseline).

    ``L = -mean_i log( exp(s_ii/τ) / (sum_j exp(s_ij/τ) + sum_m exp(n_im/τ)) )`` with
    ``s_ij = <f(q_i), p_j>`` over the batch's pseudo-positives ``p_j`` (the teacher's top-1 page for
    query j: in-batch negatives for i != j) and ``n_im = <f(q_i), n_im>`` over query i's own
    teacher-mined negatives. With ``pos_ids`` ([B] document ids) an in-batch ``p_j`` that *is* query
    i's positive (j != i) is masked out; with ``neg_ids`` ([B, M]) so is a mined negative equal to it
    (neither is a negative). student: [B, D]; positives: [B, D]; negatives: [B, M, D] or None.
    """
    q = student.float()                                              # [B, D]
    p = positives.detach().float()                                   # [B, D]
    logits = q @ p.T / temperature                                   # [B, B]
    if pos_ids is not None:
        same = pos_ids[:, None] == pos_ids[None, :]                  # [B, B]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    if negatives is not None and negatives.shape[1] > 0:
        n = negatives.detach().float()                               # [B, M, D]
        neg_logits = torch.einsum("bd,bmd->bm", q, n) / temperature  # [B, M]
        if pos_ids is not None and neg_ids is not None:
            neg_logits = neg_logits.masked_fill(neg_ids == pos_ids[:, None], float("-inf"))
        logits = torch.cat([logits, neg_logits], dim=1)              # [B, B + M]
    target = torch.arange(q.shape[0], device=q.device)               # [B]
    return F.cross_entropy(logits, target)


def listwise_kl(student_scores: Tensor, teacher_scores: Tensor, *, temperature: float = 0.05,
                teacher_temperature: float | None = None) -> Tensor:
    """Listwise distillation over the teacher's top-K pages: ``KL(P_T || P_S)`` averaged over queries.

    ``P_T = softmax(t_i / τ_T)``, ``P_S = softmax(s_i / τ)`` over the same K pages of query i, where
    ``t_ik = <T(q_i), d_k>`` and ``s_ik = <f(q_i), d_k>``; ``L = mean_i sum_k P_T,ik log(P_T,ik / P_S,ik)``.
    student_scores, teacher_scores: [B, K].
    """
    tau_t = temperature if teacher_temperature is None else teacher_temperature
    log_ps = F.log_softmax(student_scores.float() / temperature, dim=-1)        # [B, K]
    log_pt = F.log_softmax(teacher_scores.detach().float() / tau_t, dim=-1)     # [B, K]
    return F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")


def margin_mse(student_pos: Tensor, student_neg: Tensor, teacher_pos: Tensor, teacher_neg: Tensor) -> Tensor:
    """Margin-MSE (Hofstätter et al., arXiv 2010.02666) on teacher pseudo-pairs.

    ``L = mean_{i,m} ((s_i^+ - s_im^-) - (t_i^+ - t_im^-))^2``: the student reproduces the teacher's
    score *margin* between query i's teacher top-1 page and each mined negative m.
    student_pos, teacher_pos: [B]; student_neg, teacher_neg: [B, M] (or [B]).
    """
    s_margin = student_pos.float()[:, None] - student_neg.float().reshape(student_neg.shape[0], -1)    # [B, M]
    t_margin = (teacher_pos.detach().float()[:, None]
                - teacher_neg.detach().float().reshape(teacher_neg.shape[0], -1))                    # [B, M]
    return F.mse_loss(s_margin, t_margin)


def cosine_plus_kl(student: Tensor, teacher: Tensor, student_scores: Tensor, teacher_scores: Tensor, *,
                   weight: float = 1.0, temperature: float = 0.05) -> Tensor:
    """The paper's combined objective: ``L = L_cos + λ · L_KL`` (pointwise alignment plus listwise KL).

    student, teacher: [B, D]; student_scores, teacher_scores: [B, K]; ``weight`` is λ.
    """
    return cosine_alignment(student, teacher) + weight * listwise_kl(
        student_scores, teacher_scores, temperature=temperature)


def alignment_kl(student: Tensor, teacher: Tensor, student_scores: Tensor | None, teacher_scores: Tensor | None, *,
                 align_weight: float, kl_weight: float, temperature: float = 0.05) -> Tensor:
    """The paper's objective sweep: ``L = α · L_cos + β · L_KL`` over (α, β) ∈ {(1,0), (1,0.5), (1,1), (0.5,1), (0,1)}
    (NanoVDR's loss-ablation table: pure alignment, alignment plus ranking KL, pure ranking KL).

    A term whose weight is 0 is not computed, so (1, 0) is :func:`cosine_alignment` and needs no page scores, and
    (0, 1) is :func:`listwise_kl`. student, teacher: [B, D]; student_scores, teacher_scores: [B, K] or None.
    """
    if align_weight < 0 or kl_weight < 0 or align_weight == kl_weight == 0:
        raise ValueError(f"alignment_kl: weights ({align_weight}, {kl_weight}) must be >= 0, not both 0")
    loss = student.new_zeros((), dtype=torch.float32)
    if align_weight:
        loss = loss + align_weight * cosine_alignment(student, teacher)
    if kl_weight:
        if student_scores is None or teacher_scores is None:
            raise ValueError("alignment_kl: kl_weight > 0 needs student and teacher page scores")
        loss = loss + kl_weight * listwise_kl(student_scores, teacher_scores, temperature=temperature)
    return loss
