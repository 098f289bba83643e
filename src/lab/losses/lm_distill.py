"""Next-token distillation of a causal LM from its teacher's cached top-k logits.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (arXiv 1503.02531), eq. 1-2: the student
matches the teacher's softened distribution ``p_T = softmax(z_T / tau)``; the loss is
``tau^2 * KL(p_T || p_S)``. *(our design, SpeContext's DLM)*: only the teacher's top-``k`` logits are cached
(``k`` of 49152 for SmolLM2), so ``p_T`` is the softmax over those ``k`` and the student's log-probabilities are
its full-vocabulary log-softmax read at the same ``k`` ids: with ``k = V`` this is exactly the full KL.
"""

from __future__ import annotations

import torch
from torch import Tensor


def topk_logit_kl(student_logits: Tensor, teacher_values: Tensor, teacher_ids: Tensor, temperature: float = 1.0,
                  mask: Tensor | None = None) -> Tensor:
    """Mean over positions of ``tau^2 * sum_k p_T,k (log p_T,k - log p_S,k)``.

    ``student_logits`` (N, V); ``teacher_values``/``teacher_ids`` (N, k) the teacher's top-k logits and their
    token ids; ``mask`` (N,) bool keeps positions (default all).
    """
    tau = float(temperature)
    log_s = torch.log_softmax(student_logits.float() / tau, dim=-1).gather(-1, teacher_ids)   # (N, k)
    log_t = torch.log_softmax(teacher_values.float() / tau, dim=-1)                            # (N, k)
    per = (log_t.exp() * (log_t - log_s)).sum(-1) * tau * tau                                  # (N,)
    if mask is not None:
        per = per[mask]
    return per.mean()
