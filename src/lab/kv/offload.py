"""Elastic loading *(our design of the paper's mechanism)*: the full KV stays in host memory (pinned on a CUDA
machine); a device-side buffer of ``S`` slots per layer holds the selected rows, and each step copies only the rows
that entered the set into the slots of the rows that left it (SpeContext abstract: up to 90% less transfer).
Copies go on a side CUDA stream (``non_blocking``) so they can overlap the previous layer's compute; on CPU the
same code runs synchronously, which is what the tests pin. Attention is invariant to the order of its keys (no
mask in decoding), so slots need not be sorted: :attr:`slots` maps each slot to its token.
"""

from __future__ import annotations

import torch


class ElasticKV:
    """Device buffers ``(B, KVH, S, D)`` for K and V of one layer, refilled from host tensors row by row."""

    def __init__(self, batch: int, kv_heads: int, slots: int, head_dim: int, dtype, device):
        self.device = torch.device(device)
        self.k = torch.zeros(batch, kv_heads, slots, head_dim, dtype=dtype, device=self.device)
        self.v = torch.zeros_like(self.k)
        self.slots = torch.full((batch, slots), -1, dtype=torch.long)      # token held by each slot (-1: empty)
        self.copied = 0                                                     # rows moved host -> device, total
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def load(self, host_k: torch.Tensor, host_v: torch.Tensor, selected: torch.Tensor) -> int:
        """Make the buffer hold exactly the tokens ``selected`` (B, S') with S' <= S; ``host_k``/``host_v``
        ``(B, KVH, L, D)`` in host memory. Returns the rows copied this call."""
        moved = 0
        for b in range(selected.shape[0]):
            want = selected[b].cpu()
            have = self.slots[b]
            keep = torch.isin(have, want)                                   # (S,) slots whose token stays
            new = want[~torch.isin(want, have)]                             # tokens to copy in
            free = (~keep).nonzero().flatten()[: len(new)]                  # slots to overwrite
            if len(new):
                ctx = torch.cuda.stream(self.stream) if self.stream is not None else _null()
                with ctx:
                    rows_k = host_k[b][:, new]                              # (KVH, n, D)
                    rows_v = host_v[b][:, new]
                    self.k[b][:, free.to(self.device)] = rows_k.to(self.device, non_blocking=True)
                    self.v[b][:, free.to(self.device)] = rows_v.to(self.device, non_blocking=True)
            have[free] = new
            have[(~keep).nonzero().flatten()[len(new):]] = -1               # a smaller set empties the rest
            moved += len(new)
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        self.copied += moved
        return moved

    def view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(k, v, valid)``: the buffers and a (B, S) mask of filled slots."""
        return self.k, self.v, self.slots >= 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
