"""Random K/V standing in for a prefill, for decode-speed measurements (bench/specontext_throughput.py and
bench/device_check.py): decoding speed depends on shapes, not on what the KV holds, and an 8k x 8 prefill of
SmolLM2 takes minutes on 2 cores (a 32k x 4 prefill of an 8B model most of a device check's budget)."""

from __future__ import annotations

import torch


def random_cache(config, batch: int, length: int, layers: int, dtype, device, kind: str = "dynamic", extra: int = 0):
    """A transformers cache holding ``length`` random K/V rows in each of ``layers`` layers. ``kind``: ``dynamic``
    (``DynamicCache``), ``growing`` (the retrieval head's: :func:`lab.kv.retrieval_head.growing_cache`),
    ``offloaded`` (``DynamicCache(offloading=True)``: CUDA only in transformers 5.24) or
    ``static`` (``StaticCache`` with room for ``extra`` more tokens). Rows are drawn on the CPU from seed 0 (the
    same numbers on every device) unless ``device`` is CUDA, where they are drawn there (32k x 32 layers of an 8B
    model would be 16 GiB through the host)."""
    from transformers import DynamicCache, StaticCache

    from lab.kv.retrieval_head import growing_cache

    d = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache = (DynamicCache(config=config) if kind == "dynamic" else growing_cache(config) if kind == "growing" else
             DynamicCache(config=config, offloading=True) if kind == "offloaded" else
             StaticCache(config=config, max_cache_len=length + extra))
    on = torch.device(device)
    g = torch.Generator(device=on if on.type == "cuda" else "cpu").manual_seed(0)
    for layer in range(layers):
        k = torch.randn(batch, config.num_key_value_heads, length, d, generator=g,
                        device=on if on.type == "cuda" else "cpu").to(on, dtype)
        cache.update(k, k.clone(), layer)
    return cache


def head_with_context(head, batch: int, length: int, dtype, device):
    """``head`` (a :class:`lab.kv.retrieval_head.RetrievalHead`) as if it had run over ``length`` tokens."""
    head.reset()
    if head.top:
        head.cache = random_cache(head.config, batch, length, head.top, dtype, device, "growing")
    for name in head.q:
        head.key_buffers[name] = torch.randn(batch, length, head.head_dim).to(device, dtype)   # full: grows next step
    head.length = length
    return head
