"""FIRST training (Reddy et al., EMNLP 2024, arXiv 2406.15657): training data and the training wiring.

data (TREC DL windows, or the paper's rank_zephyr data) -> models (``models/<role>``) -> rerank (prompt,
training loop) -> LoRA adapters. Notebook ``notebooks/first/01-first-train.py`` calls these functions;
``python -m lab.methods.first.train train ...`` is the same training as a command that ``accelerate launch``
can start on several GPUs (see :func:`main`). Reranking with the adapters: :mod:`lab.methods.first.rerank`.

Never trains on an evaluation set: with ``first.train.source: trec`` the training dataset must not be
one of ``first.rerank.datasets`` and no training qid may be an evaluation qid (both checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lab import config as lab_config
from lab.data.trecdl import load_materialised
from lab.methods.first.common import load_base, setup_torch
from lab.methods.first.config import FirstConfig
from lab.rerank.augment import training_windows
from lab.rerank.prompts import load_prompt
from lab.rerank.train import RankExample, RankObjective
from lab.train import FitResult, LoraSettings, TrainSettings


# --------------------------------------------------------------------------------------- training data
@dataclass
class TrainingSet:
    examples: list[RankExample]
    qids: list[str]                      # per example ("" for rank_zephyr rows: MS MARCO training queries)
    kinds: list[str]                     # "top" | "random" | "rank_zephyr"
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        return {"examples": len(self.examples), "queries": len(set(self.qids) - {""}),
                "top_windows": self.kinds.count("top"), "random_windows": self.kinds.count("random"),
                "passages_per_window": sum(len(e.passages) for e in self.examples) / max(1, len(self.examples))}


def eval_qids(cfg: FirstConfig, data_dir: str | Path) -> set[str]:
    """Every query id of the TREC DL evaluation sets (read from the materialised topics)."""
    from lab.data.formats import read_topics

    return {q.qid for name in cfg.rerank.datasets for q in read_topics(Path(data_dir) / name / "queries.tsv")}


def training_set(cfg: FirstConfig, data_dir: str | Path, seed: int) -> TrainingSet:
    """The training windows the config names, checked never to hold an evaluation query."""
    t = cfg.train
    if t.source == "rank_zephyr":
        from lab.rerank.rank_zephyr import load_rank_zephyr

        data = load_rank_zephyr(t.rank_zephyr, max_examples=t.max_examples)
        return TrainingSet(data.examples, [""] * len(data.examples), ["rank_zephyr"] * len(data.examples),
                           {"skipped": len(data.skipped), "repaired": data.repaired})
    if t.dataset in cfg.rerank.datasets:
        raise ValueError(f"first.train.dataset {t.dataset!r} is an evaluation set ({list(cfg.rerank.datasets)})")
    ds = load_materialised(data_dir, t.dataset, [t.first_stage])
    wins = training_windows(ds.runs[t.first_stage], ds.qrels, window=t.window, depth=t.depth,
                            top_windows=t.top_windows, random_windows=t.random_windows, shuffle=t.shuffle,
                            min_relevant=t.min_relevant, seed=seed, max_queries=t.max_queries)
    if t.max_examples:
        wins = wins[: t.max_examples]
    leaked = {w.qid for w in wins} & eval_qids(cfg, data_dir)
    if leaked:
        raise ValueError(f"training windows hold {len(leaked)} evaluation queries: {sorted(leaked)[:5]}")
    return TrainingSet([w.example for w in wins], [w.qid for w in wins], [w.kind for w in wins])


# ------------------------------------------------------------------------------------------ training
def objective(cfg: FirstConfig, variant: str) -> RankObjective:
    o = cfg.optim
    return RankObjective(objective=variant, rank_loss=o.rank_loss, weighted=o.weighted, lam=o.lam,
                         max_words=cfg.max_words, fix_text=cfg.fix_text)


def train_settings(cfg: FirstConfig, seed: int, steps: int | None = None) -> TrainSettings:
    """``first.optim`` as :class:`lab.train.TrainSettings` (``steps`` > 0, or ``optim.steps``, wins over epochs)."""
    o = cfg.optim
    lora = LoraSettings(r=o.lora_r, alpha=o.lora_alpha, dropout=o.lora_dropout, targets=tuple(o.lora_targets),
                        top_layers=o.lora_layers) if o.lora else None
    return TrainSettings(
        epochs=o.epochs, max_steps=steps or o.steps, batch_size=o.batch_size, grad_accum=o.grad_accum, lr=o.lr,
        weight_decay=o.weight_decay, scheduler=o.scheduler, warmup_steps=o.warmup_steps,
        max_grad_norm=o.max_grad_norm, neftune_alpha=o.neftune_alpha, gradient_checkpointing=o.gradient_checkpointing,
        mixed_precision=o.mixed_precision, deepspeed=o.deepspeed, lora=lora, shuffle=True, seed=seed,
        logging="step", save_every=o.checkpoint_every, save_total_limit=2, progress=True)


def fingerprint(cfg: FirstConfig, variant: str, settings: TrainSettings, ts: TrainingSet,
                model_path: str | Path) -> str:
    """What a checkpoint must share with the run that resumes it: settings, objective, examples, base model."""
    folder = Path(model_path)
    marker = folder / "lab_model.json"
    model_id = (marker if marker.is_file() else folder / "config.json").read_text() if folder.is_dir() else str(model_path)
    h = hashlib.sha256()
    h.update(json.dumps({"settings": asdict(settings), "objective": asdict(objective(cfg, variant)),
                         "prompt": cfg.prompt,
                        # how it is launched is not what it trains: a launched run resumes an in-process checkpoint
                        "optim": {k: v for k, v in lab_config.as_plain(cfg.optim).items() if k != "launch"}},
                        sort_keys=True, default=str).encode())
    h.update(model_id.encode())
    for ex in ts.examples:
        h.update(json.dumps([ex.query, ex.passages, ex.ranks]).encode())
    return h.hexdigest()


def train_variant(cfg: FirstConfig, variant: str, ts: TrainingSet, *, model_path: str | Path,
                  adapters_dir: str | Path | None, seed: int, checkpoint_root: str | Path | None = None,
                  stop_after: int | None = None, steps: int | None = None, run=None) -> FitResult:
    """Train one objective (``joint`` = FIRST, ``lm``, ``rank``) with :func:`lab.train.fit`; save its adapter (LoRA)
    or model (full fine-tuning, in ``optim.dtype``) to ``adapters_dir/variant``.

    Resumes from ``checkpoint_root/variant`` when a checkpoint there was written for the same fingerprint. Under
    ``accelerate launch`` every process trains and the main one saves. ``run``: the stage's tracking run, which
    receives the per-step curve as ``curve.<variant>.*``.

    ``optim.launch: accelerate`` (paper profile): when :func:`lab.methods.first.launched.launch_plan` says so, this
    process launches ``python -m lab.methods.first.train`` under ``accelerate launch`` (one process per GPU,
    ZeRO-3 with ``optim.deepspeed``) and returns its log history as a :class:`FitResult` whose ``model`` is None
    (the weights are in ``adapters_dir/variant``).
    """
    import torch

    from lab.rerank.train import collator, loss_fn, prepare
    from lab.train import fit

    if cfg.optim.launch == "accelerate":
        from lab.methods.first import launched

        plan = launched.launch_plan(cfg)
        if plan.mode == "accelerate":
            return launched.train_launched(plan, cfg, variant, ts, model_path=model_path, adapters_dir=adapters_dir,
                                           seed=seed, checkpoint_root=checkpoint_root, stop_after=stop_after,
                                           steps=steps, run=run)
    model, tok = load_base(model_path, cfg.optim.dtype)
    settings = train_settings(cfg, seed, steps)
    obj = objective(cfg, variant)
    encoded, ident, pad_id = prepare(tok, ts.examples, obj, load_prompt(cfg.prompt))
    result = fit(model, encoded, collator(pad_id), loss_fn(ident, obj), settings,
                 checkpoint_dir=Path(checkpoint_root) / variant if checkpoint_root else None,
                 fingerprint=fingerprint(cfg, variant, settings, ts, model_path), stop_after=stop_after, run=run,
                 log_prefix=f"curve.{variant}")
    main = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    if adapters_dir is not None and main:
        state = None
        if not cfg.optim.lora and cfg.optim.dtype != "float32":     # fp32 master weights saved in the load dtype
            dtype = getattr(torch, cfg.optim.dtype)
            state = {k: v.to(dtype) for k, v in result.model.state_dict().items()}
        result.model.save_pretrained(Path(adapters_dir) / variant, state_dict=state)   # LoRA: the adapter
        tok.save_pretrained(Path(adapters_dir) / variant)
    return result


def losses(result: FitResult) -> list[dict[str, float]]:
    """Per-step ``{step, lr, loss, lm, rank}`` of a run (resumed steps included)."""
    return [{"step": int(r["step"]), "lr": float(r["learning_rate"]), "loss": float(r["loss"]),
             "lm": float(r.get("lm", 0.0)), "rank": float(r.get("rank", 0.0))} for r in result.records()]


def curves(results: dict[str, FitResult]) -> pd.DataFrame:
    """Per-step losses of every variant (long form without timings, so the table is byte-stable)."""
    rows = [{"variant": v, **r} for v, res in results.items() for r in losses(res)]
    return pd.DataFrame(rows, columns=["variant", "step", "lr", "loss", "lm", "rank"])


def curve_endpoints(table: pd.DataFrame, k: int = 5) -> dict[str, dict[str, float]]:
    """Mean of each loss over the first and the last ``k`` steps, per variant."""
    out: dict[str, dict[str, float]] = {}
    for variant, g in table.groupby("variant", sort=False):
        g = g.sort_values("step")
        out[variant] = {f"{part}_{end}": float(frame[part].mean())
                        for end, frame in (("first", g.head(k)), ("last", g.tail(k)))
                        for part in ("loss", "lm", "rank")}
        out[variant]["steps"] = float(g["step"].max())
    return out


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m lab.methods.first.train train --variant joint --out DIR``; the same command runs on several GPUs
    under ``accelerate launch --multi_gpu --num_processes N -m lab.methods.first.train train ...`` (DDP; ZeRO-3 with
    ``first.optim.deepspeed: zero3``)."""
    p = argparse.ArgumentParser(prog="python -m lab.methods.first.train", description=main.__doc__)
    p.add_argument("command", choices=["train"])
    p.add_argument("--profile", default=None, help="params.yaml profile (default: the file's)")
    p.add_argument("--params", default=None, help="params.yaml path")
    p.add_argument("--variant", default="joint", choices=["joint", "lm", "rank"])
    p.add_argument("--out", required=True, help="adapters folder (the variant lands in OUT/<variant>)")
    p.add_argument("--model", default=None, help="model reference or folder (default: models/<model_role>)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--train-data", default=None, help="rank_zephyr data (hf id or .jsonl) overriding the params")
    p.add_argument("--checkpoints", default=None, help="checkpoint folder (default: first.checkpoint_dir)")
    p.add_argument("--steps", type=int, default=None, help="override the number of optimizer steps")
    # what lab.methods.first.launched hands over (the caller's exact config and windows, its seed, a result file)
    p.add_argument("--cfg", default=None, help="the first section as JSON (instead of --profile/--params)")
    p.add_argument("--examples", default=None, help="training windows as JSONL (instead of building them)")
    p.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    p.add_argument("--result", default=None, help="rank 0 writes the Trainer's log history here (JSON)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after N steps (keeps the checkpoint)")
    p.add_argument("--no-checkpoints", action="store_true", help="no resumable checkpoints (the caller had none)")
    args = p.parse_args(argv)
    if args.cfg:
        from lab.methods.first.launched import load_cfg

        cfg = load_cfg(args.cfg)
    else:
        cfg = lab_config.load("first", args.profile, args.params)
    if args.train_data:
        from dataclasses import replace

        cfg = replace(cfg, train=replace(cfg.train, source="rank_zephyr", rank_zephyr=args.train_data))
    seed = int(lab_config.read_params(args.params).get("seed", 0)) if args.seed is None else args.seed
    setup_torch(cfg, seed)
    model = args.model or str(Path("models") / cfg.model_role)
    if args.examples:
        from lab.methods.first.launched import read_examples

        ts = TrainingSet(*read_examples(args.examples))
    else:
        ts = training_set(cfg, args.data_dir, seed)
    res = train_variant(cfg, args.variant, ts, model_path=model, adapters_dir=args.out or None, seed=seed,
                        checkpoint_root=None if args.no_checkpoints else args.checkpoints or cfg.checkpoint_dir,
                        steps=args.steps,
                        stop_after=args.stop_after)
    from lab.train.launch import finish

    finish(args.result, res, losses(res), {"variant": args.variant, "examples": len(ts.examples)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
