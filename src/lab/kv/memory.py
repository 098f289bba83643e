"""SpeContext's memory model *(our design: the paper names a memory model placing KV on GPU or CPU as the sequence
grows; only the abstract is available, so the rule here is ours)*: a pure function of sizes, no torch.

Bytes of full KV: ``layers * 2 (K and V) * kv_heads * head_dim * dtype_bytes * tokens * batch``. The selected
working set on the GPU is ``budget`` tokens per sequence (double-buffered for the asynchronous prefetch:
``prefetch_buffers``). The full KV stays on the GPU while weights + full KV + workspace fit in
``gpu_bytes * headroom``; beyond that it moves to (pinned) CPU memory and only the selected rows live on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    tokens: int
    kv_bytes: int               # full KV of the batch
    selected_bytes: int         # the GPU working set of the selected rows (all buffers)
    gpu_bytes: int              # what the GPU holds under this placement (weights + KV or working set + DLM)
    cpu_bytes: int              # what lives in CPU memory (0 when the full KV stays on the GPU)
    kv_on_gpu: bool


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int = 2) -> int:
    """Bytes one token's K and V take across all layers."""
    return layers * 2 * kv_heads * head_dim * dtype_bytes


def place(tokens: int, *, batch: int, layers: int, kv_heads: int, head_dim: int, dtype_bytes: int,
          weight_bytes: int, dlm_bytes: int, budget: int, gpu_bytes: int, headroom: float = 0.9,
          workspace_bytes: int = 0, prefetch_buffers: int = 2) -> Placement:
    """Where the KV of ``batch`` sequences of ``tokens`` goes (see the module docstring for the rule)."""
    if min(tokens, batch, layers, kv_heads, head_dim, dtype_bytes, budget) < 1:
        raise ValueError("tokens, batch, layers, kv_heads, head_dim, dtype_bytes and budget must be >= 1")
    per_token = kv_bytes_per_token(layers, kv_heads, head_dim, dtype_bytes)
    kv = per_token * tokens * batch
    selected = per_token * min(budget, tokens) * batch * prefetch_buffers
    resident = weight_bytes + dlm_bytes + workspace_bytes
    if resident + kv <= headroom * gpu_bytes:
        return Placement(tokens, kv, selected, resident + kv, 0, True)
    return Placement(tokens, kv, selected, resident + selected, kv, False)


def crossover_tokens(**kwargs) -> int:
    """The first sequence length (doubling search then bisection) at which :func:`place` moves KV to the CPU;
    0 if it never fits (weights alone exceed the GPU)."""
    if not place(1, **kwargs).kv_on_gpu:
        return 0
    lo, hi = 1, 2
    while place(hi, **kwargs).kv_on_gpu:
        lo, hi = hi, hi * 2
        if hi > 1 << 40:
            raise ValueError("KV never leaves the GPU: check the sizes")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if place(mid, **kwargs).kv_on_gpu else (lo, mid)
    return hi


def transfer_bytes(changed_tokens: int, *, layers: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Host-to-device bytes of one step under elastic loading: only the rows that changed."""
    return changed_tokens * kv_bytes_per_token(layers, kv_heads, head_dim, dtype_bytes)
