"""Distillation pieces: a frozen teacher's query embeddings into a student :class:`~lab.retrieval.dense.Encoder`.

What :func:`lab.train.fit` needs from this layer: the six objectives of the smoke comparison, the paper profile's
(alignment, ranking-KL) sweep points ``align<α>_kl<β>`` and hard-label InfoNCE (``infonce_hard``) over a batch of
student vectors (:func:`objective_loss`), the batches (:func:`batches` / :func:`collator`: frozen-backbone
features or tokenised query text), and the validation metrics the best epoch is chosen by (:func:`validate`).

The student sees **only query text**: every text that reaches :meth:`Encoder.tokenize` comes from
``DistillData.train_texts`` / ``val_texts``. Documents enter the document-aware objectives only as the
teacher's precomputed page *embeddings* (``doc_emb``) and the teacher's top-K page ids per query.

``features`` (frozen backbone): the student's pooled backbone states computed once, so the trainer optimises
the projector alone on them (a smoke-budget setting: one student forward pass per query instead of one per epoch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lab.losses import distill as L
from lab.retrieval.dense import Encoder

__all__ = ["ObjectiveSettings", "DistillData", "objective_loss", "collator", "student_vectors", "loss_fn", "validate",
           "DOC_OBJECTIVES", "PAPER_SWEEP", "sweep_name", "sweep_weights", "needs_pages", "paper_objectives"]

DOC_OBJECTIVES = ("infonce", "listwise_kl", "margin_mse", "cosine_kl")   # need teacher page embeddings
# The paper profile's table (issue 10): (alignment weight, ranking-KL weight) sweep + InfoNCE on hard labels
# (ground-truth pages). Smoke keeps its six-objective comparison (lab.losses.distill.OBJECTIVES).
PAPER_SWEEP = ((1.0, 0.0), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0), (0.0, 1.0))
HARD_INFONCE = "infonce_hard"
_SWEEP = re.compile(r"^align(?P<a>\d+(?:\.\d+)?)_kl(?P<b>\d+(?:\.\d+)?)$")


def sweep_name(align_weight: float, kl_weight: float) -> str:
    """``(1, 0.5)`` -> ``"align1_kl0.5"``: a sweep point as an objective name (params, file names, MLflow tags)."""
    return f"align{align_weight:g}_kl{kl_weight:g}"


def sweep_weights(name: str) -> tuple[float, float] | None:
    """``"align0.5_kl1"`` -> ``(0.5, 1.0)``; ``None`` for any other objective name."""
    m = _SWEEP.match(name)
    return (float(m["a"]), float(m["b"])) if m else None


def paper_objectives() -> tuple[str, ...]:
    return (*(sweep_name(a, b) for a, b in PAPER_SWEEP), HARD_INFONCE)


def needs_pages(name: str) -> bool:
    """The objective reads teacher page embeddings (and top-K lists / hard labels)."""
    w = sweep_weights(name)
    return name in DOC_OBJECTIVES or name == HARD_INFONCE or (w is not None and w[1] > 0)


@dataclass(frozen=True)
class ObjectiveSettings:
    objective: str = "cosine"
    temperature: float = 0.05     # InfoNCE / KL softmax temperature
    kl_top_k: int = 16            # teacher top-K pages the listwise KL runs over
    kl_weight: float = 1.0        # λ of cosine + λ·KL
    negatives: int = 4            # teacher-mined negatives per query (InfoNCE, Margin-MSE)
    negative_offset: int = 3      # negatives are teacher ranks offset+1 .. offset+negatives (1-based)

    def __post_init__(self):
        if self.objective not in L.OBJECTIVES and self.objective != HARD_INFONCE:
            w = sweep_weights(self.objective)
            if w is None or w == (0.0, 0.0):
                raise ValueError(f"unknown objective {self.objective!r}; known: {L.OBJECTIVES}, {HARD_INFONCE!r} "
                                 f"and sweep points 'align<α>_kl<β>' (e.g. {sweep_name(*PAPER_SWEEP[1])!r})")

    @property
    def top_k_needed(self) -> int:
        return max(self.kl_top_k, self.negative_offset + self.negatives, 1)


@dataclass
class DistillData:
    train_texts: list[str]
    train_targets: np.ndarray                  # [N, D] teacher query embeddings
    val_texts: list[str]
    val_targets: np.ndarray                    # [V, D]
    doc_emb: np.ndarray | None = None          # [M, D] teacher page embeddings (training page pool)
    train_topk: np.ndarray | None = None       # [N, K] teacher's top-K page positions in doc_emb
    train_topk_scores: np.ndarray | None = None   # [N, K] teacher scores of those pages
    val_topk: np.ndarray | None = None         # [V, K]
    val_topk_scores: np.ndarray | None = None  # [V, K]
    train_positives: np.ndarray | None = None  # [N] ground-truth page position in doc_emb, -1 = none (hard labels)
    val_positives: np.ndarray | None = None    # [V]


def _split(data: DistillData, split: str):
    if split == "train":
        return data.train_targets, data.train_topk, data.train_topk_scores
    return data.val_targets, data.val_topk, data.val_topk_scores


def _hard_infonce(s: Tensor, idx: Tensor, data: DistillData, split: str, top: Tensor, docs: Tensor,
                  cfg: ObjectiveSettings) -> Tensor:
    """InfoNCE with the ground-truth page as positive (hard labels), in-batch positives and the teacher-mined
    negatives as negatives (a mined page equal to the positive is masked); queries without one are left out."""
    positives = data.train_positives if split == "train" else data.val_positives
    if positives is None:
        raise ValueError(f"objective {HARD_INFONCE!r} needs ground-truth pages (index positives)")
    pos = torch.from_numpy(positives[idx.numpy()]).long().to(s.device)        # [B]
    keep = pos >= 0                                                            # [B]
    if not bool(keep.any()):
        return (s * 0.0).sum()                                                 # no labelled query in the batch
    lo, hi = cfg.negative_offset, cfg.negative_offset + cfg.negatives
    neg_ids = top[keep, lo:hi]                                                 # [b, M]
    return L.infonce(s[keep], docs[pos[keep]], docs[neg_ids], temperature=cfg.temperature, pos_ids=pos[keep],
                     neg_ids=neg_ids)


def objective_loss(s: Tensor, idx: Tensor, data: DistillData, split: str, cfg: ObjectiveSettings) -> Tensor:
    """Loss of student vectors ``s`` [B, D] for queries ``idx`` [B] of ``split`` under ``cfg.objective``."""
    targets, topk, tscores = _split(data, split)
    idx, dev = idx.cpu(), s.device
    t = torch.from_numpy(targets[idx.numpy()]).to(dev, s.dtype)                # [B, D]
    name = cfg.objective
    if name == "cosine":
        return L.cosine_alignment(s, t)
    if name == "mse":
        return L.mse_alignment(s, t)
    weights = sweep_weights(name)
    if weights is not None and weights[1] == 0:                                # pure alignment: no pages
        return L.alignment_kl(s, t, None, None, align_weight=weights[0], kl_weight=0.0)
    if data.doc_emb is None or topk is None or tscores is None:
        raise ValueError(f"objective {name!r} needs teacher page embeddings and top-K lists")
    docs = torch.from_numpy(data.doc_emb).to(dev, s.dtype)                     # [M, D]
    top = torch.from_numpy(topk[idx.numpy()]).long().to(dev)                   # [B, K]
    tsc = torch.from_numpy(tscores[idx.numpy()]).float().to(dev)               # [B, K]
    if weights is not None:
        k = cfg.kl_top_k
        s_scores = torch.einsum("bd,bkd->bk", s, docs[top[:, :k]])             # [B, k]
        return L.alignment_kl(s, t, s_scores, tsc[:, :k], align_weight=weights[0], kl_weight=weights[1],
                              temperature=cfg.temperature)
    if name == HARD_INFONCE:
        return _hard_infonce(s, idx, data, split, top, docs, cfg)
    if name in ("listwise_kl", "cosine_kl"):
        k = cfg.kl_top_k
        s_scores = torch.einsum("bd,bkd->bk", s, docs[top[:, :k]])             # [B, k]
        if name == "listwise_kl":
            return L.listwise_kl(s_scores, tsc[:, :k], temperature=cfg.temperature)
        return L.cosine_plus_kl(s, t, s_scores, tsc[:, :k], weight=cfg.kl_weight, temperature=cfg.temperature)
    lo, hi = cfg.negative_offset, cfg.negative_offset + cfg.negatives
    pos, neg = docs[top[:, 0]], docs[top[:, lo:hi]]                            # [B, D], [B, M, D]
    if name == "infonce":
        return L.infonce(s, pos, neg, temperature=cfg.temperature, pos_ids=top[:, 0], neg_ids=top[:, lo:hi])
    if name == "margin_mse":
        s_pos = (s * pos).sum(-1)                                              # [B]
        s_neg = torch.einsum("bd,bmd->bm", s, neg)                             # [B, M]
        return L.margin_mse(s_pos, s_neg, tsc[:, 0], tsc[:, lo:hi])
    raise ValueError(f"unknown objective {name!r}")


def collator(encoder: Encoder, texts: Sequence[str], features: Tensor | None) -> Callable[[Sequence[int]], dict]:
    """Batch of query positions -> ``{"idx", "features"}`` (frozen backbone) or ``{"idx", input_ids, ...}``."""

    def collate(idx: Sequence[int]) -> dict[str, Tensor]:
        pos = torch.tensor(list(idx), dtype=torch.long)                        # [B]
        if features is not None:
            return {"idx": pos, "features": features[pos]}                     # [B], [B, H]
        return {"idx": pos, **{k: v.cpu() for k, v in encoder.tokenize([texts[i] for i in pos.tolist()]).items()}}

    return collate


def student_vectors(model, encoder: Encoder, batch: dict[str, Tensor]) -> Tensor:
    """Student query vectors ``[B, D]``: ``model`` is the trainer's module (the projector when the backbone is
    frozen, the whole encoder otherwise), called through its forward so DDP sees it."""
    if "features" in batch:
        x = model(batch["features"])                                           # [B, D]
        return F.normalize(x, dim=-1) if encoder.normalize else x
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])   # [B, D]


def loss_fn(encoder: Encoder, data: DistillData, cfg: ObjectiveSettings) -> Callable:
    """``loss_fn(model, batch)`` of :func:`lab.train.fit` for ``cfg.objective`` on the training split."""

    def loss(model, batch):
        return objective_loss(student_vectors(model, encoder, batch), batch["idx"], data, "train", cfg)

    return loss


@torch.no_grad()
def validate(model, encoder: Encoder, data: DistillData, cfg: ObjectiveSettings, features: Tensor | None = None,
             batch_size: int = 64) -> dict[str, float]:
    """Mean validation loss (fixed batches, in order) and mean cosine to the teacher."""
    collate = collator(encoder, data.val_texts, features)
    device = next(model.parameters()).device
    total, cos_total, n = 0.0, 0.0, len(data.val_texts)
    for start in range(0, n, batch_size):
        batch = {k: v.to(device) for k, v in collate(range(start, min(start + batch_size, n))).items()}
        s = student_vectors(model, encoder, batch).float()                     # [b, D]
        total += float(objective_loss(s, batch["idx"], data, "val", cfg)) * len(batch["idx"])
        t = torch.from_numpy(data.val_targets[start:start + len(batch["idx"])]).to(s.device)
        cos_total += float((1.0 - L.cosine_alignment(s, t)) * len(batch["idx"]))
    return {"val_loss": total / max(n, 1), "val_cosine": cos_total / max(n, 1)}
