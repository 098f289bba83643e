"""LaSER's data: reasoning per query (stage laser_reasoning), DL20 training examples, the DL19 candidate pool.

Training never sees DL19: the training set may not be the evaluation set and no training qid may be an
evaluation qid (:func:`lab.data.splits.check_no_leak`, FIRST's check moved down into the data layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lab.data.splits import check_no_leak
from lab.data.trecdl import load_materialised
from lab.methods.laser.config import LaserConfig
from lab.records import Query
from lab.retrieval.laser_prompts import load_laser_prompt
from lab.retrieval.latent import segment_ends
from lab.retrieval.latent_train import LaserExample

REASONING_COLUMNS = ["dataset", "qid", "query", "reasoning", "new_tokens", "chars", "segments"]


def model_path(cfg: LaserConfig, models_dir: str | Path) -> Path:
    """``laser.model_ref`` resolved (random-init paper shapes for a dry run), else ``models_dir/<model_role>``."""
    if cfg.model_ref:
        from lab.models import resolve

        return Path(resolve(cfg.model_ref))
    return Path(models_dir) / cfg.model_role


def load_base(model_path: str | Path, dtype: str = "float32"):
    """The causal LM and its tokenizer (left padding: the latent view reads the last position)."""
    from lab.models import load_model, load_tokenizer

    tok = load_tokenizer(model_path)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return load_model(model_path, kind="causal_lm", dtype=dtype), tok


def _words(text: str, n: int) -> str:
    return " ".join(text.split()[:n]) if n else text


def count_segments(tok, text: str, rule: str) -> int:
    """Number of trajectory segments of a reasoning text (its ``"\\n\\n"`` ends plus the last token)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    newline = tok.encode("\n\n", add_special_tokens=False)[-1]
    return len(segment_ends(ids, [tok.decode([t]) for t in ids], newline_id=newline, rule=rule))


# ------------------------------------------------------------------------------------------- reasoning
def reasoning_table(cfg: LaserConfig, data_dir: str | Path, model, tok, progress: bool = True) -> pd.DataFrame:
    """Greedy reasoning (the prompt's ``reasoning_*`` turns) for every judged query of ``reasoning.datasets``."""
    from lab.retrieval.rewrite import generate_reasoning

    prompt = load_laser_prompt(cfg.prompt)
    rows = []
    for name in cfg.reasoning.datasets:
        queries = load_materialised(data_dir, name, []).queries
        if cfg.reasoning.max_queries:
            queries = queries[: cfg.reasoning.max_queries]
        gen = generate_reasoning(model, tok, prompt, [q.text for q in queries],
                                 max_new_tokens=cfg.reasoning.max_new_tokens, batch_size=cfg.reasoning.batch_size,
                                 progress=progress)
        for q, g in zip(queries, gen):
            rows.append({"dataset": name, "qid": q.qid, "query": q.text, "reasoning": g["text"],
                         "new_tokens": g["new_tokens"], "chars": len(g["text"]),
                         "segments": count_segments(tok, g["text"], cfg.loss.segment_rule) if g["text"] else 0})
    return pd.DataFrame(rows, columns=REASONING_COLUMNS)


def read_reasoning(path: str | Path) -> dict[tuple[str, str], str]:
    """``{(dataset, qid): reasoning}`` from the laser_reasoning stage's ``reasoning.csv``."""
    df = pd.read_csv(path, dtype={"qid": str}, keep_default_na=False)
    missing = [c for c in REASONING_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return {(r.dataset, r.qid): r.reasoning for r in df.itertuples()}


# -------------------------------------------------------------------------------------------- training
@dataclass
class TrainingSet:
    examples: list[LaserExample]          # generated reasoning
    oracle: list[LaserExample]            # same pairs, reasoning = a held-out rel-3 passage (CONTROL)
    qids: list[str]
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        return {"examples": len(self.examples), "queries": len(set(self.qids)), **self.notes}


def hub_training_set(cfg: LaserConfig, seed: int = 0) -> TrainingSet:
    """The paper's training rows (``train.source: laser_training``, :mod:`lab.data.laser_training`) as examples.

    As the official ``TrainDatasetWithRewrite`` at epoch 0 (one epoch): row i's positive is
    ``positives[(i + seed) % len]`` (``hash`` of an int is the int), its negative the first one
    (``train_group_size 2``), its instruction the row's ``prompt``, its reasoning ``reasoning_query`` (the
    short-reasoning rule is applied by :func:`lab.retrieval.latent_train.prepare`). Rows without a negative are dropped
    (the code's ``random.choices`` of an empty list would raise). There is no oracle control here: ``oracle`` is the
    same list. ``train.max_queries`` caps the rows read, ``max_examples`` the examples kept.
    """
    from lab.data.laser_training import hub_training_files, read_training_rows

    t = cfg.train
    files = hub_training_files(t.hub_subset, root=t.hub_root or None, repo=t.hub_repo)
    rows = read_training_rows(files, max_rows=t.max_queries)
    examples, qids, dropped, short = [], [], 0, 0
    for i, r in enumerate(rows):
        if not r.negatives:
            dropped += 1
            continue
        pos = r.positives[(i + seed) % len(r.positives)]
        examples.append(LaserExample(r.query, r.reasoning, _words(pos, t.max_words),
                                     _words(r.negatives[0], t.max_words), task=r.prompt))
        qids.append(f"{Path(r.file).name}:{r.row}")
        short += len(r.reasoning.strip()) < cfg.loss.min_reasoning_chars
    if t.max_examples:
        examples, qids = examples[: t.max_examples], qids[: t.max_examples]
    notes = {"rows": len(rows), "files": len(files), "dropped_no_negative": dropped, "short_reasoning": short}
    return TrainingSet(examples, examples, qids, notes)


def training_set(cfg: LaserConfig, data_dir: str | Path, reasoning: dict[tuple[str, str], str],
                 seed: int = 0) -> TrainingSet:
    """(query, positive, hard negative) pairs from ``train.dataset`` (``train.source: laser_training``: the paper's
    rows, :func:`hub_training_set`; ``data_dir`` and ``reasoning`` are then unused).

    Positives: grade >= ``positive_grade`` passages in any first stage's top ``depth`` (best rank first), minus the
    query's highest-ranked grade-3 passage, which is held out as the oracle reasoning (so every variant trains on
    the same pairs). Hard negative: the highest-ranked grade-0 passage of ``negative_stage``. Queries without a
    positive or a judged-0 negative are dropped (counted in ``notes``).
    """
    if cfg.train.source == "laser_training":
        return hub_training_set(cfg, seed)
    t = cfg.train
    stages = tuple(dict.fromkeys((*t.first_stages, t.negative_stage)))
    ds = load_materialised(data_dir, t.dataset, list(stages))
    queries = ds.queries[: t.max_queries] if t.max_queries else ds.queries
    check_no_leak(t.dataset, [q.qid for q in queries], [cfg.eval.dataset], data_dir, "laser.train.dataset")
    examples, oracle, qids = [], [], []
    dropped = {"no_positive": 0, "no_negative": 0}
    with_oracle = 0
    for q in queries:
        grades = ds.qrels[q.qid] if q.qid in ds.qrels else {}
        best: dict[str, tuple[int, str]] = {}          # docid -> (best rank, text)
        for fs in t.first_stages:
            if q.qid not in ds.runs[fs]:
                continue
            for c in ds.runs[fs][q.qid].candidates[: t.depth]:
                if c.text and (c.docid not in best or c.rank < best[c.docid][0]):
                    best[c.docid] = (c.rank, c.text)
        ranked = sorted(best, key=lambda d: (best[d][0], d))
        rel3 = [d for d in ranked if grades.get(d, 0) >= 3]
        held = rel3[0] if rel3 else None
        positives = [d for d in ranked if grades.get(d, 0) >= t.positive_grade and d != held]
        if t.max_positives:
            positives = positives[: t.max_positives]
        negs = [c for c in (ds.runs[t.negative_stage][q.qid].candidates if q.qid in ds.runs[t.negative_stage] else [])
                if c.docid in grades and grades[c.docid] == 0 and c.text]
        if not positives:
            dropped["no_positive"] += 1
            continue
        if not negs:
            dropped["no_negative"] += 1
            continue
        gen = reasoning.get((t.dataset, q.qid), "")
        orc = _words(best[held][1], t.max_words) if held else gen
        with_oracle += held is not None
        neg = _words(negs[0].text, t.max_words)
        for d in positives:
            pos = _words(best[d][1], t.max_words)
            examples.append(LaserExample(q.text, gen, pos, neg))
            oracle.append(LaserExample(q.text, orc, pos, neg))
            qids.append(q.qid)
    if t.max_examples:
        examples, oracle, qids = examples[: t.max_examples], oracle[: t.max_examples], qids[: t.max_examples]
    notes = {"dropped_no_positive": dropped["no_positive"], "dropped_no_negative": dropped["no_negative"],
             "queries_with_oracle": with_oracle,
             "missing_reasoning": sum(1 for q in set(qids) if not reasoning.get((t.dataset, q)))}
    return TrainingSet(examples, oracle, qids, notes)


# ---------------------------------------------------------------------------------------------- pool
@dataclass
class Pool:
    queries: list[Query]
    docids: list[str]
    texts: list[str]
    qrels: Any                              # lab.records.Qrels of the evaluation queries


def eval_pool(cfg: LaserConfig, data_dir: str | Path) -> Pool:
    """The evaluation corpus: the union of every ``eval.pool_stages`` run's top ``pool_depth`` over all queries
    (the only passages with text here), passages cut to ``train.max_words``."""
    e = cfg.eval
    ds = load_materialised(data_dir, e.dataset, list(e.pool_stages))
    queries = ds.queries[: e.max_queries] if e.max_queries else ds.queries
    texts: dict[str, str] = {}
    for fs in e.pool_stages:
        for q in queries:
            if q.qid in ds.runs[fs]:
                for c in ds.runs[fs][q.qid].candidates[: e.pool_depth]:
                    if c.text and c.docid not in texts:
                        texts[c.docid] = _words(c.text, cfg.train.max_words)
    docids = sorted(texts)
    return Pool(queries, docids, [texts[d] for d in docids], ds.qrels.subset([q.qid for q in queries]))


class Stopwatch:
    """Wall-clock seconds since creation (stage timings in metrics.json)."""

    def __init__(self):
        import time

        self._time = time.perf_counter
        self.t0 = self._time()

    def seconds(self) -> float:
        return round(self._time() - self.t0, 1)
