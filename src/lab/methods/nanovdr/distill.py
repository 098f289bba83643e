"""NanoVDR distillation stage: one student per objective, trained on query text against the teacher's targets.

:func:`distill` trains one student under one objective (:mod:`lab.losses.distill`, batches and validation from
:mod:`lab.retrieval.distill`) with the one trainer (:func:`lab.train.fit`), from the index stage's artifacts
(:func:`lab.methods.nanovdr.index.load_index`). The recipe is NanoVDR's (model card: 20 epochs, lr 2e-4):
AdamW (weight decay 0.01), OneCycle with cosine annealing and 3% warm-up, gradient clipping at 1.0, the best
epoch by validation loss (or cosine, ``select_by``) kept; saved as safetensors; resumable per epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from lab.methods.nanovdr.config import objective_kwargs
from lab.methods.nanovdr.index import IndexArtifacts, load_index
from lab.paths import cache_dir, dumps_json

__all__ = ["objective_settings", "train_settings", "distill_data", "build_student", "distill"]


def objective_settings(cfg, objective: str):
    from lab.retrieval.distill import ObjectiveSettings

    return ObjectiveSettings(objective=objective, **objective_kwargs(cfg))


def train_settings(cfg, seed: int, progress: bool = True):
    """``nanovdr.train`` as :class:`lab.train.TrainSettings`: one log, one evaluation, one checkpoint per epoch."""
    from lab.train import TrainSettings

    t = cfg.train
    return TrainSettings(
        epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, scheduler="onecycle_cosine",
        warmup_ratio=t.warmup_pct, max_grad_norm=t.grad_clip, shuffle=True, seed=seed, logging="epoch",
        save_every="epoch", save_total_limit=1, evaluate=True, mixed_precision=t.mixed_precision,
        best_metric="val_loss" if t.select_by == "objective" else "val_cosine",
        greater_is_better=t.select_by == "cosine", progress=progress)


def build_student(cfg, dim: int, seed: int = 0):
    """The student :func:`distill` starts from: ``cfg.student`` (mean pooling) and a projector to the teacher's
    width ``dim``, drawn from ``seed`` (the report's ``student-untrained`` baseline is this, never trained)."""
    from lab.retrieval.dense import Encoder

    return Encoder.from_ref(cfg.student, out_dim=dim, projector_hidden=cfg.projector_hidden,
                            max_length=cfg.student_max_length, seed=seed)


def distill_data(art: IndexArtifacts):
    """Query texts + teacher targets (+ the training page pool's teacher embeddings and top-K). No page text."""
    from lab.retrieval.distill import DistillData

    return DistillData(
        train_texts=[q.text for q in art.queries["train"]], train_targets=art.query_emb["train"],
        val_texts=[q.text for q in art.queries["val"]], val_targets=art.query_emb["val"],
        doc_emb=art.page_emb["train"], train_topk=art.topk["train"], train_topk_scores=art.topk_scores["train"],
        val_topk=art.topk["val"], val_topk_scores=art.topk_scores["val"],
        train_positives=art.positives.get("train"), val_positives=art.positives.get("val"))


@contextlib.contextmanager
def _threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def distill(cfg, objective: str, out_path: str | Path, *, index_dir: str | Path | None = None, seed: int = 0,
            student=None, resume: bool = True, run=None, progress: bool = True, cache="default",
            stop_after: int | None = None) -> pd.DataFrame:
    """Train one student with ``objective``; save it to ``out_path`` (safetensors); return its learning curve
    (one row per epoch: train_loss, val_loss, val_cosine, lr, best_epoch).

    An interrupted call leaves its checkpoints under ``<LAB_CACHE>/nanovdr/resume/<key>`` (key = sha256 of
    settings, student and index fingerprint) and the next identical call resumes from the last complete epoch.
    With a frozen backbone the trainer's module is the projector alone, fed the student's pooled query states
    from ``cache`` (an EmbeddingCache; ``None``: computed), so six objectives share one backbone pass.
    ``run``: the stage (or objective) tracking run, which receives the per-epoch curve as ``train.*``.
    """
    import torch

    from lab.retrieval import distill as D
    from lab.retrieval.dense import EmbeddingCache, model_fingerprint
    from lab.train import fit

    if cfg.train.launch == "accelerate" and student is None:    # paper profile: one process per GPU
        from lab.methods.nanovdr import launched

        plan = launched.launch_plan(cfg)
        if plan.mode == "accelerate":
            return launched.distill_launched(plan, cfg, objective, out_path, index_dir=index_dir, seed=seed,
                                             resume=resume, progress=progress, stop_after=stop_after)
    art = load_index(index_dir or cfg.index_dir)
    obj, settings = objective_settings(cfg, objective), train_settings(cfg, seed, progress)
    if D.needs_pages(obj.objective) and art.page_emb.get("train") is None:
        raise ValueError(f"objective {objective!r} needs teacher page embeddings")
    student = student or build_student(cfg, art.dim, seed)
    if student.projector is None or student.dim != art.dim:
        raise ValueError(f"student width {student.dim} != teacher width {art.dim}")
    frozen = not cfg.train.finetune_backbone
    key = hashlib.sha256(dumps_json({"settings": asdict(settings), "objective": asdict(obj), "frozen": frozen,
                                     "student": student.settings(), "index": art.manifest["fingerprint"]}).encode())
    ckpt = cache_dir("nanovdr", "resume") / key.hexdigest()[:24]
    if not resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    t0 = time.perf_counter()
    data = distill_data(art)
    for p in student.backbone.parameters():
        p.requires_grad_(not frozen)
    features = (None, None)
    if frozen:      # pooled backbone states once, reused every epoch and by every objective
        cache = EmbeddingCache() if cache == "default" else cache

        def pooled(texts):
            if cache is None:
                return student.encode_pooled(texts, progress=progress, desc="student backbone")
            return cache.get_or_compute(
                EmbeddingCache.key(f"pooled:{model_fingerprint(student.ref)}", texts, student.instruction,
                                   {"max_length": student.max_length}),
                lambda: student.encode_pooled(texts, progress=progress, desc="student backbone"), kind="student")

        features = tuple(torch.from_numpy(pooled(t)) for t in (data.train_texts, data.val_texts))   # [N, H], [V, H]
    module = student.projector if frozen else student
    # Projector-only steps are tiny matmuls: one thread is as fast and, on shared cores, avoids OpenMP barrier
    # stalls (measured 0.4 s vs 24 s per epoch with 2 threads while other processes ran).
    threads = cfg.train.num_threads or (1 if frozen else torch.get_num_threads())
    with _threads(threads):
        result = fit(module, list(range(len(data.train_texts))), D.collator(student, data.train_texts, features[0]),
                     D.loss_fn(student, data, obj), settings, checkpoint_dir=ckpt, fingerprint=key.hexdigest(),
                     evaluator=lambda m: D.validate(m, student, data, obj, features[1], cfg.train.batch_size),
                     run=run, log_prefix="train", stop_after=stop_after)
    curve = _curve(result, objective, settings, len(data.train_texts), t0)
    if stop_after is not None and result.resumed_from + stop_after < settings.steps_for(len(data.train_texts)):
        return curve                                                            # interrupted: keep ckpt
    student.eval()
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:       # under accelerate launch: one writer
        student.save(out_path, parts="all" if not frozen else "projector")
    shutil.rmtree(ckpt, ignore_errors=True)
    return curve


def _curve(result, objective: str, settings, n: int, t0: float) -> pd.DataFrame:
    """One row per epoch from the trainer's history (train log + evaluation at each epoch end)."""
    per_epoch = settings.steps_for(n) // max(1, int(settings.epochs))
    train = {int(round(r["epoch"])): r for r in result.records("train")}
    rows = []
    for r in result.records("eval"):
        epoch = int(round(r["epoch"]))
        rows.append({"epoch": epoch, "train_loss": train.get(epoch, {}).get("loss", float("nan")),
                     "val_loss": r["eval_val_loss"], "val_cosine": r["eval_val_cosine"],
                     "lr": train.get(epoch, {}).get("learning_rate", float("nan"))})
    best_epoch = result.best_step // max(1, per_epoch)
    curve = pd.DataFrame(rows, columns=["epoch", "train_loss", "val_loss", "val_cosine", "lr"])
    curve["best_epoch"] = [_best_so_far(rows, i, settings) for i in range(len(rows))]
    curve = curve.assign(objective=objective)
    curve.attrs.update(best_epoch=best_epoch, best_score=result.best_metric,
                       resumed_from=result.resumed_from // max(1, per_epoch), seconds=time.perf_counter() - t0)
    return curve


def _best_so_far(rows: list[dict], i: int, settings) -> int:
    key = "val_cosine" if settings.greater_is_better else "val_loss"
    sign = -1.0 if settings.greater_is_better else 1.0
    best = min(range(i + 1), key=lambda j: (sign * rows[j][key], j))
    return rows[best]["epoch"]


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.methods.nanovdr.distill --cfg CFG.json --objective O --out S.safetensors --result R.json``: one
    student, the command :mod:`lab.methods.nanovdr.launched` runs under ``accelerate launch``; rank 0 writes the
    learning curve to ``--result``."""
    import argparse

    from lab.methods.nanovdr import launched

    p = argparse.ArgumentParser(prog="python -m lab.methods.nanovdr.distill", description=main.__doc__)
    p.add_argument("--cfg", required=True)
    p.add_argument("--objective", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--index-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--result", required=True)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stop-after", type=int, default=None)
    a = p.parse_args(argv)
    curve = distill(launched.load_cfg(a.cfg), a.objective, a.out, index_dir=a.index_dir, seed=a.seed,
                    resume=not a.no_resume, progress=not a.no_progress, stop_after=a.stop_after)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        launched.write_result(a.result, curve)
    from lab.eval.shard import close

    close()                                 # a gloo group alive at exit can SIGABRT the process (see close)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
