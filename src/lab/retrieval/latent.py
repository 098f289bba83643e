"""LaSER's two views of one causal-LM retriever (Jin et al., SIGIR 2026, arXiv 2603.01425; code ignorejjj/LaSER).

* **Latent view** (:func:`latent_encode`, train and inference, queries and documents): ``h_0`` is the last-layer
  state at the last prompt position; for ``j = 1..K-1`` a *soft token* ``t_j = softmax(W_lm h_{j-1})^T E`` (full
  vocabulary, temperature 1, not detached) is appended and run through the KV cache; the vector is
  ``L2norm(mean(h_0..h_{K-1}))``. ``K = 1`` is the plain last-token state (a single-pass retriever).
* **Explicit view** (:func:`explicit_encode`, training only): the wrapped query followed by the reasoning, then the
  EOS *embedding*; the vector is the L2-normalised last state; the reasoning's states give the trajectory.
* **Trajectory** (:func:`segment_ends`, :func:`trajectory_indices`): segment ends are the ``"\\n\\n"`` positions in
  the reasoning plus its last token; K of the M segments are taken by ``linspace(0, M-1, K)`` (the code) or
  ``floor(iM/K)`` (the paper's Eq. 11), and with ``M < K`` the last is repeated.

Shapes: ``B`` texts, ``T`` tokens, ``D`` hidden width, ``V`` vocabulary, ``K`` thinking steps.
Positions: left padding with ``position_ids = cumsum(mask) - 1``, so a padded row gets exactly the positions it
would get alone (the official code passes none; RoPE being relative, that only costs float round-off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LatentOutput", "ExplicitOutput", "soft_token", "latent_encode", "explicit_encode", "segment_ends",
           "trajectory_indices", "trajectory_states", "soft_entropy"]


@dataclass
class LatentOutput:
    vector: Tensor          # (B, D) L2-normalised mean of the K states
    states: Tensor          # (B, K, D) last-layer states h_0..h_{K-1} (not normalised)
    entropy: Tensor         # (B, K-1) entropy (nats) of each soft token's distribution


@dataclass
class ExplicitOutput:
    vector: Tensor          # (B, D) L2-normalised state at the appended EOS embedding
    hidden: Tensor          # (B, T, D) last-layer states of the input tokens (EOS position excluded)


def _base(model):
    """The module inside a ``DistributedDataParallel`` wrapper (the Trainer wraps the model under ``accelerate
    launch``): forwards go through the wrapper (its gradient sync), the embedding table is read from the module."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _embeddings(model) -> Tensor:
    return _base(model).get_input_embeddings().weight                   # (V, D)


def soft_token(logits: Tensor, embeddings: Tensor) -> Tensor:
    """``softmax(logits)^T E``: the expected input embedding under the next-token distribution (temperature 1).

    logits (B, V), embeddings (V, D) -> (B, D). Not detached: gradients flow through the soft token (code).
    """
    probs = torch.softmax(logits.float(), dim=-1).to(embeddings.dtype)   # (B, V)
    return probs @ embeddings                                            # (B, D)


def soft_entropy(logits: Tensor) -> Tensor:
    """Entropy in nats of ``softmax(logits)``; logits (B, V) -> (B,)."""
    logp = torch.log_softmax(logits.float(), dim=-1)                     # (B, V)
    return -(logp.exp() * logp).sum(-1)


def _positions(mask: Tensor) -> Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)                     # (B, T)


def _forward(model, embeds: Tensor, mask: Tensor, positions: Tensor, cache=None):
    """One forward; returns (last-layer states (B, T, D), logits of the last position (B, V), cache)."""
    # transformers 5.24 names the KV cache `cache` (`past_key_values` is deprecated)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache,
                use_cache=True, output_hidden_states=True, logits_to_keep=1, return_dict=True)
    return out.hidden_states[-1], out.logits[:, -1], out.cache


def latent_encode(model, input_ids: Tensor, attention_mask: Tensor, k: int, *, use_cache: bool = True
                  ) -> LatentOutput:
    """The latent view of left-padded ``input_ids`` (B, T) with ``k >= 1`` thinking steps.

    ``use_cache=False`` recomputes the whole sequence (prompt + soft tokens so far) at every step: the reference
    the KV-cache loop must equal (tests/unit/retrieval/test_latent.py).
    """
    if k < 1:
        raise ValueError(f"k (thinking steps) must be >= 1, got {k}")
    if attention_mask[:, -1].min() < 1:
        raise ValueError("latent_encode needs left padding (a row's last position is padding)")
    E = _embeddings(model)                                               # (V, D)
    embeds = _base(model).get_input_embeddings()(input_ids)              # (B, T, D)
    mask = attention_mask.long()                                         # (B, T)
    pos = _positions(mask)                                               # (B, T)
    hidden, logits, cache = _forward(model, embeds, mask, pos)
    states, entropies = [hidden[:, -1]], []                              # [(B, D)]
    for _ in range(1, k):
        t = soft_token(logits, E)[:, None]                               # (B, 1, D)
        entropies.append(soft_entropy(logits))                           # (B,)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)     # (B, T+j)
        nxt = pos[:, -1:] + 1                                            # (B, 1)
        pos = torch.cat([pos, nxt], 1)                                   # (B, T+j)
        if use_cache:
            hidden, logits, cache = _forward(model, t, mask, nxt, cache)
        else:
            embeds = torch.cat([embeds, t], 1)                           # (B, T+j, D)
            hidden, logits, _ = _forward(model, embeds, mask, pos)
        states.append(hidden[:, -1])
    stacked = torch.stack(states, 1)                                     # (B, K, D)
    ent = torch.stack(entropies, 1) if entropies else stacked.new_zeros(stacked.shape[0], 0)   # (B, K-1)
    return LatentOutput(F.normalize(stacked.mean(1), p=2, dim=-1), stacked, ent)


def explicit_encode(model, input_ids: Tensor, attention_mask: Tensor, eos_token_id: int) -> ExplicitOutput:
    """The explicit view: left-padded wrapped query + reasoning (B, T), then the EOS token's *embedding* appended
    (code: ``encode_teacher``); the vector is the L2-normalised last state."""
    emb = _base(model).get_input_embeddings()
    embeds = emb(input_ids)                                              # (B, T, D)
    eos = emb.weight[eos_token_id].view(1, 1, -1).expand(embeds.shape[0], 1, -1)   # (B, 1, D)
    embeds = torch.cat([embeds, eos], 1)                                 # (B, T+1, D)
    mask = torch.cat([attention_mask.long(), attention_mask.new_ones(embeds.shape[0], 1).long()], 1)
    hidden, _, _ = _forward(model, embeds, mask, _positions(mask))       # (B, T+1, D)
    return ExplicitOutput(F.normalize(hidden[:, -1], p=2, dim=-1), hidden[:, :-1])


# ------------------------------------------------------------------------------------------- trajectory
def segment_ends(token_ids: Sequence[int], token_texts: Sequence[str] | None = None, *,
                 newline_id: int | None = None, rule: Literal["token", "text"] = "token") -> list[int]:
    """Positions (0-based, within the reasoning tokens) that end a reasoning segment, plus the last token.

    ``rule="token"`` (code): every position holding ``newline_id`` (``tokenizer.encode("\\n\\n")[-1]``).
    ``rule="text"``: every token whose text completes a blank line (``"\\n\\n"`` in it, or a ``"\\n"``-ending
    token after one that ends in ``"\\n"``). They agree for Qwen3, whose pre-tokenizer keeps ``"\\n\\n"`` whole;
    SmolLM2's splits ``"a.\\n\\nB"`` into ``"\\n", "\\n"`` (ids 198, 198), so the code's id 1116 is never seen.
    """
    n = len(token_ids)
    if n == 0:
        return []
    if rule == "token":
        if newline_id is None:
            raise ValueError("rule 'token' needs newline_id")
        ends = [i for i, t in enumerate(token_ids) if t == newline_id]
    elif rule == "text":
        if token_texts is None or len(token_texts) != n:
            raise ValueError("rule 'text' needs one text per token")
        ends = [i for i, s in enumerate(token_texts)
                if "\n\n" in s or (s.endswith("\n") and i > 0 and token_texts[i - 1].endswith("\n")
                                   and "\n\n" not in token_texts[i - 1])]
    else:
        raise ValueError(f"segment rule {rule!r}: expected 'token' or 'text'")
    if not ends or ends[-1] != n - 1:
        ends.append(n - 1)
    return ends


def trajectory_indices(m: int, k: int, mode: Literal["linspace", "floor"] = "linspace") -> list[int]:
    """Which of ``m`` segments align with the ``k`` latent steps (0-based).

    ``linspace`` (code): ``torch.linspace(0, m-1, k).long()``. ``floor`` (paper Eq. 11): segment ``floor(i*m/k)``
    for ``i = 1..k``, 1-based, i.e. index ``floor(i*m/k) - 1``. With ``m < k`` both give ``0..m-1`` and then repeat
    the last segment (code).
    """
    if m < 1 or k < 1:
        raise ValueError(f"need m >= 1 segments and k >= 1 steps, got m={m}, k={k}")
    if m < k:
        return list(range(m)) + [m - 1] * (k - m)
    if mode == "linspace":
        return torch.linspace(0, m - 1, k).long().tolist()
    if mode == "floor":
        return [(i * m) // k - 1 for i in range(1, k + 1)]
    raise ValueError(f"trajectory mode {mode!r}: expected 'linspace' or 'floor'")


def trajectory_states(hidden: Tensor, starts: Sequence[int], ends: Sequence[Sequence[int]], k: int,
                      mode: Literal["linspace", "floor"] = "linspace") -> Tensor:
    """The explicit view's K aligned states: ``hidden`` (B, T, D) at ``starts[b] + ends[b][idx]``, idx from
    :func:`trajectory_indices`. ``starts[b]``: first reasoning position of row b in the padded sequence."""
    rows = []
    for b, (s, e) in enumerate(zip(starts, ends)):
        pos = [s + e[i] for i in trajectory_indices(len(e), k, mode)]   # K positions
        rows.append(hidden[b, pos])                                      # (K, D)
    return torch.stack(rows)                                             # (B, K, D)
