"""Distillation pieces: a frozen teacher's query embeddings into a student :class:`~lab.retrieval.dense.Encoder`.

What :func:`lab.train.fit` needs from this layer: the six objectives of NanoVDR's comparison over a batch of
student vectors (:func:`objective_loss`), the batches (:func:`batches` / :func:`collator`: frozen-backbone
features or tokenised query text), and the validation metrics the best epoch is chosen by (:func:`validate`).

The student sees **only query text**: every text that reaches :meth:`Encoder.tokenize` comes from
``DistillData.train_texts`` / ``val_texts``. Documents enter the document-aware objectives only as the
teacher's precomputed page *embeddings* (``doc_emb``) and the teacher's top-K page ids per query.

``features`` (frozen backbone): the student's pooled backbone states computed once, so the trainer optimises
the projector alone on them (a smoke-budget setting: one student forward pass per query instead of one per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lab.losses import distill as L
from lab.retrieval.dense import Encoder

__all__ = ["ObjectiveSettings", "DistillData", "objective_loss", "collator", "student_vectors", "loss_fn", "validate",
           "DOC_OBJECTIVES"]

DOC_OBJECTIVES = ("infonce", "listwise_kl", "margin_mse", "cosine_kl")   # need teacher page embeddings


@dataclass(frozen=True)
class ObjectiveSettings:
    objective: str = "cosine"
    temperature: float = 0.05     # InfoNCE / KL softmax temperature
    kl_top_k: int = 16            # teacher top-K pages the listwise KL runs over
    kl_weight: float = 1.0        # λ of cosine + λ·KL
    negatives: int = 4            # teacher-mined negatives per query (InfoNCE, Margin-MSE)
    negative_offset: int = 3      # negatives are teacher ranks offset+1 .. offset+negatives (1-based)

    def __post_init__(self):
        if self.objective not in L.OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; known: {L.OBJECTIVES}")

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


def _split(data: DistillData, split: str):
    if split == "train":
        return data.train_targets, data.train_topk, data.train_topk_scores
    return data.val_targets, data.val_topk, data.val_topk_scores


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
    if data.doc_emb is None or topk is None or tscores is None:
        raise ValueError(f"objective {name!r} needs teacher page embeddings and top-K lists")
    docs = torch.from_numpy(data.doc_emb).to(dev, s.dtype)                     # [M, D]
    top = torch.from_numpy(topk[idx.numpy()]).long().to(dev)                   # [B, K]
    tsc = torch.from_numpy(tscores[idx.numpy()]).float().to(dev)               # [B, K]
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
