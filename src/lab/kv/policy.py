"""The selection policy shared by every scored selector: sinks + recent window + top-(B - sinks - window).

*(our design)* SpeContext (arXiv 2512.00722) only says the retrieval head scores the context and the selected KV
serves every layer; the scaffold of ``sinks`` attention-sink tokens (StreamingLLM, Xiao et al., ICLR 2024, §3.2:
4 sinks) and a ``window`` of the most recent tokens is ours, applied to every scored method alike so that methods
differ only in the middle part. All three are parameters (``specontext.selection``).
"""

from __future__ import annotations

import torch


def compose(scores: torch.Tensor | None, length: int, budget: int, sinks: int = 4, window: int = 64) -> torch.Tensor:
    """Sorted key indices ``(B, S)`` with ``S = min(budget, length)``.

    ``scores`` ``(B, length)`` rank the middle tokens ``[sinks, length - window)``; ``None`` (StreamingLLM) keeps
    only sinks and the window (``S = min(sinks + window, length)``). ``length <= budget`` keeps every entry, which
    is what makes a budget at least the context reproduce full KV exactly.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    batch = 1 if scores is None else scores.shape[0]
    device = None if scores is None else scores.device
    if length <= budget:
        return torch.arange(length, device=device).expand(batch, length)            # (B, L)
    sinks = min(sinks, budget)
    window = min(window, budget - sinks)
    fixed = torch.cat([torch.arange(sinks), torch.arange(length - window, length)]).to(device)   # (s + w,)
    rest = budget - sinks - window
    if scores is None or rest == 0:
        return fixed.expand(batch, -1).sort(dim=-1).values
    middle = scores[:, sinks:length - window]                                         # (B, L - s - w)
    top = middle.topk(min(rest, middle.shape[1]), dim=-1).indices + sinks             # (B, rest)
    return torch.cat([fixed.expand(batch, -1), top], dim=-1).sort(dim=-1).values      # (B, S)


def _member(members: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``(B, Q)``: whether each index of ``queries`` (B, Q) is among ``members`` (B, M), through a (B, L) mask.
    An all-pairs comparison is (B, Q, M): 67M booleans per layer and step for a dense layer at 8k (GemFilter's and
    Quest's full layers), which made those methods ~5x slower per step than the rest of the smoke eval."""
    length = int(max(members.max(), queries.max())) + 1 if members.numel() and queries.numel() else 1
    mask = torch.zeros(members.shape[0], length, dtype=torch.bool, device=members.device)     # (B, L)
    mask.scatter_(1, members, True)
    return mask.gather(1, queries)                                                    # (B, Q)


def changed_fraction(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Per row, the fraction of ``current`` (B, S) not in ``previous`` (B, S'): what elastic loading copies."""
    hit = _member(previous, current)                                                  # (B, S)
    return 1.0 - hit.float().mean(-1)                                                 # (B,)


def set_recall(selected: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``|selected ∩ reference| / |reference|`` per row (indices ``(B, S)`` and ``(B, R)``)."""
    hit = _member(selected, reference)                                                # (B, R)
    return hit.float().mean(-1)                                                       # (B,)
