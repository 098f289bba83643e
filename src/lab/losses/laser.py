"""LaSER's training objective (Jin et al., SIGIR 2026, arXiv 2603.01425; code ignorejjj/LaSER ``modeling/laser.py``).

``L = L_cl(latent) + w_e L_cl(explicit) + w_kl KL(p_E || p_L) + w_mid L_mid`` with the code's weights
``w_e = 1, w_kl = 10, w_mid = 0.1`` (paper §3, the overall objective; its equation numbers were not checked here,
except Eq. 11, the trajectory sampling, see :mod:`lab.retrieval.latent`).

Shapes: ``B`` queries, ``N`` in-batch documents (``G = N / B`` per query, the positive first: one positive + one
hard negative in the paper, so ``G = 2``), ``K`` thinking steps, ``D`` width. Every loss is a batch mean (0-d).
Vectors are used as given (the encoders L2-normalise), except :func:`trajectory_kl`, which normalises its states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["in_batch_infonce", "score_kl", "trajectory_kl", "laser_objective"]


def _wide(x: Tensor) -> Tensor:
    """Half-precision scores go to fp32 (bf16 softmax at τ = 0.02 loses the ranking signal); wider stays."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def in_batch_infonce(q: Tensor, docs: Tensor, temperature: float = 0.02) -> Tensor:
    """InfoNCE over all in-batch documents: ``-mean_i log softmax_j(<q_i, d_j> / τ)[i*G]`` (code: ``q_d_loss`` and,
    on the explicit vectors, ``loss_teacher``; τ = 0.02). q (B, D); docs (N, D), query i's positive at ``i*G``."""
    b, n = q.shape[0], docs.shape[0]
    if n % b:
        raise ValueError(f"{n} documents for {b} queries: expected a whole group per query")
    scores = q @ docs.T / temperature                                    # (B, N)
    target = torch.arange(b, device=q.device) * (n // b)                 # (B,)
    return F.cross_entropy(_wide(scores), target)


def score_kl(student: Tensor, teacher: Tensor, temperature: float = 0.02) -> Tensor:
    """``KL(softmax(t/τ) || softmax(s/τ))`` summed over documents, averaged over rows (``batchmean``); the teacher
    side is detached (code ``compute_kl_loss(scores, teacher_scores.detach(), τ)``). student, teacher (R, N)."""
    logp = F.log_softmax(_wide(student) / temperature, dim=-1)          # (R, N)
    target = F.softmax(_wide(teacher.detach()) / temperature, dim=-1)   # (R, N)
    return F.kl_div(logp, target, reduction="batchmean")


def trajectory_kl(latent_states: Tensor, explicit_states: Tensor, docs: Tensor, temperature: float = 0.05) -> Tensor:
    """Process alignment L_mid: :func:`score_kl` over the ``B*K`` rows of step-wise scores, latent state j vs explicit
    segment state j, both L2-normalised, scored against the latent document vectors (not detached). τ = 0.05 in the
    code (``latent_temperature``); the paper writes 0.02. latent/explicit states (B, K, D); docs (N, D)."""
    d = latent_states.shape[-1]
    s = F.normalize(latent_states.reshape(-1, d), p=2, dim=-1) @ docs.T      # (B*K, N)
    t = F.normalize(explicit_states.reshape(-1, d), p=2, dim=-1) @ docs.T    # (B*K, N)
    return score_kl(s, t, temperature)


def laser_objective(q_latent: Tensor, docs: Tensor, *, q_explicit: Tensor | None = None,
                    latent_states: Tensor | None = None, explicit_states: Tensor | None = None,
                    temperature: float = 0.02, mid_temperature: float = 0.05, w_latent: float = 1.0,
                    w_explicit: float = 1.0, w_kl: float = 10.0, w_mid: float = 0.1) -> dict[str, Tensor]:
    """The weighted sum and its parts ``{"loss", "cl_latent", "cl_explicit", "kl", "mid"}``.

    A part whose weight is 0 (or whose inputs are missing: no explicit view) is not computed and reported as 0, so
    every Table-5 ablation is a choice of weights. q_latent, q_explicit (B, D); docs (N, D); states (B, K, D).
    """
    zero = q_latent.new_zeros(())
    parts = {"cl_latent": in_batch_infonce(q_latent, docs, temperature) if w_latent else zero}
    explicit = q_explicit is not None
    parts["cl_explicit"] = in_batch_infonce(q_explicit, docs, temperature) if explicit and w_explicit else zero
    parts["kl"] = score_kl(q_latent @ docs.T, q_explicit @ docs.T, temperature) if explicit and w_kl else zero
    mid = explicit and w_mid and latent_states is not None and explicit_states is not None
    parts["mid"] = trajectory_kl(latent_states, explicit_states, docs, mid_temperature) if mid else zero
    loss = (w_latent * parts["cl_latent"] + w_explicit * parts["cl_explicit"] + w_kl * parts["kl"]
            + w_mid * parts["mid"])
    return {"loss": loss, **parts}
