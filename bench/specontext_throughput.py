"""SpeContext decode throughput: tokens/s of full KV vs SpeContext (retrieval head included), same model and prompts.

    python bench/specontext_throughput.py [--profile smoke] [--contexts 2048 4096 8192] [--batches 1 8]
                                          [--steps 8] [--budget 1024] [--model REF] [--threads N]
                                          [--repeats R] [--headline gather|elastic] [--methods ...]

The target is ``models/<specontext.model_role>`` (or ``--model``, e.g. ``random:llama-7b`` on a GPU); the retrieval
head is the distilled DLM's (``outputs/specontext_dlm/dlm`` + ``outputs/specontext_heads/heads.json``) when they
exist, else the undistilled DLM's with heads ``--heads`` (speed depends on shapes only). Decoding speed does not
depend on what the KV holds, so each configuration starts from a cache of ``context`` random K/V rows per layer
(target and retrieval head alike) instead of a prefill (an 8k x 8 prefill of SmolLM2 takes minutes on 2 cores);
every step then appends its token as in real decoding. ``--cache static`` (default) preallocates the target's KV
(transformers' ``StaticCache``: in-place writes; full KV attends over it with the mask), ``--cache dynamic`` is HF's
``DynamicCache``, which re-concatenates every layer's whole KV each step (a copy SpeContext pays as well, since the
target keeps its full KV). Both methods run the same ``lab.kv.selective`` controller:
full KV (no selector) vs the head's set of ``--budget`` rows shared by all layers, gathered in every layer
(``specontext``) or kept per layer in persistent buffers refilled with only the rows that entered the set
(``specontext_elastic``: elastic loading, :class:`lab.kv.offload.ElasticCache`; each row reports the rows and bytes
it copied per step next to a full gather's). On CUDA two more rows: SpeContext with the full KV in pinned host
memory (``specontext_host``: changed rows prefetched on a side stream) and HF's offloaded full KV
(``DynamicCache(offloading=True)``, ``hf_offloaded``; transformers 5.24 offloads through CUDA streams only, so the
row is absent on CPU). One untimed warm-up step each. Random K/V make the selected set change more per step than
real text does (37-45% measured in specontext_eval, docs/measurements.md): read the elastic rows as a worst case.
Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on CPU the process's max RSS (monotone, so read it as an
upper bound) plus the attended KV bytes per step. The 8k batch-8 ratio (``--headline``: the gather path, as
before, or the elastic one) is printed last and written to ``--out`` (default
``outputs/bench/specontext_throughput.json``) for ``experiments/specontext/expected.yaml``, with both paths'
ratios beside it (``ratio_gather_*``, ``ratio_elastic_*``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import lab.config
from lab.kv import memory, offload, selective
from lab.kv.synthetic import head_with_context, random_cache as fake_cache
from lab.kv.retrieval_head import HeadSelector, RetrievalHead, build_dlm
from lab.paths import write_json


def timed(model, cache, selector, budget, steps, batch, device, sinks, window, elastic=False, host=None):
    """Decode tokens/s over ``steps`` timed steps, and the controller (its ``elastic`` copy counts)."""
    ctl = selective.SelectiveKV(model, budget, sinks, window, elastic=elastic, host=host)
    ctl.selector = selector
    cache = host if host is not None else cache
    ids = torch.ones(batch, 1, dtype=torch.long, device=device)
    try:
        ctl.step(ids, cache)                                         # warm-up (elastic: the cold full load)
        sync(device)
        if ctl.elastic is not None:
            ctl.elastic.copied = ctl.elastic.gathered = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            ids = ctl.step(ids, cache).argmax(-1, keepdim=True)
        sync(device)
        return batch * steps / (time.perf_counter() - t0), ctl
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
    p.add_argument("--repeats", type=int, default=1,
                   help="measure every method this many times, round-robin; tokens/s = the median")
    p.add_argument("--headline", choices=["gather", "elastic"], default="gather",
                   help="which SpeContext path the printed-last ratio_<ctx>k_batch<b> is")
    p.add_argument("--methods", nargs="+", default=None,
                   help="subset of full specontext specontext_elastic specontext_host hf_offloaded")
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
    methods = args.methods or ["full", "specontext", "specontext_elastic", "specontext_host", "hf_offloaded"]
    if "full" not in methods or not {"specontext", "specontext_elastic"} & set(methods):
        p.error("--methods needs full and specontext or specontext_elastic")
    methods = ["full"] + [m for m in methods if m != "full"]          # the reference first
    row_bytes = memory.kv_bytes_per_token(1, c.num_key_value_heads, head_dim, dtype.itemsize)   # K+V, one layer
    for context in args.contexts:
        for batch in args.batches:
            row = {"context": context, "batch": batch}
            runs: dict[str, list[float]] = {}
            for method in [m for _ in range(args.repeats) for m in methods]:    # round-robin under contention
                if method in ("specontext_host", "hf_offloaded") and device.type != "cuda":
                    row[f"{method}_skipped"] = "needs CUDA (pinned host memory, side streams)"
                    continue
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                kind = {"hf_offloaded": "offloaded", "specontext_host": "dynamic"}.get(method, args.cache)
                cache = fake_cache(c, batch, context, n_layers, dtype, device, kind, args.steps + 2)
                sel, host = None, None
                if method.startswith("specontext"):
                    sel = HeadSelector(head_with_context(head, batch, context, dtype, device))
                if method == "specontext_host":                   # the full KV moves to (pinned) host memory
                    host = offload.host_cache(cache, args.steps + 2)
                    cache = None
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                tps, ctl = timed(model, cache, sel, args.budget, args.steps, batch, device, cfg.selection.sinks,
                                 cfg.selection.window, elastic=method in ("specontext_elastic", "specontext_host"),
                                 host=host)
                runs.setdefault(method, []).append(tps)
                row[f"{method}_tokens_per_s"] = statistics.median(runs[method])
                if args.repeats > 1:
                    row[f"{method}_tokens_per_s_runs"] = runs[method]
                row[f"{method}_peak_bytes"] = max(row.get(f"{method}_peak_bytes", 0), (
                    torch.cuda.max_memory_allocated() if device.type == "cuda" else
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
                attended = context if method in ("full", "hf_offloaded") else min(args.budget, context)
                row[f"{method}_attended_kv_bytes"] = batch * attended * memory.kv_bytes_per_token(
                    n_layers, c.num_key_value_heads, head_dim, dtype.itemsize)
                if ctl.elastic is not None:                       # rows moved per step vs a gather of the set
                    e = ctl.elastic
                    row[f"{method}_rows_per_step"] = e.copied / args.steps
                    row[f"{method}_bytes_per_step"] = e.copied / args.steps * row_bytes
                    row["gather_rows_per_step"] = e.gathered / args.steps
                    row["gather_bytes_per_step"] = e.gathered / args.steps * row_bytes
                    row[f"{method}_moved_fraction"] = e.copied / max(1, e.gathered)
                    row[f"{method}_reload_steps"] = e.reloads     # steps that regathered the whole set
                del cache, sel, host, ctl
            for method in methods[1:]:
                if f"{method}_tokens_per_s" in row:
                    row[f"ratio_{method}"] = row[f"{method}_tokens_per_s"] / row["full_tokens_per_s"]
            row["ratio"] = row.get("ratio_specontext", float("nan"))
            rows.append(row)
            print(f"context {context:6d} batch {batch}: full {row['full_tokens_per_s']:8.2f} tok/s; " + ", ".join(
                f"{m} {row[f'{m}_tokens_per_s']:8.2f} tok/s ({row[f'ratio_{m}']:.2f}x)" for m in methods[1:]
                if f"ratio_{m}" in row) + (f"; elastic copies {row['specontext_elastic_moved_fraction']:.0%} of a "
                                           "gather's rows" if "specontext_elastic_moved_fraction" in row else ""),
                  flush=True)
    last = next((r for r in rows if r["context"] == 8192 and r["batch"] == 8), rows[-1])
    tag = f"{last['context'] // 1024}k_batch{last['batch']}"
    ratios = {f"ratio_gather_{tag}": last.get("ratio_specontext"),
              f"ratio_elastic_{tag}": last.get("ratio_specontext_elastic")}
    headline = ratios[f"ratio_{args.headline}_{tag}"]
    if headline is None:
        p.error(f"--headline {args.headline}: its method was not run")
    out = {"profile": args.profile or lab.config.active_profile(), "model": ref, "device": str(device),
           "command": shlex.join(["python", "bench/specontext_throughput.py", *sys.argv[1:]]),
           "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "budget": args.budget, "steps": args.steps, "repeats": args.repeats, "cache": args.cache, "heads": [list(h) for h in heads], "trained_head": trained,
           "methods": methods, "headline": args.headline, "rows": rows, **ratios, f"ratio_{tag}": headline}
    write_json(args.out, out)
    print(f"ratio at {last['context']} tokens, batch {last['batch']} (SpeContext {args.headline} / full KV): "
          f"{headline:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
