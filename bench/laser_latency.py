"""LaSER latency: per-query encode time of a single pass (K=1), the latent view (K=3) and rewrite-then-retrieve.

    python bench/laser_latency.py [--profile smoke] [--queries 16] [--gen-tokens N] [--paper-shaped] [--threads N]

Queries are the first ``--queries`` DL19 queries, wrapped exactly as laser_eval wraps them. Rewrite-then-retrieve
generates exactly ``--gen-tokens`` new tokens greedily (default: the median DL19 reasoning length of
outputs/laser_reasoning/reasoning.csv, else laser.reasoning.max_new_tokens) with the same backbone, then encodes
query + reasoning in one pass. Batches of 1 and 8, one untimed warm-up per mode, modes interleaved over
``--repeats`` rounds and the median round kept (the machine is shared: interleaving spreads contention over all
modes alike). ``--paper-shaped`` also times a random-init Qwen3-0.6B built from its config in memory (no download,
nothing written to disk; weights do not matter for time), with Qwen3's published vocabulary of 151,936 (the soft
token is a softmax over the whole vocabulary, so the borrowed 49,152-token tokenizer's size would understate its
cost), and writes outputs/bench/laser_latency_paper_shaped.json unless ``--out`` is given (the smoke claims read
laser_latency.json). Both ratios are printed for every model, the last line is latent / single-pass of the
backbone. Without data/ or models/ (no data / models stage run), the DL19 topics come from the data mirror and the
backbone from ``models.refs``.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import lab.config
from lab.data.trecdl import load_materialised
from lab.methods.laser import data as laser_data
from lab.models import setup_torch
from lab.paths import write_json
from lab.retrieval.laser_prompts import load_laser_prompt
from lab.retrieval.latent import latent_encode
from lab.retrieval.latent_train import left_pad, wrapped_ids
from lab.retrieval.rewrite import reasoning_messages


def _median_tokens(default: int) -> int:
    path = Path("outputs/laser_reasoning/reasoning.csv")
    if not path.is_file():
        return default
    import pandas as pd

    df = pd.read_csv(path, keep_default_na=False)
    df = df[df["dataset"] == "trec-dl-2019"] if (df["dataset"] == "trec-dl-2019").any() else df
    return max(1, int(df["new_tokens"].median()))


PAPER_SHAPED = "random:qwen3-0.6b"
PAPER_SPEC = "qwen3-0.6b"
PAPER_VOCAB = 151936            # Qwen3-0.6B's config.json vocab_size (the borrowed tokenizer's ids are all below it)


def _paper_shaped():
    """A random-init Qwen3-0.6B (28 layers, 16/8 heads of 128, hidden 1024, tied embeddings) built in memory from its
    config, float32 (CPU bf16 matmuls are emulated and slower), with SmolLM2's tokenizer (its chat template)."""
    from transformers import AutoModelForCausalLM

    from lab.models import load_tokenizer, packaged, random_config

    config = random_config(PAPER_SPEC)
    config.vocab_size = PAPER_VOCAB
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tok = load_tokenizer(packaged.ensure_tokenizer("smollm2-135m-instruct"))
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _queries(profile: str, dataset: str):
    """The materialised evaluation queries, else the same judged queries straight from the data mirror."""
    try:
        return load_materialised(lab.config.load("data", profile).out_dir, dataset, []).queries
    except FileNotFoundError:
        from lab.data.trecdl import load_dataset

        return load_dataset(dataset, first_stages=[]).queries


def _backbone(profile: str, role: str):
    folder = Path(lab.config.load("models", profile).out_dir) / role
    if folder.is_dir():
        return folder
    from lab.models import resolve

    return resolve(lab.config.load("models", profile).refs[role])


@torch.no_grad()
def time_model(model, tok, prompt, queries: list[str], gen_tokens: int, max_len: int, batch: int,
               repeats: int) -> dict[str, float]:
    """Seconds per query for each mode, the median of ``repeats`` interleaved rounds."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    q_ids = [wrapped_ids(tok, prompt, q, query=True, max_len=max_len) for q in queries]
    batches = [q_ids[i: i + batch] for i in range(0, len(q_ids), batch)]
    texts = [queries[i: i + batch] for i in range(0, len(queries), batch)]

    def encode(k):
        for b in batches:
            latent_encode(model, *left_pad(b, pad), k)

    def rewrite():
        for qs in texts:
            chats = [tok.apply_chat_template(reasoning_messages(prompt, q), tokenize=False, add_generation_prompt=True)
                     for q in qs]
            enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=gen_tokens, min_new_tokens=gen_tokens, do_sample=False,
                                 pad_token_id=pad)
            gen = [tok.decode(r[enc["input_ids"].shape[1]:], skip_special_tokens=True) for r in out]
            ids = [wrapped_ids(tok, prompt, f"{q}\n{g}", query=True, max_len=max_len + gen_tokens + 8)
                   for q, g in zip(qs, gen)]
            latent_encode(model, *left_pad(ids, pad), 1)

    modes = {"single": lambda: encode(1), "latent_k3": lambda: encode(3), "rewrite": rewrite}
    for fn in modes.values():                 # warm-up (allocations, kernels)
        fn()
    rounds: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeats):
        for m, fn in modes.items():
            t0 = time.perf_counter()
            fn()
            rounds[m].append((time.perf_counter() - t0) / len(queries))
    return {m: statistics.median(v) for m, v in rounds.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None)
    p.add_argument("--queries", type=int, default=16)
    p.add_argument("--gen-tokens", type=int, default=0, help="0: the median DL19 reasoning length")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--paper-shaped", action="store_true", help="also a random-init Qwen3-0.6B")
    p.add_argument("--threads", type=int, default=None, help="default: laser.threads")
    p.add_argument("--out", default=None, help="default outputs/bench/laser_latency.json "
                   "(laser_latency_paper_shaped.json with --paper-shaped)")
    args = p.parse_args(argv)
    profile = args.profile or lab.config.active_profile()
    cfg = lab.config.load("laser", profile)
    setup_torch(cfg.threads, int(lab.config.read_params().get("seed", 0)))
    if args.threads:
        torch.set_num_threads(args.threads)
    prompt = load_laser_prompt(cfg.prompt)
    queries = [q.text for q in _queries(profile, cfg.eval.dataset)[: args.queries]]
    gen_tokens = args.gen_tokens or _median_tokens(cfg.reasoning.max_new_tokens)
    refs = {"backbone": _backbone(profile, cfg.model_role)}
    if args.paper_shaped:
        refs[PAPER_SHAPED] = f"{PAPER_SPEC} (config only, vocab {PAPER_VOCAB})"
    out = args.out or str(Path("outputs") / "bench" / ("laser_latency_paper_shaped.json" if args.paper_shaped
                                                       else "laser_latency.json"))
    results: dict[str, dict] = {}
    for name, path in refs.items():
        model, tok = _paper_shaped() if name == PAPER_SHAPED else laser_data.load_base(path, "float32")
        model.eval()
        results[name] = {f"b{b}": time_model(model, tok, prompt, queries, gen_tokens, cfg.loss.query_max_len, b,
                                             args.repeats) for b in (1, 8)}
        for b, r in results[name].items():
            print(f"{name} {b}: single {r['single']*1e3:.1f} ms/query, latent K=3 {r['latent_k3']*1e3:.1f}, "
                  f"rewrite-then-retrieve ({gen_tokens} tokens) {r['rewrite']*1e3:.1f}")
        del model
    main_r = results["backbone"]
    ratios = {}
    for b in ("b1", "b8"):
        ratios[f"latent_over_single_{b}"] = main_r[b]["latent_k3"] / main_r[b]["single"]
        ratios[f"rewrite_over_latent_{b}"] = main_r[b]["rewrite"] / main_r[b]["latent_k3"]
    for name, r in results.items():
        if name != "backbone":
            for b in ("b1", "b8"):
                ratios[f"{name}_latent_over_single_{b}"] = r[b]["latent_k3"] / r[b]["single"]
                ratios[f"{name}_rewrite_over_latent_{b}"] = r[b]["rewrite"] / r[b]["latent_k3"]
            print(f"{name}: rewrite-then-retrieve / latent K=3 {ratios[f'{name}_rewrite_over_latent_b1']:.1f}x (b1), "
                  f"{ratios[f'{name}_rewrite_over_latent_b8']:.1f}x (b8); latent K=3 / single pass "
                  f"{ratios[f'{name}_latent_over_single_b1']:.2f}x (b1), "
                  f"{ratios[f'{name}_latent_over_single_b8']:.2f}x (b8)")
    command = shlex.join(["python", "bench/laser_latency.py", *sys.argv[1:]])
    write_json(out, {"profile": profile, "command": command,
                          "models": {k: str(v) for k, v in refs.items()}, "queries": len(queries),
                          "gen_tokens": gen_tokens, "threads": torch.get_num_threads(),
                          "machine": platform.processor() or platform.machine(), "seconds_per_query": results,
                          "ratios": ratios})
    print(f"wrote {out}")
    print(f"rewrite-then-retrieve / latent K=3 (batch 1): {ratios['rewrite_over_latent_b1']:.1f}x")
    print(f"latent K=3 / single pass (batch 1): {ratios['latent_over_single_b1']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
