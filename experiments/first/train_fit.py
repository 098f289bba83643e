"""Does the smoke FIRST recipe fit its own training queries? Train the joint objective with overrides, then
rerank with single-token scoring both the training set (DL20) and the test set (DL19), BM25 top-20.

    LAB_DATA_MIRROR=../shared/data python experiments/first/train_fit.py --name lr2e-3-2ep \\
        --set optim.lr=0.002 --set optim.epochs=2.0

Prints one JSON line (also appended to ``<out>/train_fit.jsonl``): steps, training seconds, RankNet loss over
the first / last five steps, and nDCG@10 of BM25 vs the reranked run on each set. A diagnostic, not a stage:
choosing a recipe by its DL19 number would be tuning on the test set, so the README quotes it only as such.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import yaml

import lab.config
from lab.data.trecdl import load_materialised
from lab.eval.metrics import evaluate
from lab.methods.first import common as first_common, rerank as first_rerank, train as first_train
from lab.rerank.listwise import rerank


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--set", action="append", default=[], help="first.<part>.<key>=<yaml value>, part train|optim")
    p.add_argument("--out", default="outputs/experiments/first_train_fit")
    p.add_argument("--profile", default="smoke")
    args = p.parse_args(argv)
    cfg = lab.config.load("first", args.profile)
    over: dict[str, dict] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        part, _, name = key.partition(".")
        over.setdefault(part, {})[name] = yaml.safe_load(value)
    cfg = replace(cfg, **{part: replace(getattr(cfg, part), **vals) for part, vals in over.items()})
    seed = int(lab.config.read_params().get("seed", 0))
    first_common.setup_torch(cfg, seed)
    data_dir, out = lab.config.load("data", args.profile).out_dir, Path(args.out) / args.name
    model_path = Path(lab.config.load("models", args.profile).out_dir) / cfg.model_role
    ts = first_train.training_set(cfg, data_dir, seed)
    t0 = time.perf_counter()
    res = first_train.train_variant(cfg, "joint", ts, model_path=model_path, adapters_dir=out, seed=seed,
                                    checkpoint_root=out / "checkpoints")
    curve = first_train.losses(res)
    row = {"name": args.name, "set": args.set, "examples": len(ts.examples), "steps": len(curve),
           "train_s": round(time.perf_counter() - t0), "rank_first5": sum(r["rank"] for r in curve[:5]) / 5,
           "rank_last5": sum(r["rank"] for r in curve[-5:]) / 5}
    model, tok = first_rerank.load_reranker(cfg, model_path, out / "joint")
    for name in (cfg.train.dataset, *cfg.rerank.datasets):
        ds = load_materialised(data_dir, name, [cfg.train.first_stage])
        base = ds.runs[cfg.train.first_stage]
        reranked = rerank(base, first_rerank.scorer(cfg, "single", model, tok), window=cfg.rerank.window,
                          stride=cfg.rerank.stride, depth=cfg.rerank.depth, progress=True,
                          batch_size=cfg.rerank.batch_size)
        row[name] = {run: evaluate(r, ds.qrels, {"ndcg_10": "nDCG@10"}).means["ndcg_10"]
                     for run, r in (("first_stage", base), ("reranked", reranked))}
    line = json.dumps(row, sort_keys=True)
    print(line)
    with open(Path(args.out) / "train_fit.jsonl", "a") as f:
        f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
