"""Effectiveness measures through ir-measures' pytrec_eval backend (trec_eval conventions, exactly).

No metric is written by hand here: every value comes from pytrec_eval (trec_eval's C code), reached
through ``ir_measures`` so measures are named the readable way (``nDCG@10``, ``AP(rel=2)``,
``RR(rel=2)@10``, ``R(rel=2)@100``). trec_eval conventions that matter:

* ranks come from the scores, not from the stored rank: documents are sorted by score descending,
  ties broken by docid in *descending* string order. Runs with tied scores (RepLLaMA's 3-decimal
  scores) therefore get trec_eval's order, whatever order the run lists them in;
* ``rel=2`` makes binary measures count only grades >= 2 (TREC DL passage convention); nDCG uses the
  graded labels as gains;
* run queries without judgements are ignored.

**Judged queries missing from the run.** trec_eval averages over the queries the run covers, so a
reranker that drops a hard query would look better. ``missing="zero"`` (default) scores every judged
query that the run lacks (or holds with no candidates) as 0 for every measure, as ``trec_eval -c`` does,
and averages over all judged queries; ``missing="skip"`` averages over the covered ones only
(plain trec_eval). Either way :attr:`EvalResult.missing` lists them.

pytrec_eval has no rank cutoff for reciprocal rank, so ``RR@k`` is computed as trec_eval's
``recip_rank`` on the run cut to its top k in trec_eval's own order (score desc, docid desc), which
is what the cutoff means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import ir_measures
import pandas as pd

from lab.records import Qrels, Run

__all__ = ["EvalResult", "evaluate", "parse_measures", "trec_order"]

Scores = Mapping[str, Mapping[str, float]]


@dataclass
class EvalResult:
    means: dict[str, float]                 # measure key -> mean over the averaged queries
    per_query: pd.DataFrame                 # long form: qid, measure (key), value; qrels order
    qids: list[str]                         # the queries averaged over (qrels order)
    missing: list[str] = field(default_factory=list)    # judged, but absent/empty in the run
    unjudged: list[str] = field(default_factory=list)   # in the run, not in the qrels (ignored)
    missing_policy: str = "zero"

    @property
    def n(self) -> int:
        return len(self.qids)

    def values(self, key: str) -> dict[str, float]:
        """``{qid: value}`` of one measure, the input :func:`lab.eval.significance.paired_test` takes."""
        if key not in self.means:
            raise KeyError(f"no measure {key!r}; have {list(self.means)}")
        rows = self.per_query[self.per_query["measure"] == key]
        return dict(zip(rows["qid"], rows["value"].astype(float)))

    def wide(self) -> pd.DataFrame:
        """One row per qid, one column per measure key."""
        table = self.per_query.pivot(index="qid", columns="measure", values="value")
        return table.loc[self.qids, list(self.means)]


def parse_measures(measures: Mapping[str, str]) -> dict[str, ir_measures.Measure]:
    """``{key: "nDCG@10"}`` -> ``{key: Measure}``; refuses what pytrec_eval cannot compute exactly."""
    parsed = {}
    for key, text in measures.items():
        try:
            m = ir_measures.parse_measure(text)
        except (ValueError, NameError, SyntaxError, TypeError) as e:
            raise ValueError(f"measure {key!r}: cannot parse {text!r} ({e})") from None
        if not (ir_measures.pytrec_eval.supports(m) or _cut_rr(m) is not None):
            raise ValueError(
                f"measure {key!r}: {text!r} is not available from the pytrec_eval backend "
                "(trec_eval exactness is required here)"
            )
        parsed[key] = m
    return parsed


def _cut_rr(m) -> tuple[ir_measures.Measure, int] | None:
    """``RR(...)@k`` -> (the same RR without cutoff, k); None for anything else."""
    if m.NAME != "RR" or "cutoff" not in m.params:
        return None
    params = {k: v for k, v in m.params.items() if k != "cutoff"}
    base = ir_measures.measures.RR(**params)
    return (base, int(m.params["cutoff"])) if ir_measures.pytrec_eval.supports(base) else None


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(docid, score)`` in trec_eval's order: score descending, then docid descending."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def _as_scores(run: Run | Scores) -> dict[str, dict[str, float]]:
    if isinstance(run, Run):
        return run.scores()
    return {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items()}


def _as_judgements(qrels: Qrels | Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    j = qrels.judgements if isinstance(qrels, Qrels) else qrels
    return {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in j.items()}


def evaluate(
    run: Run | Scores,
    qrels: Qrels | Mapping[str, Mapping[str, int]],
    measures: Mapping[str, str],
    *,
    missing: Literal["zero", "skip"] = "zero",
) -> EvalResult:
    """Per-query values and means of ``measures`` (``{output key: ir-measures string}``).

    ``run`` is a :class:`Run` or ``{qid: {docid: score}}``; ``qrels`` a :class:`Qrels` or
    ``{qid: {docid: grade}}``. See the module docstring for ``missing``.
    """
    if missing not in ("zero", "skip"):
        raise ValueError(f"missing must be 'zero' or 'skip', got {missing!r}")
    if not measures:
        raise ValueError("no measures given")
    parsed = parse_measures(measures)
    judged = _as_judgements(qrels)
    scores = _as_scores(run)
    covered = {q: docs for q, docs in scores.items() if q in judged and docs}
    missing_qids = [q for q in judged if q not in covered]
    unjudged = [q for q in scores if q not in judged]

    values: dict[str, dict[str, float]] = {key: {} for key in parsed}   # key -> qid -> value
    plain = {key: m for key, m in parsed.items() if ir_measures.pytrec_eval.supports(m)}
    _calc(plain, judged, covered, values)
    cut_groups: dict[int, dict[str, ir_measures.Measure]] = {}
    for key, m in parsed.items():
        if key not in plain:
            base, k = _cut_rr(m)
            cut_groups.setdefault(k, {})[key] = base
    for k, group in cut_groups.items():
        top_k = {q: dict(trec_order(docs)[:k]) for q, docs in covered.items()}
        _calc(group, judged, top_k, values)

    qids = [q for q in judged if q in covered or missing == "zero"]
    rows = []
    for q in qids:
        for key in parsed:
            v = values[key].get(q)
            if v is None:
                if q in covered:   # pytrec_eval always reports covered judged queries; guard anyway
                    raise RuntimeError(f"pytrec_eval returned no {key} for covered query {q}")
                v = 0.0
            rows.append((q, key, float(v)))
    per_query = pd.DataFrame(rows, columns=["qid", "measure", "value"])
    means = {}
    for key in parsed:
        vals = [v for q, k, v in rows if k == key]
        means[key] = sum(vals) / len(vals) if vals else float("nan")
    return EvalResult(means, per_query, qids, missing_qids, unjudged, missing)


def _calc(group: Mapping[str, ir_measures.Measure], judged, run, values) -> None:
    if not group or not run:
        return
    by_measure: dict[ir_measures.Measure, list[str]] = {}
    for key, m in group.items():
        by_measure.setdefault(m, []).append(key)     # two keys may name the same measure
    evaluator = ir_measures.pytrec_eval.evaluator(list(by_measure), judged)
    for metric in evaluator.iter_calc(run):
        for key in by_measure[metric.measure]:
            values[key][metric.query_id] = float(metric.value)
