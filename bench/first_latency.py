"""FIRST latency: seconds per window, single-token scoring vs generating the permutation, same windows and model.

    python bench/first_latency.py [--profile smoke] [--adapter outputs/first_train/adapters/joint]
                                  [--windows 8] [--first-stage bm25] [--threads N]

Windows are the first ``window`` candidates (default 20) of the first ``--windows`` DL19 queries of the first
stage, passages truncated to ``first.max_words`` words, exactly as ``first_rerank`` builds them; the model is
``models/<first.model_role>`` plus the trained ``joint`` adapter when it exists (else zero-shot, said in the
output). Each window is scored alone (batch of one) after one untimed warm-up per mode
(:func:`lab.rerank.latency.measure_latency`). The paper reports ~1.5x for Zephyr-7B under vLLM; the ratio
(generation / single-token) is printed last, and everything is written to ``--out`` (default
``outputs/bench/first_latency.json``, with the profile and the command) for ``experiments/first/expected.yaml``.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path

import torch

import lab.config
from lab.methods.first import common as first_common, rerank as first_rerank
from lab.paths import write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None)
    p.add_argument("--adapter", default=str(Path("outputs") / "first_train" / "adapters" / "joint"))
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--first-stage", default=None)
    p.add_argument("--threads", type=int, default=None, help="default: first.threads")
    p.add_argument("--out", default=str(Path("outputs") / "bench" / "first_latency.json"))
    args = p.parse_args(argv)
    cfg = lab.config.load("first", args.profile)
    seed = int(lab.config.read_params().get("seed", 0))
    first_common.setup_torch(cfg, seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = Path(lab.config.load("models", args.profile).out_dir) / cfg.model_role
    adapter = Path(args.adapter) if Path(args.adapter).is_dir() else None
    sets = first_rerank.eval_sets(cfg, lab.config.load("data", args.profile).out_dir)
    fs = args.first_stage or cfg.rerank.baseline
    result = first_rerank.latency(cfg, model_path, adapter, sets[0].runs[fs], args.windows)
    print(f"model: {model_path} + {'adapter ' + str(adapter) if adapter else 'no adapter (zero-shot)'}; "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"windows: {len(result.single)} x {cfg.rerank.window} passages from {sets[0].name} {fs}, "
          f"max {cfg.max_words} words each; generated tokens per window: {result.summary()['gen_new_tokens']:.1f}")
    summ = result.summary()
    print(f"free generation wrote a complete permutation in {sum(result.gen_complete)} of {len(result.gen_complete)} "
          f"windows; grammar-constrained decoding: {summ['constrained_s_per_window']:.3f} s/window "
          f"({summ['ratio_constrained']:.2f}x single-token)")
    print(f"single-token: {result.single_mean:.3f} s/window   generation: {result.gen_mean:.3f} s/window")
    print(f"ratio (generation / single-token): {result.ratio:.2f}x")
    write_json(args.out, {"profile": args.profile or lab.config.active_profile(),
                          "command": shlex.join(["python", "bench/first_latency.py", *sys.argv[1:]]),
                          "model": str(model_path), "adapter": str(adapter) if adapter else "",
                          "first_stage": fs, "threads": torch.get_num_threads(),
                          "machine": platform.processor() or platform.machine(), "latency": summ})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
