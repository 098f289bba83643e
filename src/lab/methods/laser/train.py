"""LaSER training wiring: one variant (a Table-5 row) = :class:`lab.retrieval.latent_train.LatentSettings` + the
``laser.optim`` settings through :func:`lab.train.fit`; LoRA adapters saved per variant.

``python -m lab.methods.laser.train train --variant full --out DIR`` is the same training as a command that
``accelerate launch`` can start on several GPUs (paper profile; in-batch negatives gathered across processes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from lab import config as lab_config
from lab.methods.laser.config import LaserConfig, LaserVariant
from lab.methods.laser.data import TrainingSet, load_base
from lab.retrieval.latent_train import LatentSettings
from lab.train import FitResult, LoraSettings, TrainSettings

PARTS = ("loss", "cl_latent", "cl_explicit", "kl", "mid", "soft_entropy")


def latent_settings(cfg: LaserConfig, row: LaserVariant) -> LatentSettings:
    lo = cfg.loss
    return LatentSettings(k=row.k, explicit=row.explicit, temperature=lo.temperature,
                          mid_temperature=lo.mid_temperature, w_latent=row.w_latent,
                          w_explicit=row.w_explicit if row.explicit else 0.0, w_kl=row.w_kl if row.explicit else 0.0,
                          w_mid=row.w_mid if row.explicit else 0.0, segment_rule=lo.segment_rule,
                          trajectory=lo.trajectory, query_max_len=lo.query_max_len, doc_max_len=lo.doc_max_len,
                          reasoning_max_len=lo.reasoning_max_len, min_reasoning_chars=lo.min_reasoning_chars)


def train_settings(cfg: LaserConfig, seed: int, steps: int | None = None) -> TrainSettings:
    o = cfg.optim
    lora = LoraSettings(r=o.lora_r, alpha=o.lora_alpha, dropout=o.lora_dropout, targets=tuple(o.lora_targets),
                        top_layers=o.lora_layers) if o.lora else None
    return TrainSettings(epochs=o.epochs, max_steps=steps or o.steps, batch_size=o.batch_size,
                         grad_accum=o.grad_accum, lr=o.lr, scheduler=o.scheduler, warmup_ratio=o.warmup_ratio,
                         max_grad_norm=o.max_grad_norm, gradient_checkpointing=o.gradient_checkpointing,
                         mixed_precision=o.mixed_precision, lora=lora, shuffle=True, seed=seed, logging="step",
                         save_every=o.checkpoint_every, save_total_limit=2, progress=True)


def examples_for(ts: TrainingSet, row: LaserVariant):
    return ts.oracle if row.reasoning == "oracle" else ts.examples


def fingerprint(cfg: LaserConfig, row: LaserVariant, settings: TrainSettings, ts: TrainingSet,
                model_path: str | Path) -> str:
    """What a checkpoint must share with the run resuming it: settings, loss, examples, prompt, base model."""
    folder = Path(model_path)
    marker = folder / "lab_model.json"
    ident = marker if marker.is_file() else folder / "config.json"
    model_id = ident.read_text() if folder.is_dir() else str(model_path)
    h = hashlib.sha256()
    h.update(json.dumps({"settings": asdict(settings), "latent": asdict(latent_settings(cfg, row)),
                         "prompt": cfg.prompt, "reasoning": row.reasoning}, sort_keys=True, default=str).encode())
    h.update(model_id.encode())
    for ex in examples_for(ts, row):
        key = asdict(ex)
        if not key["task"]:           # the default instruction: the bytes hashed before examples had a task
            del key["task"]
        h.update(json.dumps(key).encode())
    return h.hexdigest()


def train_variant(cfg: LaserConfig, name: str, ts: TrainingSet, *, model_path: str | Path,
                  adapters_dir: str | Path | None, seed: int, checkpoint_root: str | Path | None = None,
                  steps: int | None = None, run=None) -> FitResult:
    """Train variant ``name`` (``laser.rows.<name>``) and save its LoRA adapter to ``adapters_dir/name``.

    ``optim.launch: accelerate`` (paper profile): when :func:`lab.methods.laser.launched.launch_plan` says so, this
    process starts ``python -m lab.methods.laser.train`` under ``accelerate launch`` (one process per GPU, in-batch
    negatives gathered across them) and returns its log history as a :class:`FitResult` whose ``model`` is None.
    """
    import torch

    from lab.retrieval.laser_prompts import load_laser_prompt
    from lab.retrieval.latent_train import collator, loss_fn, prepare
    from lab.train import fit

    row = cfg.rows[name]
    if not row.train:
        raise ValueError(f"laser.rows.{name}: train is false (a zero-shot row has nothing to train)")
    if cfg.optim.launch == "accelerate":
        from lab.methods.laser import launched

        plan = launched.launch_plan(cfg)
        if plan.mode == "accelerate":
            return launched.train_launched(plan, cfg, name, ts, model_path=model_path, adapters_dir=adapters_dir,
                                           seed=seed, checkpoint_root=checkpoint_root, steps=steps, run=run)
    model, tok = load_base(model_path, cfg.optim.dtype)
    s = latent_settings(cfg, row)
    settings = train_settings(cfg, seed, steps)
    rows = prepare(tok, examples_for(ts, row), load_laser_prompt(cfg.prompt), s)
    result = fit(model, rows, collator(tok.pad_token_id), loss_fn(s, tok.eos_token_id), settings,
                 checkpoint_dir=Path(checkpoint_root) / name if checkpoint_root else None,
                 fingerprint=fingerprint(cfg, row, settings, ts, model_path), run=run, log_prefix="curve")
    main = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    if adapters_dir is not None and main:
        result.model.save_pretrained(Path(adapters_dir) / name)
        tok.save_pretrained(Path(adapters_dir) / name)
    return result


def losses(result: FitResult) -> list[dict[str, float]]:
    """Per-step ``{step, lr, loss, cl_latent, cl_explicit, kl, mid, soft_entropy}``."""
    return [{"step": int(r["step"]), "lr": float(r.get("learning_rate", 0.0)),
             **{p: float(r.get(p, 0.0)) for p in PARTS}} for r in result.records()]


def curves(results: dict[str, FitResult]) -> pd.DataFrame:
    rows = [{"variant": v, **r} for v, res in results.items() for r in losses(res)]
    return pd.DataFrame(rows, columns=["variant", "step", "lr", *PARTS])


def curve_endpoints(table: pd.DataFrame, k: int = 3) -> dict[str, dict[str, float]]:
    """Mean of each loss part over the first and last ``k`` steps, per variant."""
    out: dict[str, dict[str, float]] = {}
    for variant, g in table.groupby("variant", sort=False):
        g = g.sort_values("step")
        out[variant] = {f"{p}_{end}": float(f[p].mean()) for end, f in (("first", g.head(k)), ("last", g.tail(k)))
                        for p in PARTS}
        out[variant]["steps"] = float(g["step"].max())
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.methods.laser.train train --variant full --out DIR [--reasoning reasoning.csv]``."""
    from lab.methods.laser.data import read_reasoning, training_set
    from lab.models import setup_torch

    p = argparse.ArgumentParser(prog="python -m lab.methods.laser.train", description=main.__doc__)
    p.add_argument("command", choices=["train"])
    p.add_argument("--profile", default=None)
    p.add_argument("--params", default=None)
    p.add_argument("--variant", default="full")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--reasoning", default="outputs/laser_reasoning/reasoning.csv")
    p.add_argument("--steps", type=int, default=None)
    # what lab.methods.laser.launched hands over (the caller's exact config and examples, its seed, a result file)
    p.add_argument("--cfg", default=None, help="the laser section as JSON (instead of --profile/--params)")
    p.add_argument("--examples", default=None, help="training examples as JSONL (instead of building them)")
    p.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    p.add_argument("--result", default=None, help="rank 0 writes the Trainer's log history here (JSON)")
    p.add_argument("--checkpoints", default=None, help="checkpoint folder (default: laser.checkpoint_dir)")
    p.add_argument("--no-checkpoints", action="store_true", help="no resumable checkpoints (the caller had none)")
    args = p.parse_args(argv)
    if args.cfg:
        from lab.methods.laser.launched import load_cfg

        cfg = load_cfg(args.cfg)
    else:
        cfg = lab_config.load("laser", args.profile, args.params)
    seed = int(lab_config.read_params(args.params).get("seed", 0)) if args.seed is None else args.seed
    setup_torch(cfg.threads, seed)
    if args.examples:
        from lab.methods.laser.launched import read_examples

        ts = read_examples(args.examples)
    else:
        reasoning = read_reasoning(args.reasoning) if cfg.train.source == "trec" else {}   # hub rows carry theirs
        ts = training_set(cfg, args.data_dir, reasoning, seed=seed)
    res = train_variant(cfg, args.variant, ts, model_path=args.model or str(Path("models") / cfg.model_role),
                        adapters_dir=args.out or None, seed=seed,
                        checkpoint_root=None if args.no_checkpoints else args.checkpoints or cfg.checkpoint_dir,
                        steps=args.steps)
    from lab.train.launch import finish

    finish(args.result, res, losses(res), {"variant": args.variant, "examples": len(ts.examples)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
