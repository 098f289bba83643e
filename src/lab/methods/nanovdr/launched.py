"""NanoVDR students under ``accelerate launch`` (paper profile, ``nanovdr.train.launch: accelerate``).

:func:`lab.methods.nanovdr.distill.distill` hands over here when :func:`launch_plan` says ``accelerate``: the
config is written as JSON (so the launched processes train exactly what the caller holds, overrides included),
``python -m lab.methods.nanovdr.distill`` runs under ``accelerate launch`` (DDP over the GPUs; the trainer's
SeededSampler gives N processes of batch b the examples one process of batch N*b sees), rank 0 writes the learning
curve, and this process reads it back as the DataFrame an in-process run returns.

Inference (``nanovdr.inference_launch: accelerate``) hands over the same way: the report stage's student query
encoding (:func:`lab.methods.nanovdr.evaluate.encode_queries`, ``python -m lab.methods.nanovdr.evaluate``) and the
index stage's teacher page / query encoding (:class:`LaunchedTeacher`, ``python -m lab.methods.nanovdr.index``)
run under ``accelerate launch``, each process encoding a block of the texts on its own device
(:mod:`lab.eval.shard`); rank 0 writes the ``.npy`` rows, which this process reads back. Imports no other module
of this paper but the schema (no circle with ``distill``, ``evaluate`` or ``index``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd

from lab import config as lab_config
from lab.methods.nanovdr.config import SCHEMA
from lab.train import launch

__all__ = ["launch_plan", "distill_launched", "write_result", "read_result", "load_cfg", "inference_plan",
           "encode_launched", "LaunchedTeacher"]


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


# ------------------------------------------------------------------------------------------- inference
def inference_plan(cfg, profile: str | None = None, **machine) -> launch.LaunchPlan:
    """The launch decision for the index / report stages' encoders (``machine``: ``gpus=`` / ``env=`` for tests)."""
    return launch.plan(profile or lab_config.active_profile(), launch=cfg.inference_launch, **machine)


def encode_launched(plan: launch.LaunchPlan, cfg, students, texts, *, dim: int, seed: int = 0):
    """:func:`lab.methods.nanovdr.evaluate.encode_queries` under ``accelerate launch``; same return value."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="nanovdr-encode-") as tmp:
        cfg_file, jobs, out = Path(tmp) / "cfg.json", Path(tmp) / "jobs.json", Path(tmp) / "out"
        cfg_file.write_text(json.dumps(lab_config.as_plain(cfg)))
        jobs.write_text(json.dumps({"students": {k: None if v is None else str(Path(v).resolve())
                                                 for k, v in students.items()},
                                    "texts": {k: list(v) for k, v in texts.items()}, "dim": dim, "seed": seed}))
        launch.run(plan, "lab.methods.nanovdr.evaluate", ["encode", "--cfg", str(cfg_file), "--jobs", str(jobs),
                                                          "--out", str(out)])
        emb = {key: {name: np.load(out / f"{i}_{j}.npy") for j, name in enumerate(students)}
               for i, key in enumerate(texts)}
        return emb, json.loads((out / "ms.json").read_text())


class LaunchedTeacher:
    """``teacher`` (built from ``cfg``: the launched processes build the same one) whose ``encode_pages`` /
    ``encode_queries`` run under ``accelerate launch``; everything else (name, fingerprint, truncation: the
    embedding cache's key) is the wrapped teacher's, so a launched run and an in-process run share cache entries."""

    def __init__(self, teacher, plan: launch.LaunchPlan, cfg):
        self._teacher, self._plan, self._cfg = teacher, plan, cfg

    def __getattr__(self, name):
        return getattr(self._teacher, name)

    def _run(self, kind: str, items: list, progress: bool):
        import numpy as np

        with tempfile.TemporaryDirectory(prefix="nanovdr-teacher-") as tmp:
            cfg_file, items_file, out = Path(tmp) / "cfg.json", Path(tmp) / "items.jsonl", Path(tmp) / "emb.npy"
            cfg_file.write_text(json.dumps(lab_config.as_plain(self._cfg)))
            rows = ([{"docid": p.docid, "text": p.text, "image": str(Path(p.image).resolve()) if p.image else None}
                     for p in items] if kind == "pages" else [{"text": t} for t in items])
            items_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            launch.run(self._plan, "lab.methods.nanovdr.index",
                       ["encode", kind, "--cfg", str(cfg_file), "--items", str(items_file), "--out", str(out),
                        *(["--progress"] if progress else [])])
            return np.load(out)

    def encode_pages(self, pages, *, progress: bool = True):
        return self._run("pages", list(pages), progress)                       # [N, D]

    def encode_queries(self, texts, *, progress: bool = True):
        return self._run("queries", list(texts), progress)                     # [Q, D]
