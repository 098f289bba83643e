"""SpeContext decode throughput: tokens/s of full KV vs SpeContext (retrieval head included), same model and prompts.

    python bench/specontext_throughput.py [--profile smoke] [--contexts 2048 4096 8192] [--batches 1 8]
                                          [--steps 8] [--budget 1024] [--model REF] [--threads N]

The target is ``models/<specontext.model_role>`` (or ``--model``, e.g. ``random:llama-7b`` on a GPU); the retrieval
head is the distilled DLM's (``outputs/specontext_dlm/dlm`` + ``outputs/specontext_heads/heads.json``) when they
exist, else the undistilled DLM's with heads ``--heads`` (speed depends on shapes only). Decoding speed does not
depend on what the KV holds, so each configuration starts from a cache of ``context`` random K/V rows per layer
(target and retrieval head alike) instead of a prefill (an 8k x 8 prefill of SmolLM2 takes minutes on 2 cores);
every step then appends its token as in real decoding. ``--cache static`` (default) preallocates the target's KV
(transformers' ``StaticCache``: in-place writes; full KV attends over it with the mask), ``--cache dynamic`` is HF's
``DynamicCache``, which re-concatenates every layer's whole KV each step (a copy SpeContext pays as well, since the
target keeps its full KV). Both methods run the same ``lab.kv.selective`` controller:
full KV (no selector) vs the head's set of ``--budget`` rows shared by all layers; one untimed warm-up step each.
Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on CPU the process's max RSS (monotone, so read it as an
upper bound) plus the attended KV bytes per step. The 8k batch-8 ratio is printed last and written to ``--out``
(default ``outputs/bench/specontext_throughput.json``) for ``experiments/specontext/expected.yaml``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

import lab.config
from lab.kv import memory, selective
from lab.kv.retrieval_head import HeadSelector, RetrievalHead, build_dlm
from lab.paths import write_json


def fake_cache(config, batch: int, length: int, layers: int, dtype, device, kind: str = "dynamic", extra: int = 0):
    from transformers import DynamicCache, StaticCache

    d = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache = (DynamicCache(config=config) if kind == "dynamic" else
             StaticCache(config=config, max_cache_len=length + extra))
    g = torch.Generator(device="cpu").manual_seed(0)
    for layer in range(layers):
        k = torch.randn(batch, config.num_key_value_heads, length, d, generator=g).to(device, dtype)
        cache.update(k, k.clone(), layer)
    return cache


def head_with_context(head: RetrievalHead, batch: int, length: int, dtype, device) -> RetrievalHead:
    head.reset()
    if head.top:
        head.cache = fake_cache(head.config, batch, length, head.top, dtype, device)
    for name in head.q:
        head.keys[name] = torch.randn(batch, length, head.head_dim).to(device, dtype)
    head.length = length
    return head


def timed(model, cache, selector, budget, steps, batch, device, sinks, window) -> float:
    ctl = selective.SelectiveKV(model, budget, sinks, window)
    ctl.selector = selector
    ids = torch.ones(batch, 1, dtype=torch.long, device=device)
    try:
        ctl.step(ids, cache)                                         # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            ids = ctl.step(ids, cache).argmax(-1, keepdim=True)
        sync(device)
        return batch * steps / (time.perf_counter() - t0)
    finally:
        ctl.detach()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    from lab.models import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None)
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--model", default=None, help="default: models/<specontext.model_role>")
    p.add_argument("--heads", default="1:0,1:1", help="DLM layer:head pairs when heads.json is absent")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--cache", choices=["static", "dynamic"], default="static",
                   help="target KV: preallocated (in-place writes) or HF DynamicCache (re-concatenated every step)")
    p.add_argument("--threads", type=int, default=None, help="default: specontext.threads")
    p.add_argument("--out", default=str(Path("outputs") / "bench" / "specontext_throughput.json"))
    args = p.parse_args(argv)
    cfg = lab.config.load("specontext", args.profile)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads or cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    ref = args.model or str(Path(lab.config.load("models", args.profile).out_dir) / cfg.model_role)
    model = load_model(ref, kind="causal_lm", dtype=dtype).to(device).eval()
    n_layers = model.config.num_hidden_layers
    layers = [x for x in cfg.dlm.layers if x < n_layers] or [0, n_layers - 1]
    dlm = build_dlm(model, layers).eval()
    dlm_dir, heads_json = Path("outputs/specontext_dlm/dlm"), Path("outputs/specontext_heads/heads.json")
    trained = args.model is None and dlm_dir.is_dir() and heads_json.is_file()
    if trained:
        from lab.methods.specontext.dlm import load_dlm

        dlm = load_dlm(model, dlm_dir, cfg.dlm.layers).to(device)
        heads = [tuple(h) for h in json.loads(heads_json.read_text())["distilled"]]
    else:
        heads = [tuple(int(x) for x in h.split(":")) for h in args.heads.split(",")]
    head = RetrievalHead(dlm, heads).to(device).eval()
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rows = []
    print(f"model {ref} ({n_layers} layers, {args.dtype}, {args.cache} cache) on {device}, torch threads {torch.get_num_threads()}; "
          f"retrieval head {'distilled' if trained else 'undistilled (shapes only)'} heads {heads}, budget {args.budget}")
    for context in args.contexts:
        for batch in args.batches:
            row = {"context": context, "batch": batch}
            for method in ("full", "specontext"):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                cache = fake_cache(c, batch, context, n_layers, dtype, device, args.cache, args.steps + 2)
                sel = None
                if method == "specontext":
                    sel = HeadSelector(head_with_context(head, batch, context, dtype, device))
                row[f"{method}_tokens_per_s"] = timed(model, cache, sel, args.budget, args.steps, batch, device,
                                                      cfg.selection.sinks, cfg.selection.window)
                row[f"{method}_peak_bytes"] = (torch.cuda.max_memory_allocated() if device.type == "cuda" else
                                               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
                attended = context if method == "full" else min(args.budget, context)
                row[f"{method}_attended_kv_bytes"] = batch * attended * memory.kv_bytes_per_token(
                    n_layers, c.num_key_value_heads, head_dim, dtype.itemsize)
                del cache, sel
            row["ratio"] = row["specontext_tokens_per_s"] / row["full_tokens_per_s"]
            rows.append(row)
            print(f"context {context:6d} batch {batch}: full {row['full_tokens_per_s']:8.2f} tok/s, SpeContext "
                  f"{row['specontext_tokens_per_s']:8.2f} tok/s, ratio {row['ratio']:.2f}x", flush=True)
    last = next((r for r in rows if r["context"] == 8192 and r["batch"] == 8), rows[-1])
    out = {"profile": args.profile or lab.config.active_profile(), "model": ref, "device": str(device),
           "command": shlex.join(["python", "bench/specontext_throughput.py", *sys.argv[1:]]),
           "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "budget": args.budget, "steps": args.steps, "cache": args.cache, "heads": [list(h) for h in heads], "trained_head": trained,
           "rows": rows, f"ratio_{last['context'] // 1024}k_batch{last['batch']}": last["ratio"]}
    write_json(args.out, out)
    print(f"ratio at {last['context']} tokens, batch {last['batch']} (SpeContext / full KV): {last['ratio']:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
