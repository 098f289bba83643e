"""SpeContext's section of bench/device_check.py (kept apart for size): decode tokens/s and peak memory of full KV,
SpeContext with elastic loading, SpeContext with the full KV in pinned host memory and HF's offloaded cache, on
random-init Llama-3.1-8B-shaped target + Llama-3.2-1B-shaped DLM at 32k context (see device_check's docstring).
Imports only torch, transformers and lab (lab.kv), like the rest of the device check."""

from __future__ import annotations

import time

# Llama-3.1-8B / Llama-3.2-1B (their config.json on the Hub; random-init here, nothing downloaded)
LLAMA31_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072,
                  rms_norm_eps=1e-5)
LLAMA32_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                  intermediate_size=8192, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072,
                  rms_norm_eps=1e-5, tie_word_embeddings=True)


def section_specontext(torch, device, s) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from lab.kv import memory, offload, selective
    from lab.kv.retrieval_head import HeadSelector, RetrievalHead
    from lab.kv.synthetic import head_with_context, random_cache

    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    ctx, batch, budget, steps = s["spec_context"], s["spec_batch"], s["spec_budget"], s["spec_steps"]
    old_default = torch.get_default_dtype()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    try:                                    # initialise in the run dtype on the device: no fp32 copy of 8B weights
        torch.set_default_dtype(dtype)
        with torch.device(device):
            target = LlamaForCausalLM(LlamaConfig(**s["llama8b"], attn_implementation="sdpa")).eval()
            dlm = LlamaForCausalLM(LlamaConfig(**s["llama1b"], attn_implementation="sdpa")).eval()
    finally:
        torch.set_default_dtype(old_default)
    built = time.perf_counter() - t0
    head = RetrievalHead(dlm, [(2, 0), (2, 3)]).to(device).eval()        # layer 2 of the DLM: body of 2 layers
    del dlm
    c = target.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    row_bytes = memory.kv_bytes_per_token(1, c.num_key_value_heads, head_dim, dtype.itemsize)
    head_bytes = sum(p.numel() * p.element_size() for p in head.parameters())
    total = torch.cuda.get_device_properties(device).total_memory if cuda else 141 * 2**30   # dry: an H200's
    place = offload.placement(target, ctx + steps + 2, batch, budget, dlm_bytes=head_bytes, gpu_bytes=total)
    out = {"target_params_b": round(sum(p.numel() for p in target.parameters()) / 1e9, 2),
           "head_params_m": round(head_bytes / dtype.itemsize / 1e6, 1), "build_s": round(built, 1),
           "context": ctx, "batch": batch, "budget": budget, "steps": steps, "dtype": str(dtype),
           "kv_gb": round(place.kv_bytes / 2**30, 2), "gpu_gb": round(total / 2**30, 1),
           "placement_kv_on_gpu": place.kv_on_gpu,
           "crossover_tokens": memory.crossover_tokens(
               batch=batch, layers=c.num_hidden_layers, kv_heads=c.num_key_value_heads, head_dim=head_dim,
               dtype_bytes=dtype.itemsize, weight_bytes=sum(p.numel() * p.element_size() for p in target.parameters()),
               dlm_bytes=head_bytes, budget=budget, gpu_bytes=total)}

    def run(method):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        n = s["spec_offloaded_steps"] if method == "hf_offloaded" else steps
        kind = {"full": "static", "elastic": "static", "hf_offloaded": "offloaded"}.get(method, "dynamic")
        cache = random_cache(c, batch, ctx, c.num_hidden_layers, dtype, device, kind, n + 2)
        host = None
        if method == "host":
            host = offload.host_cache(cache, n + 2)                            # pinned on CUDA
            del cache
            cache = host
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
        ctl = selective.SelectiveKV(target, budget, 4, s["spec_window"], elastic=method in ("elastic", "host"),
                                    host=host)
        if method in ("elastic", "host"):
            ctl.selector = HeadSelector(head_with_context(head, batch, ctx, dtype, device))
        ids = torch.ones(batch, 1, dtype=torch.long, device=device)
        try:
            with torch.inference_mode():
                ids = ctl.step(ids, cache).argmax(-1, keepdim=True)                 # warm-up (cold full load)
                if cuda:
                    torch.cuda.synchronize()
                if ctl.elastic is not None:
                    ctl.elastic.copied = ctl.elastic.gathered = 0
                t1 = time.perf_counter()
                for _ in range(n):
                    ids = ctl.step(ids, cache).argmax(-1, keepdim=True)
                if cuda:
                    torch.cuda.synchronize()
                sec = time.perf_counter() - t1
        finally:
            ctl.detach()
        r = {"tokens_per_s": round(batch * n / sec, 2), "ms_per_step": round(1000 * sec / n, 2), "steps": n}
        if cuda:
            r["peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if ctl.elastic is not None:
            e = ctl.elastic
            r.update(rows_per_step=round(e.copied / n, 1), gather_rows_per_step=round(e.gathered / n, 1),
                     mb_per_step=round(e.copied / n * row_bytes / 2**20, 2),
                     gather_mb_per_step=round(e.gathered / n * row_bytes / 2**20, 2),
                     moved_fraction=round(e.copied / max(1, e.gathered), 3), reload_steps=e.reloads)
        return r

    for method in ("full", "elastic", "host", "hf_offloaded"):
        if method == "hf_offloaded" and not cuda:
            out[method] = {"skipped": "transformers 5.24 offloads through CUDA streams only"}
            continue
        try:
            out[method] = run(method)
        except Exception as e:              # one row failing (e.g. out of memory) must not hide the others
            out[method] = {"error": f"{type(e).__name__}: {e}"[:400]}
    for method in ("elastic", "host", "hf_offloaded"):
        if "tokens_per_s" in out.get(method, {}) and "tokens_per_s" in out["full"]:
            out[f"{method}_over_full"] = round(out[method]["tokens_per_s"] / out["full"]["tokens_per_s"], 2)
    del target, head
    return out
