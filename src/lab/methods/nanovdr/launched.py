"""NanoVDR students under ``accelerate launch`` (paper profile, ``nanovdr.train.launch: accelerate``).

:func:`lab.methods.nanovdr.distill.distill` hands over here when :func:`launch_plan` says ``accelerate``: the
config is written as JSON (so the launched processes train exactly what the caller holds, overrides included),
``python -m lab.methods.nanovdr.distill`` runs under ``accelerate launch`` (DDP over the GPUs; the trainer's
SeededSampler gives N processes of batch b the examples one process of batch N*b sees), rank 0 writes the learning
curve, and this process reads it back as the DataFrame an in-process run returns. Imports no other module of
this paper but the schema (no circle with ``distill``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd

from lab import config as lab_config
from lab.methods.nanovdr.config import SCHEMA
from lab.train import launch

__all__ = ["launch_plan", "distill_launched", "write_result", "read_result", "load_cfg"]


def launch_plan(cfg, profile: str | None = None) -> launch.LaunchPlan:
    profile = profile or lab_config.active_profile()
    return launch.plan(profile, launch=cfg.train.launch, mixed_precision=cfg.train.mixed_precision)


def load_cfg(path: str | Path):
    return lab_config.build(SCHEMA, json.loads(Path(path).read_text()), str(path))


def write_result(path: str | Path, curve: pd.DataFrame) -> None:
    from lab.paths import write_json

    attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in curve.attrs.items()}    # numpy scalars
    write_json(Path(path), {"rows": json.loads(curve.to_json(orient="records")), "attrs": attrs})


def read_result(path: str | Path) -> pd.DataFrame:
    data = json.loads(Path(path).read_text())
    curve = pd.DataFrame(data["rows"])
    curve.attrs.update(data["attrs"])
    return curve


def distill_launched(plan: launch.LaunchPlan, cfg, objective: str, out_path, *, index_dir=None, seed: int = 0,
                     resume: bool = True, progress: bool = True, stop_after: int | None = None) -> pd.DataFrame:
    with tempfile.TemporaryDirectory(prefix="nanovdr-launch-") as tmp:
        cfg_file, result = Path(tmp) / "cfg.json", Path(tmp) / "curve.json"
        cfg_file.write_text(json.dumps(lab_config.as_plain(cfg)))
        args = ["--cfg", str(cfg_file), "--objective", objective, "--out", str(Path(out_path).resolve()),
                "--index-dir", str(Path(index_dir or cfg.index_dir).resolve()), "--seed", str(seed),
                "--result", str(result)]
        args += [] if resume else ["--no-resume"]
        args += [] if progress else ["--no-progress"]
        args += [] if stop_after is None else ["--stop-after", str(stop_after)]
        launch.run(plan, "lab.methods.nanovdr.distill", args)
        return read_result(result)
