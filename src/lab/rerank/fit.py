"""The FIRST training loop with resumable checkpoints, cosine/linear warm-up schedules, NEFTune and accelerate.

Same losses and batches as :func:`lab.rerank.train.train` (``compute_losses``, ``collate``, seeded
micro-batch order), plus what a long run needs:

* **checkpoints** every ``checkpoint_every`` steps and at the end, into one folder replaced atomically:
  ``trainable.safetensors`` (the parameters being trained: the LoRA adapter, or the whole model),
  ``optimizer.pt`` (AdamW state, loaded with ``weights_only=True``), ``rng.safetensors`` (torch's CPU RNG,
  which NEFTune and dropout draw from) and ``state.json`` (step, per-step losses, fingerprint). A run
  started with the same fingerprint resumes after the last saved step: it skips the micro-batches
  already consumed, so an interrupted run ends with the same weights as an uninterrupted one. A
  different fingerprint (other data or settings) starts over.
* **schedules**: linear decay, cosine (``transformers``' ``get_cosine_schedule_with_warmup`` formula) or
  constant, each after ``warmup_steps`` of linear warm-up.
* **NEFTune** (Jain et al. 2023, "NEFTune: noisy embeddings improve instruction finetuning", §2):
  uniform noise in ``±alpha / sqrt(L * d)`` added to the input embeddings in training mode only, as the
  official FIRST trainer does (``scripts/utils/train_utils.py``).
* **accelerate**: with an ``Accelerator`` the model and optimizer are prepared (DDP, mixed precision),
  each process takes every ``num_processes``-th micro-batch, and only the main process writes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch

from lab.paths import atomic_path, dumps_json
from lab.rerank.prompts import ListwisePrompt
from lab.rerank.train import RankExample, TrainConfig, TrainResult, _micro_batches, _prepare, collate, compute_losses

__all__ = ["FitOptions", "fit", "lr_factor", "add_neftune", "read_checkpoint_state"]


@dataclass
class FitOptions:
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    neftune_alpha: float = 0.0
    lora_layers: int = 0               # LoRA on the top N decoder layers only (0 = all): backward stops below
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 0          # 0: checkpoint only after the last step
    fingerprint: str = ""              # a checkpoint written under another fingerprint is not resumed
    stop_after: int | None = None      # leave after this many steps of this call (an interruption, for tests)
    on_step: Callable[[dict], None] | None = None
    accelerator: Any = None


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown scheduler {kind!r}")


def add_neftune(model, alpha: float):
    """Register NEFTune noise on ``model``'s input embeddings; returns the hook handle (``.remove()``)."""
    emb = model.get_input_embeddings()

    def hook(module, inputs, output):
        if not module.training or alpha <= 0:
            return output
        mag = alpha / math.sqrt(output.shape[-2] * output.shape[-1])
        return output + torch.zeros_like(output).uniform_(-mag, mag)

    return emb.register_forward_hook(hook)


# ------------------------------------------------------------------------------------ checkpoints
def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def read_checkpoint_state(folder: str | Path) -> dict | None:
    path = Path(folder) / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _save(folder: Path, model, opt, step: int, losses: list, fingerprint: str) -> None:
    from safetensors.torch import save_file

    with atomic_path(folder, is_dir=True) as tmp:
        save_file({n: p.detach().contiguous().cpu() for n, p in _trainable(model).items()},
                  str(tmp / "trainable.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(dumps_json({"step": step, "losses": losses, "fingerprint": fingerprint}))


def _load(folder: Path, model, opt) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(folder / "trainable.safetensors"))
    params = _trainable(model)
    if set(weights) != set(params):
        raise ValueError(f"{folder}: checkpoint parameters do not match the model being trained")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device, p.dtype))
    opt.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["cpu"])


# ----------------------------------------------------------------------------------------- loop
def _with_lora(model, cfg: TrainConfig, top_layers: int = 0):
    if not cfg.lora:
        return model
    from peft import LoraConfig, get_peft_model

    n = model.config.num_hidden_layers
    layers = list(range(max(0, n - top_layers), n)) if top_layers else None
    return get_peft_model(model, LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, layers_to_transform=layers,
        target_modules=list(cfg.lora_targets), bias="none", task_type="CAUSAL_LM"))


def fit(model, tokenizer, examples: Sequence[RankExample], cfg: TrainConfig, opts: FitOptions | None = None,
        prompt: ListwisePrompt | None = None) -> TrainResult:
    """Train ``cfg.steps`` optimizer steps (``batch_size * grad_accum`` examples each, per process).

    Returns the trained (unwrapped) model and the per-step losses of the whole run, resumed steps
    included. ``result.losses[i]`` has ``step``, ``lr``, ``loss``, ``lm``, ``rank`` and ``seconds``.
    """
    opts = opts or FitOptions()
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(cfg.seed)
    encoded, ident, pad_id = _prepare(model, tokenizer, examples, cfg, prompt)
    model = _with_lora(model, cfg, opts.lora_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps, opts.scheduler))
    acc = opts.accelerator
    world, rank, main = (acc.num_processes, acc.process_index, acc.is_main_process) if acc else (1, 0, True)
    folder = Path(opts.checkpoint_dir) if opts.checkpoint_dir else None
    start, losses = 0, []
    state = read_checkpoint_state(folder) if folder else None
    if state and state.get("fingerprint") == opts.fingerprint and 0 < state["step"] <= cfg.steps:
        _load(folder, model, opt)
        start, losses = int(state["step"]), list(state["losses"])
        sched.last_epoch = start                      # the schedule continues where the saved run stopped
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base * lr_factor(start, cfg.steps, cfg.warmup_steps, opts.scheduler)
    hook = add_neftune(model, opts.neftune_alpha) if opts.neftune_alpha > 0 else None
    train_model = model
    if acc:
        train_model, opt = acc.prepare(model, opt)
    batches = _micro_batches(len(encoded), cfg)
    for _ in range(start * cfg.grad_accum * world):     # the micro-batches the saved steps consumed
        next(batches)
    train_model.train()
    done = 0
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        parts_sum = {"loss": 0.0, "lm": 0.0, "rank": 0.0}
        for _ in range(cfg.grad_accum):
            mine = [next(batches) for _ in range(world)][rank]
            batch = collate([encoded[i] for i in mine], pad_id)
            if acc:
                with acc.autocast():
                    parts = compute_losses(train_model, batch, ident, cfg)
                acc.backward(parts["loss"] / cfg.grad_accum)
            else:
                parts = compute_losses(train_model, batch, ident, cfg)
                (parts["loss"] / cfg.grad_accum).backward()
            for k in parts_sum:
                parts_sum[k] += float(parts[k].detach()) / cfg.grad_accum
        if cfg.max_grad_norm:
            (acc.clip_grad_norm_ if acc else torch.nn.utils.clip_grad_norm_)(params, cfg.max_grad_norm)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        record = {"step": step + 1, "lr": lr, **parts_sum, "seconds": round(time.perf_counter() - t0, 3)}
        losses.append(record)
        if opts.on_step and main:
            opts.on_step(record)
        done += 1
        last = step + 1 == cfg.steps
        interrupted = opts.stop_after is not None and done >= opts.stop_after
        if folder and (last or interrupted or (opts.checkpoint_every and (step + 1) % opts.checkpoint_every == 0)):
            if acc:
                acc.wait_for_everyone()
            if main:
                _save(folder, acc.unwrap_model(train_model) if acc else model, opt, step + 1, losses,
                      opts.fingerprint)
        if interrupted and not last:
            break
    if hook is not None:
        hook.remove()
    model = acc.unwrap_model(train_model) if acc else model
    model.eval()
    return TrainResult(model, losses)
