"""FIRST training under ``accelerate launch`` (paper profile, ``first.optim.launch: accelerate``).

:func:`lab.methods.first.train.train_variant` hands over here when :func:`launch_plan` says ``accelerate``: the
config and the training windows are written as JSON (so the launched processes train exactly what the caller
holds, overrides and a custom training set included), ``python -m lab.methods.first.train train --cfg ...
--examples ...`` runs under ``accelerate launch`` (DDP over the GPUs, DeepSpeed ZeRO-3 through the Trainer's JSON
with ``optim.deepspeed: zero3``), rank 0 saves the adapter/model and writes the Trainer's log history, and this
process reads it back as a :class:`lab.train.FitResult` without a model (the weights are on disk).

Reranking (``first.rerank.launch: accelerate``) hands over the same way: :func:`lab.methods.first.rerank.rerank_all`
writes the config and the evaluation sets (candidates JSONL, qrels JSON), ``python -m lab.methods.first.rerank
rerank`` runs under ``accelerate launch`` (each process reranks a block of every run's queries on its own device,
:mod:`lab.eval.shard` gathers them), rank 0 writes the reranked runs and the timing / generation tables, and this
process reads them back as the ``(runs, timing, generations)`` an in-process call returns. Imports no other module
of this paper but the schema at module level (no circle with ``train`` or ``rerank``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

from lab import config as lab_config
from lab.methods.first.config import SCHEMA
from lab.train import FitResult, launch

__all__ = ["launch_plan", "train_launched", "write_examples", "read_examples", "load_cfg",
           "rerank_plan", "rerank_launched", "write_sets", "read_sets", "write_rerank_result",
           "read_rerank_result"]


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


def train_launched(plan: launch.LaunchPlan, cfg, variant: str, ts, *, model_path, adapters_dir, seed: int,
                   checkpoint_root=None, stop_after: int | None = None, steps: int | None = None,
                   run=None) -> FitResult:
    """One variant under ``accelerate launch``; ``run`` gets the per-step curve (``curve.<variant>.*``) replayed
    from the launched Trainer's log history, as the in-process run logs it."""
    with tempfile.TemporaryDirectory(prefix="first-launch-") as tmp:
        cfg_file, ex_file, result = Path(tmp) / "cfg.json", Path(tmp) / "examples.jsonl", Path(tmp) / "result.json"
        cfg_file.write_text(json.dumps(lab_config.as_plain(cfg)))
        write_examples(ex_file, ts.examples, ts.qids, ts.kinds)
        args = launch.train_args(cfg_file, ex_file, result, variant=variant, model_path=model_path, seed=seed,
                                 adapters_dir=adapters_dir, checkpoint_root=checkpoint_root, steps=steps)
        args += [] if stop_after is None else ["--stop-after", str(stop_after)]
        launch.run(plan, "lab.methods.first.train", args)
        res = launch.read_result(result)
    launch.replay_curve(run, res.history, f"curve.{variant}")
    return res


# ------------------------------------------------------------------------------------------- reranking
def rerank_plan(cfg, profile: str | None = None, **machine) -> launch.LaunchPlan:
    """The launch decision for ``first.rerank`` (inference: no DeepSpeed, no autocast; the models load in
    ``optim.dtype``). ``machine``: ``gpus=`` / ``env=`` for tests."""
    return launch.plan(profile or lab_config.active_profile(), launch=cfg.rerank.launch, **machine)


def _strip(run):
    """``run`` without passage texts (the launched side has them from the sets; a BEIR run's texts are ~100 MB)."""
    from dataclasses import replace

    from lab.records import Ranking, Run

    return Run(run.name, {q: Ranking(r.query, [replace(c, text=None) for c in r.candidates])
                          for q, r in run.rankings.items()})


def write_sets(folder: str | Path, sets: Sequence) -> None:
    """Evaluation sets as ``sets.json`` (names, first stages) + per set ``<i>/qrels.json`` and ``<i>/<j>.jsonl``
    (:func:`lab.data.formats.write_candidates_jsonl`: an exact round trip, texts included)."""
    from lab.data.formats import write_candidates_jsonl
    from lab.paths import write_json

    folder = Path(folder)
    for i, s in enumerate(sets):
        write_json(folder / str(i) / "qrels.json", {q: dict(j) for q, j in s.qrels.judgements.items()})
        for j, run in enumerate(s.runs.values()):
            write_candidates_jsonl(run, folder / str(i) / f"{j}.jsonl")
    write_json(folder / "sets.json", [{"name": s.name, "runs": list(s.runs)} for s in sets])


def read_sets(folder: str | Path) -> list[tuple]:
    """``(name, qrels, {first stage: run})`` per set: the fields of :class:`lab.methods.first.rerank.EvalSet`
    (built by the caller: this module imports no other module of the paper)."""
    from lab.data.formats import read_candidates_jsonl
    from lab.records import Qrels

    folder = Path(folder)
    return [(s["name"], Qrels(json.loads((folder / str(i) / "qrels.json").read_text())),
             {fs: read_candidates_jsonl(folder / str(i) / f"{j}.jsonl", fs) for j, fs in enumerate(s["runs"])})
            for i, s in enumerate(json.loads((folder / "sets.json").read_text()))]


def write_rerank_result(folder: str | Path, runs: dict, timing, generations) -> None:
    """Rank 0's output: every reranked run (no texts) + the timing and generation tables (``repr`` floats)."""
    from lab.data.formats import write_candidates_jsonl
    from lab.paths import write_json

    folder = Path(folder)
    names = {set_name: [n for n in by_name if "/" in n] for set_name, by_name in runs.items()}   # reranked only
    for i, (set_name, reranked) in enumerate(names.items()):
        for j, name in enumerate(reranked):
            write_candidates_jsonl(_strip(runs[set_name][name]), folder / str(i) / f"{j}.jsonl")
    native = lambda frame: json.loads(json.dumps(frame.to_dict("records"), default=lambda v: v.item()))  # noqa: E731
    write_json(folder / "result.json", {"runs": list(names.items()), "timing": native(timing),
                                        "timing_columns": list(timing.columns), "generations": native(generations),
                                        "generation_columns": list(generations.columns)})


def read_rerank_result(folder: str | Path, sets: Sequence):
    """``(runs, timing, generations)`` as :func:`lab.methods.first.rerank.rerank_all` returns them: each set's
    first-stage runs, then the reranked runs with the passage texts of the set's candidates."""
    from dataclasses import replace

    import pandas as pd

    from lab.data.formats import read_candidates_jsonl

    folder = Path(folder)
    data = json.loads((folder / "result.json").read_text())
    by_set = {s.name: s for s in sets}
    runs = {}
    for i, (set_name, reranked) in enumerate(data["runs"]):
        s = by_set[set_name]
        runs[set_name] = dict(s.runs)
        for j, name in enumerate(reranked):
            run = read_candidates_jsonl(folder / str(i) / f"{j}.jsonl", name)
            base = s.runs[name.split("/", 1)[0]]
            for qid, ranking in run.rankings.items():
                text = {c.docid: c.text for c in base[qid].candidates}
                ranking.candidates = [replace(c, text=text[c.docid]) for c in ranking.candidates]
            runs[set_name][name] = run
    return (runs, pd.DataFrame(data["timing"], columns=data["timing_columns"]),
            pd.DataFrame(data["generations"], columns=data["generation_columns"]))


def rerank_launched(plan: launch.LaunchPlan, cfg, sets: Sequence, *, model_path, adapters_dir,
                    progress: bool = False):
    """:func:`lab.methods.first.rerank.rerank_all` under ``accelerate launch``; same return value."""
    import torch

    with tempfile.TemporaryDirectory(prefix="first-rerank-launch-") as tmp:
        cfg_file, sets_dir, result = Path(tmp) / "cfg.json", Path(tmp) / "sets", Path(tmp) / "result"
        cfg_file.write_text(json.dumps(lab_config.as_plain(cfg)))
        write_sets(sets_dir, sets)
        args = ["rerank", "--cfg", str(cfg_file), "--sets", str(sets_dir), "--result", str(result),
                "--model", str(Path(model_path).resolve()), "--adapters", str(Path(adapters_dir).resolve()),
                "--seed", str(torch.initial_seed())]        # the seed this process was set up with
        args += ["--progress"] if progress else []
        launch.run(plan, "lab.methods.first.rerank", args)
        return read_rerank_result(result, sets)
