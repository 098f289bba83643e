"""Attention statistics computed blockwise over queries: a full ``H x L x L`` fp32 matrix at 8k (SmolLM2: 9 query
heads) is 9 * 8192^2 * 4 B = 2.4 GB per layer, a 256-query block of rows is 75 MB.

Rows are complete (each block holds whole softmax rows over every key), so the sums are exact, not approximate.
"""

from __future__ import annotations

import torch


def expand_kv(key: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, KVH, L, D)`` -> ``(B, H, L, D)`` (GQA: each KV head serves ``H // KVH`` query heads)."""
    groups = heads // key.shape[1]
    return key if groups == 1 else key.repeat_interleave(groups, dim=1)


def attention_probs(query: torch.Tensor, key: torch.Tensor, scaling: float, positions: torch.Tensor | None = None,
                    ) -> torch.Tensor:
    """Softmax rows ``(B, H, Q, L)`` of ``query`` (B, H, Q, D) over ``key`` (B, KVH, L, D), in fp32.

    ``positions`` (Q,): each query's own position, keys after it are masked (causal); ``None`` = no mask (a
    decoding query sees every key).
    """
    k = expand_kv(key, query.shape[1]).float()                                        # (B, H, L, D)
    logits = torch.matmul(query.float(), k.transpose(-1, -2)) * scaling               # (B, H, Q, L)
    if positions is not None:
        future = torch.arange(key.shape[2], device=key.device)[None, :] > positions[:, None]   # (Q, L)
        logits = logits.masked_fill(future, float("-inf"))
    return logits.softmax(dim=-1)


def column_mass(query: torch.Tensor, key: torch.Tensor, scaling: float, rows: torch.Tensor | None = None,
                block: int = 256, per_head: bool = False) -> torch.Tensor:
    """Attention mass each key receives, summed over the query rows ``rows`` (default: all, causal) and, unless
    ``per_head``, over heads: ``(B, L)`` or ``(B, H, L)``. Query ``i`` of ``query`` (B, H, Q, D) sits at position
    ``L - Q + i``; rows are processed ``block`` at a time."""
    q_len, length = query.shape[2], key.shape[2]
    rows = torch.arange(q_len, device=query.device) if rows is None else rows.to(query.device)
    key = expand_kv(key, query.shape[1]).float()                                      # (B, H, L, D), once
    out = torch.zeros(query.shape[0], query.shape[1], length, device=query.device)   # (B, H, L)
    for start in range(0, len(rows), block):
        r = rows[start:start + block]                                                 # (b,)
        # causal: no row of this block sees a key past its last position, so those columns (all zero) are not
        # computed; over a whole prompt that halves the work (H2O's prefill statistics were ~70% of a 4k prefill)
        end = int(r.max()) + (length - q_len) + 1
        p = attention_probs(query[:, :, r], key[:, :, :end], scaling, positions=r + (length - q_len))  # (B,H,b,end)
        out[..., :end] += p.sum(dim=2)
    return out if per_head else out.sum(dim=1)
