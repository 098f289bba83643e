"""What one training run is configured by: plain frozen dataclasses, no ML imports.

A method maps its own ``params.yaml`` section (``first.optim``, ``nanovdr.train``, ...) onto
:class:`TrainSettings`; :func:`lab.train.training_arguments` turns that into ``transformers.TrainingArguments``.
Keeping this module free of torch/transformers lets a method's schema and tests reason about settings
(fingerprints, step counts) without loading the ML stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

SCHEDULERS = ("linear", "cosine", "constant", "onecycle_cosine")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA on ``targets``; ``top_layers`` > 0 restricts it to the top N decoder layers (backward stops
    below them, which is what makes the 135M smoke model's step 2.7 s instead of ~6 s on 2 cores)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    top_layers: int = 0
    task_type: str = "CAUSAL_LM"


@dataclass(frozen=True)
class TrainSettings:
    """One run of :func:`lab.train.fit`.

    ``batch_size`` is per process; the global batch is ``batch_size * grad_accum * world_size``.
    ``max_steps`` > 0 wins over ``epochs``. ``save_every``: ``"epoch"``, an int number of optimizer steps,
    or 0 (only at the end). ``evaluate``: run the method's evaluator every epoch and keep the best
    checkpoint by ``best_metric`` (a key the evaluator returns).
    """

    epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1.0e-4
    weight_decay: float = 0.0
    scheduler: Literal["linear", "cosine", "constant", "onecycle_cosine"] = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0          # used when warmup_steps is 0 (OneCycle: its pct_start)
    max_grad_norm: float = 0.0         # 0 = no clipping
    neftune_alpha: float = 0.0         # NEFTune (Jain et al. 2023) noise on input embeddings; 0 = off
    gradient_checkpointing: bool = False
    mixed_precision: Literal["fp32", "bf16", "fp16"] = "fp32"   # autocast; master weights stay fp32
    deepspeed: str = ""                # "" | "zero3" (lab's ZeRO-3 config) | a path to a DeepSpeed JSON
    lora: LoraSettings | None = None   # None = full fine-tuning of every parameter that requires grad
    shuffle: bool = True
    seed: int = 0
    logging: Literal["step", "epoch"] = "step"
    save_every: int | Literal["epoch"] = 0
    save_total_limit: int = 2
    evaluate: bool = False
    best_metric: str = ""              # evaluator key; "" = keep the last weights
    greater_is_better: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler {self.scheduler!r}: expected one of {SCHEDULERS}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision {self.mixed_precision!r}: expected one of {PRECISIONS}")
        if self.best_metric and not self.evaluate:
            raise ValueError("best_metric needs evaluate=True")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")

    def steps_for(self, n_examples: int, world_size: int = 1) -> int:
        """Optimizer steps this run takes over ``n_examples`` (the Trainer's own arithmetic)."""
        if self.max_steps:
            return self.max_steps
        batches = math.ceil(n_examples / (self.batch_size * world_size))      # per process, per epoch
        return max(1, math.ceil(self.epochs * max(1, math.ceil(batches / self.grad_accum))))


@dataclass
class FitResult:
    model: object                                   # the trained model (unwrapped; a PeftModel with LoRA)
    history: list[dict] = field(default_factory=list)   # the Trainer's log history (train and eval records)
    resumed_from: int = 0                           # optimizer steps already done by the checkpoint resumed
    best_step: int = 0                              # step of the kept checkpoint (best_metric), else last
    best_metric: float | None = None
    checkpoint: str = ""                            # folder of the last complete checkpoint

    def records(self, kind: str = "train") -> list[dict]:
        """``train``: per-log records holding ``loss``; ``eval``: records holding ``eval_*`` keys."""
        if kind == "train":
            return [r for r in self.history if "loss" in r and not any(k.startswith("eval_") for k in r)]
        return [r for r in self.history if any(k.startswith("eval_") for k in r)]
