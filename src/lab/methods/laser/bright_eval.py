"""LaSER on BRIGHT (paper profile, ``laser.eval.benchmark: bright``; stage laser_eval): every variant's latent-view
retrieval over each task's full short-document corpus, nDCG@10 per task and its macro average over the tasks (the
paper's "BRIGHT avg"), under every ``eval.bright_exclusion`` mode: ``official`` drops each query's ``excluded_ids``
before the top-k (BRIGHT's evaluation), ``mteb-1.x-compat`` keeps them (what the paper's pinned mteb does). Both
numbers are written; the first mode is the ``ndcg_10`` the report and the claims read.

Queries get the code's single BRIGHT instruction (``eval.bright_instruction``); documents the plain wrapper. The
sweep variant is also scored at each ``eval.k_sweep`` K from the same pass (:func:`encode_ks`). Paired tests run
over (task, query) pairs of the first mode against ``eval.baseline``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.data.bright import BrightTask, drop_excluded, load_bright
from lab.methods.laser.config import LaserConfig
from lab.records import Candidate, Ranking, Run

__all__ = ["load_tasks", "configs", "run_bright", "score", "mode_key", "TOP"]

TOP = 100          # ranked documents kept per query after exclusion (nDCG@10 needs 10; R@100 if asked)


def mode_key(mode: str) -> str:
    """``"mteb-1.x-compat"`` -> ``"mteb_1x_compat"`` (a column / metric-name suffix)."""
    return mode.replace("-", "_").replace(".", "")


def load_tasks(cfg: LaserConfig) -> dict[str, BrightTask]:
    e = cfg.eval
    return load_bright(e.bright_tasks, root=e.bright_root or None, max_queries=e.max_queries,
                       max_docs=e.bright_max_docs)


def configs(cfg: LaserConfig) -> list[tuple[str, str, int]]:
    """``(name, variant, k)``: every variant at its own K, the sweep variant at each ``eval.k_sweep`` K."""
    out = [(v, v, cfg.rows[v].k) for v in cfg.variants]
    e = cfg.eval
    if e.sweep_variant in cfg.variants:
        out += [(f"{e.sweep_variant}_k{k}", e.sweep_variant, k) for k in e.k_sweep]
    return out


@dataclass
class BrightOutput:
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)    # (config, task) -> ranking before exclusion
    entropy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _rank(task: BrightTask, name: str, q_vecs: np.ndarray, d_vecs: np.ndarray) -> Run:
    """Top ``TOP + most excluded ids of a query`` documents per query (so TOP remain once they are dropped)."""
    depth = min(len(task.docids), TOP + max((len(v) for v in task.excluded.values()), default=0))
    scores = q_vecs @ d_vecs.T                                           # (Q, N)
    run = Run(name)
    for i, q in enumerate(task.queries):
        order = np.argsort(-scores[i], kind="stable")[:depth]
        run.add(Ranking(q, [Candidate(task.docids[j], float(scores[i, j]), r + 1) for r, j in enumerate(order)]))
    return run


def run_bright(cfg: LaserConfig, tasks: dict[str, BrightTask], *, model_path: str | Path, adapters_dir: str | Path,
               progress: bool = True) -> BrightOutput:
    """Encode every task's corpus and queries once per variant at its largest K; rank for every configuration."""
    import torch

    from lab.methods.laser.evaluate import load_variant
    from lab.retrieval.laser_prompts import load_laser_prompt
    from lab.retrieval.latent_train import encode_ks

    prompt, lo, e = load_laser_prompt(cfg.prompt), cfg.loss, cfg.eval
    out = BrightOutput()
    by_variant: dict[str, list[tuple[str, int]]] = {}
    for name, variant, k in configs(cfg):
        by_variant.setdefault(variant, []).append((name, k))
    for variant, group in by_variant.items():
        t0 = time.perf_counter()
        model, tok = load_variant(cfg, variant, model_path, adapters_dir)
        if torch.cuda.is_available():          # the paper profile's GPU (encode_ks follows the model's device)
            model = model.to("cuda")
        ks = sorted({k for _, k in group})
        ents: dict[str, list[np.ndarray]] = {name: [] for name, _ in group}
        for tname, task in tasks.items():
            docs = encode_ks(model, tok, prompt, task.texts, ks, query=False, max_len=lo.doc_max_len,
                             batch_size=e.batch_size, progress=progress, desc=f"{tname} docs {variant}")
            qs = encode_ks(model, tok, prompt, [q.text for q in task.queries], ks, query=True,
                           max_len=lo.query_max_len, batch_size=e.batch_size, progress=progress,
                           desc=f"{tname} queries {variant}", task=e.bright_instruction)
            for name, k in group:
                out.runs[(name, tname)] = _rank(task, name, qs[k][0], docs[k][0])
                ents[name].append(qs[k][1])
        for name, _ in group:
            out.entropy[name] = float(np.concatenate(ents[name]).mean()) if ents[name] else 0.0
            out.seconds[name] = round(time.perf_counter() - t0, 1)
        del model
    return out


def score(cfg: LaserConfig, tasks: dict[str, BrightTask], out: BrightOutput
          ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(summary, per-query, metrics). Summary columns as the DL19 evaluation's (``config, variant, k, rewrite,
    <measure>, <measure>_delta, <measure>_p, soft_entropy, seconds``) with ``<measure>`` the macro average over
    tasks under the first exclusion mode, plus ``<measure>_<mode>`` for every mode and ``<measure>@<task>``."""
    from lab.eval.metrics import evaluate
    from lab.eval.significance import paired_test

    e = cfg.eval
    modes = list(e.bright_exclusion)
    per_query_rows, means = [], {}                  # means[(config, mode, task, measure)]
    for (name, tname), raw in out.runs.items():
        task = tasks[tname]
        for mode in modes:
            res = evaluate(drop_excluded(raw, task.with_exclusion(mode), TOP), task.qrels, e.measures)
            for key in e.measures:
                means[(name, mode, tname, key)] = res.means[key]
            pq = res.per_query.assign(config=name, task=tname, mode=mode)
            per_query_rows.append(pq)
    per_query = pd.concat(per_query_rows, ignore_index=True)[["config", "task", "mode", "qid", "measure", "value"]]
    names = {c[0]: c for c in configs(cfg)}
    rows, metrics = [], {}

    def values(config: str, key: str) -> dict[str, float]:
        f = per_query[(per_query.config == config) & (per_query["mode"] == modes[0]) & (per_query.measure == key)]
        return {f"{t}/{q}": v for t, q, v in zip(f.task, f.qid, f.value)}

    for name in dict.fromkeys(n for n, _ in out.runs):
        _, variant, k = names[name]
        row: dict[str, Any] = {"config": name, "variant": variant, "k": k, "rewrite": False}
        child: dict[str, Any] = {}
        for key in e.measures:
            for mode in modes:
                avg = float(np.mean([means[(name, mode, t, key)] for t in tasks]))
                row[f"{key}_{mode_key(mode)}"] = avg
                child[f"{key}_{mode_key(mode)}"] = {"avg": avg, **{t: means[(name, mode, t, key)] for t in tasks}}
            row[key] = row[f"{key}_{mode_key(modes[0])}"]
            child[key] = row[key]
            for t in tasks:
                row[f"{key}@{t}"] = means[(name, modes[0], t, key)]
            if e.baseline in names and name != e.baseline and (e.baseline, next(iter(tasks))) in out.runs:
                test = paired_test(values(name, key), values(e.baseline, key), e.test)
                row[f"{key}_delta"], row[f"{key}_p"] = test.mean_diff, test.pvalue
                child[f"{key}_delta"], child[f"{key}_p"] = test.mean_diff, test.pvalue
        row["soft_entropy"] = out.entropy.get(name, 0.0)
        row["seconds"] = out.seconds.get(name, 0.0)
        rows.append(row)
        metrics[name] = {**child, "soft_entropy": row["soft_entropy"]}
    return pd.DataFrame(rows), per_query, metrics
