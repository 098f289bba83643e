"""LaSER evaluation: dense retrieval over the DL19 candidate pool for every variant, the inference-K sweep,
rewrite-then-retrieve, and paired tests against the baseline variant (stage laser_eval)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.methods.laser.config import LaserConfig
from lab.methods.laser.data import Pool, load_base
from lab.records import Candidate, Query, Ranking, Run

BASE = "base"      # the model of every untrained row
TOP = 100          # ranked passages kept per query (nDCG@10 needs 10; R@100 if asked)


@dataclass
class Config:
    """One evaluated configuration: a variant's model, the K it encodes with, plain or rewritten queries."""

    name: str
    variant: str
    k: int
    rewrite: bool = False


def configs(cfg: LaserConfig) -> list[Config]:
    """Every variant at its own K; the sweep variant at each ``eval.k_sweep`` K; rewrite-then-retrieve."""
    out = [Config(v, v, cfg.rows[v].k) for v in cfg.variants]
    e = cfg.eval
    if e.sweep_variant in cfg.variants:
        out += [Config(f"{e.sweep_variant}_k{k}", e.sweep_variant, k) for k in e.k_sweep]
    if e.rewrite and e.rewrite_model in cfg.variants:
        out.append(Config("rewrite", e.rewrite_model, cfg.rows[e.rewrite_model].k, rewrite=True))
    return out


def load_variant(cfg: LaserConfig, variant: str, model_path: str | Path, adapters_dir: str | Path):
    """The base model (zero-shot rows) or the base with the variant's LoRA adapter merged in."""
    model, tok = load_base(model_path, cfg.optim.dtype)
    if cfg.rows[variant].train:
        from peft import PeftModel

        folder = Path(adapters_dir) / variant
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no adapter for laser variant {variant!r} (run laser_train)")
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    return model.eval(), tok


def rank(name: str, queries: list[Query], q_vecs: np.ndarray, docids: list[str], d_vecs: np.ndarray) -> Run:
    """Top :data:`TOP` pool passages per query by inner product of unit vectors (cosine)."""
    scores = q_vecs @ d_vecs.T                                           # (Q, N)
    run = Run(name)
    for i, q in enumerate(queries):
        order = np.argsort(-scores[i], kind="stable")[:TOP]
        run.add(Ranking(q, [Candidate(docids[j], float(scores[i, j]), r + 1) for r, j in enumerate(order)]))
    return run


@dataclass
class EvalOutput:
    runs: dict[str, Run] = field(default_factory=dict)
    entropy: dict[str, float] = field(default_factory=dict)      # mean soft-token entropy of the queries (nats)
    seconds: dict[str, float] = field(default_factory=dict)


def run_all(cfg: LaserConfig, pool: Pool, *, model_path: str | Path, adapters_dir: str | Path,
            reasoning: dict[tuple[str, str], str], progress: bool = True) -> EvalOutput:
    """Encode the pool and the queries for every :func:`configs` entry: one model load and one pool pass per
    model, at the largest K its configurations use (:func:`encode_ks` gives every smaller K from it). The untrained
    rows (zero-shot K = 1 and K = 3) are one model, the base: one pass serves both."""
    from lab.retrieval.laser_prompts import load_laser_prompt
    from lab.retrieval.latent_train import encode, encode_ks, reasoning_or_query

    prompt = load_laser_prompt(cfg.prompt)
    lo, e = cfg.loss, cfg.eval
    out = EvalOutput()
    by_model: dict[str, list[Config]] = {}
    for c in configs(cfg):
        by_model.setdefault(c.variant if cfg.rows[c.variant].train else BASE, []).append(c)
    for variant, group in by_model.items():
        model, tok = load_variant(cfg, group[0].variant, model_path, adapters_dir)
        docs: dict[int, np.ndarray] = {}
        ks = sorted({c.k for c in group})
        for c in group:
            t0 = time.perf_counter()
            if not docs:                # the pool pass is timed with the variant's first configuration
                docs = {k: v for k, (v, _) in encode_ks(model, tok, prompt, pool.texts, ks, query=False,
                                                         max_len=lo.doc_max_len, batch_size=e.batch_size,
                                                         progress=progress, desc=f"pool {variant} k{ks}").items()}
            texts = [q.text for q in pool.queries]
            if c.rewrite:               # rewrite-then-retrieve: the query followed by its generated reasoning
                kept = [reasoning_or_query(reasoning.get((e.dataset, q.qid), ""), "", lo.min_reasoning_chars)
                        for q in pool.queries]
                texts = [f"{q.text}\n{r}" if r else q.text for q, r in zip(pool.queries, kept)]
            q_vecs, ent = encode(model, tok, prompt, texts, c.k, query=True,
                                 max_len=lo.reasoning_max_len if c.rewrite else lo.query_max_len,
                                 batch_size=e.batch_size, progress=progress, desc=f"queries {c.name}")
            out.runs[c.name] = rank(c.name, pool.queries, q_vecs, pool.docids, docs[c.k])
            out.entropy[c.name] = float(ent.mean())
            out.seconds[c.name] = round(time.perf_counter() - t0, 1)
    return out


def score(cfg: LaserConfig, pool: Pool, out: EvalOutput) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(summary, per-query, metrics): every configuration's means, its difference from ``eval.baseline`` and the
    paired test's p-value over the same queries."""
    from lab.eval.metrics import evaluate
    from lab.eval.significance import paired_test

    e = cfg.eval
    cfgs = {c.name: c for c in configs(cfg)}
    results = {name: evaluate(run, pool.qrels, e.measures) for name, run in out.runs.items()}
    per_query = pd.concat([r.per_query.assign(config=name) for name, r in results.items()], ignore_index=True)
    per_query = per_query[["config", "qid", "measure", "value"]]
    rows, metrics = [], {}
    base = results.get(e.baseline)
    for name, res in results.items():
        c = cfgs[name]
        row = {"config": name, "variant": c.variant, "k": c.k, "rewrite": c.rewrite}
        child = {}
        for key in e.measures:
            row[key] = res.means[key]
            child[key] = res.means[key]
            if base is not None and name != e.baseline:
                vals = lambda r: dict(r.per_query[r.per_query.measure == key][["qid", "value"]].values)  # noqa: E731
                t = paired_test(vals(res), vals(base), e.test)
                row[f"{key}_delta"], row[f"{key}_p"] = t.mean_diff, t.pvalue
                child[f"{key}_delta"], child[f"{key}_p"] = t.mean_diff, t.pvalue
        row["soft_entropy"] = out.entropy.get(name, 0.0)
        row["seconds"] = out.seconds.get(name, 0.0)
        rows.append(row)
        metrics[name] = {**child, "soft_entropy": row["soft_entropy"]}
    summary = pd.DataFrame(rows)
    return summary, per_query, metrics
