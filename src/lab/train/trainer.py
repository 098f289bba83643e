"""The one trainer: :func:`fit` runs ``transformers.Trainer`` on what a method supplies.

A method supplies a dataset (anything with ``len`` and ``[i]``), a collator (list of items -> batch dict of
tensors) and ``loss_fn(model, batch) -> Tensor | {"loss": Tensor, <part>: Tensor, ...}``; optionally an
``evaluator(model) -> {metric: float}`` run every epoch. Everything else comes from here, as in
sentence-transformers' ``SentenceTransformerTrainer``:

* device placement, ``accelerate launch`` / torchrun (DDP; DeepSpeed ZeRO-3 via ``settings.deepspeed``);
* mixed precision by autocast with **fp32 master weights** (:func:`lab.train.precision.fp32_master`);
* gradient accumulation, clipping, the schedulers (HF's linear/cosine/constant with warm-up, and
  ``onecycle_cosine`` = ``torch.optim.lr_scheduler.OneCycleLR`` with cosine annealing, NanoVDR's),
  NEFTune, gradient checkpointing, LoRA through peft;
* resumable checkpoints: HF's ``checkpoint-N`` folders under ``checkpoint_dir``, each counted only once
  its ``lab_checkpoint.json`` marker (the run's settings fingerprint) is written, atomically, after the
  folder is complete. A folder without the marker (killed mid-write) or with another fingerprint (other
  data or settings) is deleted before training, so a run only ever resumes its own complete state;
* the data order: a seeded permutation per epoch (:class:`SeededSampler`), identical in every process, so
  ``N`` processes with batch ``b`` see exactly the examples one process with batch ``N*b`` sees;
* logging through the stage's :mod:`lab.tracking` run (HF's own MLflow callback is off: one run per stage),
  the loss parts a method returns averaged like the loss, and best-checkpoint selection on an evaluator
  metric (``load_best_model_at_end``).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback, TrainingArguments

from lab.paths import atomic_path, dumps_json
from lab.train.settings import FitResult, TrainSettings

__all__ = ["fit", "training_arguments", "SeededSampler", "LabTrainer", "TrackingCallback", "MARKER",
           "complete_checkpoints"]

MARKER = "lab_checkpoint.json"
_PREFIX = "checkpoint-"


class SeededSampler(Sampler[int]):
    """Indices ``0..n-1``: in order, or permuted by ``(seed, epoch)``; the Trainer calls :meth:`set_epoch`."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())


# ------------------------------------------------------------------------------------------ arguments
def training_arguments(settings: TrainSettings, output_dir: str | Path, n_examples: int) -> TrainingArguments:
    """``TrainingArguments`` for ``settings`` (one place maps lab's names onto HF's)."""
    from lab.train.distributed import deepspeed_config

    s = settings
    cuda = torch.cuda.is_available()
    if s.mixed_precision == "fp16" and not cuda:
        raise ValueError("mixed_precision fp16 needs a CUDA device; use bf16 (CPU autocast) or fp32")
    total = s.steps_for(n_examples, _world_size())
    by_epoch = s.evaluate or s.save_every == "epoch"
    save_steps = s.save_every if isinstance(s.save_every, int) and s.save_every > 0 else total
    hf_sched = {"onecycle_cosine": "constant"}.get(s.scheduler, s.scheduler)   # onecycle: LabTrainer builds it
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps or -1,
        learning_rate=s.lr,
        weight_decay=s.weight_decay,
        optim="adamw_torch",
        lr_scheduler_type=hf_sched,
        warmup_steps=s.warmup_steps if s.warmup_steps else (s.warmup_ratio if s.scheduler != "onecycle_cosine" else 0),
        max_grad_norm=s.max_grad_norm if s.max_grad_norm > 0 else 0.0,
        neftune_noise_alpha=s.neftune_alpha or None,
        activation_checkpointing=s.gradient_checkpointing,
        bf16=s.mixed_precision == "bf16",
        fp16=s.mixed_precision == "fp16",
        use_cpu=not cuda,
        deepspeed=deepspeed_config(s.deepspeed) if s.deepspeed else None,
        seed=s.seed,
        data_seed=s.seed,
        logging_strategy="epoch" if s.logging == "epoch" else "steps",
        logging_steps=1,
        save_strategy="epoch" if by_epoch else "steps",
        save_steps=save_steps,
        save_total_limit=s.save_total_limit,
        eval_strategy="epoch" if s.evaluate else "no",
        load_best_model_at_end=bool(s.best_metric),
        metric_for_best_model=f"eval_{s.best_metric}" if s.best_metric else None,
        greater_is_better=s.greater_is_better if s.best_metric else None,
        report_to="none",
        disable_tqdm=not s.progress,
        remove_unused_columns=False,
        dataloader_pin_memory=cuda,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


# ------------------------------------------------------------------------------------------ checkpoints
def _step(folder: Path) -> int:
    try:
        return int(folder.name[len(_PREFIX):])
    except ValueError:
        return -1


def complete_checkpoints(root: str | Path, fingerprint: str) -> list[Path]:
    """``checkpoint-N`` folders under ``root`` whose marker carries ``fingerprint``, oldest first."""
    out = []
    for folder in Path(root).glob(f"{_PREFIX}*"):
        marker = folder / MARKER
        if folder.is_dir() and _step(folder) >= 0 and marker.is_file():
            try:
                if json.loads(marker.read_text()).get("fingerprint") == fingerprint:
                    out.append(folder)
            except ValueError:
                pass
    return sorted(out, key=_step)


def _clean(root: Path, fingerprint: str) -> Path | None:
    """Delete incomplete or foreign checkpoints; return the latest complete one of this fingerprint."""
    keep = complete_checkpoints(root, fingerprint)
    for folder in root.glob(f"{_PREFIX}*"):
        if folder not in keep:
            shutil.rmtree(folder, ignore_errors=True)
    return keep[-1] if keep else None


class _MarkerCallback(TrainerCallback):
    """After HF wrote ``checkpoint-N`` completely, write its marker (atomically): only then does it count."""

    def __init__(self, fingerprint: str):
        self.fingerprint = fingerprint

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{_PREFIX}{state.global_step}"
            if folder.is_dir():
                with atomic_path(folder / MARKER) as tmp:
                    tmp.write_text(dumps_json({"fingerprint": self.fingerprint, "step": state.global_step}))
        return control


class _StopAfter(TrainerCallback):
    """Leave after ``n`` optimizer steps of this call, saving first: an interruption, for tests."""

    def __init__(self, n: int):
        self.n, self.done = n, 0

    def on_step_end(self, args, state, control, **kwargs):
        self.done += 1
        if self.done >= self.n:
            control.should_save = True
            control.should_training_stop = True
        return control


class TrackingCallback(TrainerCallback):
    """Every Trainer log record to the stage's MLflow run as stepped metrics ``<prefix>.<key>``."""

    def __init__(self, run, prefix: str):
        self.run, self.prefix = run, prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            values = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(v)}
            if values:
                self.run.log_metrics({self.prefix: values}, step=int(state.global_step))
        return control


# --------------------------------------------------------------------------------------------- trainer
class LabTrainer(Trainer):
    """``Trainer`` whose loss, data order and evaluation come from the method (see the module docstring)."""

    loss_is_scaled_for_ga = False          # loss_fn returns a mean per micro-batch: HF divides by accumulation

    def __init__(self, *args, loss_fn: Callable, evaluator: Callable | None = None, settings: TrainSettings,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn, self.evaluator, self.lab_settings = loss_fn, evaluator, settings
        self.model_accepts_loss_kwargs = False      # no num_items_in_batch: losses are per-micro-batch means
        if not settings.progress:                    # no bar means quiet: drop the log printer too
            from transformers.trainer_callback import PrinterCallback

            self.remove_callback(PrinterCallback)
        self._parts: dict[str, float] = {}
        self._micro = 0

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        # accelerate autocasts only model.forward; the method's loss_fn may call submodules or compute scores
        # outside it (FIRST's identifier logits, NanoVDR's projector), so the whole loss runs under autocast.
        import contextlib

        return self.accelerator.autocast() if self.accelerator.native_amp else contextlib.nullcontext()

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return SeededSampler(len(dataset), self.lab_settings.seed, self.lab_settings.shuffle)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.loss_fn(model, inputs)
        if isinstance(out, Mapping):
            loss = out["loss"]
            for k, v in out.items():
                if k != "loss":
                    self._parts[k] = self._parts.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
            self._micro += 1
        else:
            loss = out
        return (loss, None) if return_outputs else loss

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lab_settings.scheduler != "onecycle_cosine":
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            # NanoVDR (model card): OneCycle, cosine annealing, pct_start = warm-up share (3%), torch defaults
            # div_factor 25 / final_div_factor 1e4 (starts at lr/25, ends at lr/2.5e5).
            self.lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer or self.optimizer, max_lr=self.lab_settings.lr, total_steps=max(1, num_training_steps),
                pct_start=self.lab_settings.warmup_ratio or 0.3, anneal_strategy="cos")
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._micro:
            names = sorted(self._parts)
            vals = torch.tensor([self._parts[k] / self._micro for k in names], device=self.args.device)   # [P]
            if self.args.world_size > 1:
                vals = self.accelerator.gather(vals[None]).mean(0)                                        # [P]
            logs.update({k: float(v) for k, v in zip(names, vals.tolist())})
            self._parts, self._micro = {}, 0
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if self.evaluator is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        model = self.accelerator.unwrap_model(self.model)
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), self.compute_loss_context_manager():
                raw = self.evaluator(model)
        finally:
            model.train(was)
        metrics = {f"{metric_key_prefix}_{k}": float(v) for k, v in raw.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


# ------------------------------------------------------------------------------------------------- fit
def fit(model, train_dataset: Sequence[Any], collator: Callable, loss_fn: Callable, settings: TrainSettings, *,
        checkpoint_dir: str | Path | None = None, fingerprint: str = "", evaluator: Callable | None = None,
        run=None, log_prefix: str = "train", stop_after: int | None = None,
        callbacks: Sequence[TrainerCallback] = ()) -> FitResult:
    """Train ``model`` on ``train_dataset``; returns the trained (unwrapped) model and the log history.

    With ``checkpoint_dir`` the run resumes from the latest complete checkpoint written for the same
    ``fingerprint`` (a hash of everything that determines the result: settings, data, base model). Without
    it checkpoints go to a temporary folder that is removed at the end.
    """
    from transformers import set_seed

    from lab.train.lora import apply_lora
    from lab.train.precision import fp32_master

    if len(train_dataset) == 0:
        raise ValueError("no training examples")
    set_seed(settings.seed)                          # LoRA's A matrices are drawn from torch's RNG
    if settings.lora is not None:
        model = apply_lora(model, settings.lora, gradient_checkpointing=settings.gradient_checkpointing)
    if not settings.deepspeed:                       # DeepSpeed keeps its own fp32 master copy
        fp32_master(model)
    tmp = None
    if checkpoint_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="lab-train-"))
    root = Path(checkpoint_dir) if checkpoint_dir is not None else tmp
    args = training_arguments(settings, root, len(train_dataset))
    if args.process_index == 0:
        root.mkdir(parents=True, exist_ok=True)
        _clean(root, fingerprint)
    if args.world_size > 1:
        torch.distributed.barrier()                  # every process sees the cleaned folder
    found = complete_checkpoints(root, fingerprint)
    resume = found[-1] if found else None
    cbs = [_MarkerCallback(fingerprint), *callbacks]
    if run is not None:
        cbs.append(TrackingCallback(run, log_prefix))
    if stop_after is not None:
        cbs.append(_StopAfter(stop_after))
    trainer = LabTrainer(model=model, args=args, data_collator=collator, train_dataset=train_dataset,
                         eval_dataset=[0] if evaluator is not None else None, callbacks=cbs,
                         loss_fn=loss_fn, evaluator=evaluator, settings=settings)
    resumed_from = json.loads((resume / MARKER).read_text())["step"] if resume is not None else 0
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    state = trainer.state
    trained = trainer.accelerator.unwrap_model(trainer.model)
    trained.eval()
    best = state.best_model_checkpoint
    last = complete_checkpoints(root, fingerprint)
    result = FitResult(trained, list(state.log_history), resumed_from,
                       best_step=_step(Path(best)) if best else state.global_step,
                       best_metric=state.best_metric, checkpoint=str(last[-1]) if last else "")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        result.checkpoint = ""
    return result
