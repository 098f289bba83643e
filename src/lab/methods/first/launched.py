"""FIRST training under ``accelerate launch`` (paper profile, ``first.optim.launch: accelerate``).

:func:`lab.methods.first.train.train_variant` hands over here when :func:`launch_plan` says ``accelerate``: the
config and the training windows are written as JSON (so the launched processes train exactly what the caller
holds, overrides and a custom training set included), ``python -m lab.methods.first.train train --cfg ...
--examples ...`` runs under ``accelerate launch`` (DDP over the GPUs, DeepSpeed ZeRO-3 through the Trainer's JSON
with ``optim.deepspeed: zero3``), rank 0 saves the adapter/model and writes the Trainer's log history, and this
process reads it back as a :class:`lab.train.FitResult` without a model (the weights are on disk). Imports no other
module of this paper but the schema (no circle with ``train``).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Sequence

from lab import config as lab_config
from lab.methods.first.config import SCHEMA
from lab.train import FitResult, launch

__all__ = ["launch_plan", "train_launched", "write_examples", "read_examples", "write_result", "read_result",
           "load_cfg"]


def launch_plan(cfg, profile: str | None = None, **machine) -> launch.LaunchPlan:
    """The launch decision for ``first.optim`` (``machine``: ``gpus=`` / ``env=`` for tests)."""
    profile = profile or lab_config.active_profile()
    o = cfg.optim
    return launch.plan(profile, launch=o.launch, deepspeed=o.deepspeed, mixed_precision=o.mixed_precision, **machine)


def load_cfg(path: str | Path):
    return lab_config.build(SCHEMA, json.loads(Path(path).read_text()), str(path))


def write_examples(path: str | Path, examples: Sequence, qids: Sequence[str], kinds: Sequence[str]) -> None:
    with open(path, "w") as f:
        for ex, qid, kind in zip(examples, qids, kinds, strict=True):
            f.write(json.dumps({"query": ex.query, "passages": ex.passages, "ranks": ex.ranks,
                                "relevance": ex.relevance, "qid": qid, "kind": kind}) + "\n")


def read_examples(path: str | Path) -> tuple[list, list[str], list[str]]:
    from lab.rerank.train import RankExample

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return ([RankExample(r["query"], r["passages"], r["ranks"], r["relevance"]) for r in rows],
            [r["qid"] for r in rows], [r["kind"] for r in rows])


def write_result(path: str | Path, result: FitResult) -> None:
    from lab.paths import write_json

    write_json(Path(path), {"history": result.history, "resumed_from": result.resumed_from,
                            "best_step": result.best_step, "best_metric": result.best_metric,
                            "checkpoint": result.checkpoint})


def read_result(path: str | Path) -> FitResult:
    data = json.loads(Path(path).read_text())
    return FitResult(model=None, **data)


def train_launched(plan: launch.LaunchPlan, cfg, variant: str, ts, *, model_path, adapters_dir, seed: int,
                   checkpoint_root=None, stop_after: int | None = None, steps: int | None = None,
                   run=None) -> FitResult:
    """One variant under ``accelerate launch``; ``run`` gets the per-step curve (``curve.<variant>.*``) replayed
    from the launched Trainer's log history, as the in-process run logs it."""
    with tempfile.TemporaryDirectory(prefix="first-launch-") as tmp:
        cfg_file, ex_file, result = Path(tmp) / "cfg.json", Path(tmp) / "examples.jsonl", Path(tmp) / "result.json"
        cfg_file.write_text(json.dumps(lab_config.as_plain(cfg)))
        write_examples(ex_file, ts.examples, ts.qids, ts.kinds)
        args = ["train", "--cfg", str(cfg_file), "--examples", str(ex_file), "--variant", variant,
                "--model", str(Path(model_path).resolve()), "--seed", str(seed), "--result", str(result),
                "--out", str(Path(adapters_dir).resolve()) if adapters_dir is not None else ""]
        args += ["--checkpoints", str(Path(checkpoint_root).resolve())] if checkpoint_root else ["--no-checkpoints"]
        args += [] if steps is None else ["--steps", str(steps)]
        args += [] if stop_after is None else ["--stop-after", str(stop_after)]
        launch.run(plan, "lab.methods.first.train", args)
        res = read_result(result)
    if run is not None:
        for r in res.history:
            values = {k: float(v) for k, v in r.items()
                      if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}
            if values and "step" in r:
                run.log_metrics({f"curve.{variant}": values}, step=int(r["step"]))
    return res
