"""LaSER training under ``accelerate launch`` (paper profile, ``laser.optim.launch: accelerate``), as FIRST's.

:func:`lab.methods.laser.train.train_variant` hands over here when :func:`launch_plan` says ``accelerate``: the
config and the training examples are written as JSON (the launched processes train exactly what the caller holds),
``python -m lab.methods.laser.train train --cfg ... --examples ...`` runs under ``accelerate launch`` (DDP over the
GPUs; :func:`lab.retrieval.latent_train.loss_fn` gathers every process's vectors, so all processes' documents are
in-batch negatives), rank 0 saves the adapter and writes the Trainer's log history, and this process reads it back
as a :class:`lab.train.FitResult` without a model (the adapter is on disk). Imports no other module of this paper but
the schema (no circle with ``train``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from lab import config as lab_config
from lab.methods.laser.config import SCHEMA
from lab.train import FitResult, launch

__all__ = ["launch_plan", "train_launched", "write_examples", "read_examples", "load_cfg"]


def launch_plan(cfg, profile: str | None = None, **machine) -> launch.LaunchPlan:
    """The launch decision for ``laser.optim`` (``machine``: ``gpus=`` / ``env=`` for tests)."""
    o = cfg.optim
    return launch.plan(profile or lab_config.active_profile(), launch=o.launch, mixed_precision=o.mixed_precision,
                       **machine)


def load_cfg(path: str | Path):
    return lab_config.build(SCHEMA, json.loads(Path(path).read_text()), str(path))


def write_examples(path: str | Path, ts) -> None:
    """``ts`` (a :class:`lab.methods.laser.data.TrainingSet`) as JSON lines: example, oracle example and qid."""
    with open(path, "w") as f:
        for ex, orc, qid in zip(ts.examples, ts.oracle, ts.qids, strict=True):
            f.write(json.dumps({"example": asdict(ex), "oracle": asdict(orc), "qid": qid}) + "\n")


def read_examples(path: str | Path):
    from lab.methods.laser.data import TrainingSet
    from lab.retrieval.latent_train import LaserExample

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return TrainingSet([LaserExample(**r["example"]) for r in rows], [LaserExample(**r["oracle"]) for r in rows],
                       [r["qid"] for r in rows])


def train_launched(plan: launch.LaunchPlan, cfg, variant: str, ts, *, model_path, adapters_dir, seed: int,
                   checkpoint_root=None, steps: int | None = None, run=None) -> FitResult:
    """One variant under ``accelerate launch``; ``run`` gets the per-step curve (``curve.*``) replayed from the
    launched Trainer's log history, as the in-process run logs it."""
    with tempfile.TemporaryDirectory(prefix="laser-launch-") as tmp:
        cfg_file, ex_file, result = Path(tmp) / "cfg.json", Path(tmp) / "examples.jsonl", Path(tmp) / "result.json"
        cfg_file.write_text(json.dumps(lab_config.as_plain(cfg)))
        write_examples(ex_file, ts)
        args = launch.train_args(cfg_file, ex_file, result, variant=variant, model_path=model_path, seed=seed,
                                 adapters_dir=adapters_dir, checkpoint_root=checkpoint_root, steps=steps)
        launch.run(plan, "lab.methods.laser.train", args)
        res = launch.read_result(result)
    launch.replay_curve(run, res.history)
    return res
