"""Compare several runs on one qrels: means, per-query values and a paired test against a baseline.

This is the table every paper stage ends with (first-stage baselines, rerankers, students), so it
lives here once; notebooks only call it and plot the result with :mod:`lab.eval.plots`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pandas as pd

from lab.eval.metrics import evaluate
from lab.eval.significance import paired_test
from lab.records import Qrels, Run


@dataclass
class Comparison:
    summary: pd.DataFrame     # run, measure, mean, delta, p_value, significant, n (one row per run x measure)
    per_query: pd.DataFrame   # run, qid, measure, value

    def means(self) -> dict[str, dict[str, float]]:
        """``{run: {measure: mean}}``: the nesting metrics.json uses."""
        out: dict[str, dict[str, float]] = {}
        for row in self.summary.itertuples():
            out.setdefault(row.run, {})[row.measure] = float(row.mean)
        return out

    def tests(self, reference: str, test: str = "ttest", seed: int = 0) -> dict[str, dict[str, float]]:
        """``{run: {measure_delta, measure_p}}``: every other run tested per query against ``reference`` (the
        metrics.json nesting; a claim that one run beats another reads its p-value here)."""
        values = {(run, m): dict(zip(g["qid"].astype(str), g["value"]))
                  for (run, m), g in self.per_query.groupby(["run", "measure"], sort=False)}
        out: dict[str, dict[str, float]] = {}
        for (run, measure), v in values.items():
            if run != reference and (reference, measure) in values:
                t = paired_test(v, values[reference, measure], method=test, seed=seed)
                out.setdefault(run, {}).update({f"{measure}_delta": t.mean_diff, f"{measure}_p": t.pvalue})
        return out

    def table(self, measure: str) -> pd.DataFrame:
        """A readable one-measure table (runs as rows), rounded to 4 decimals as papers report."""
        t = self.summary[self.summary["measure"] == measure].set_index("run")
        return t[["mean", "delta", "p_value", "significant"]].round(4)


def compare_runs(runs: Mapping[str, Run], qrels: Qrels, measures: Mapping[str, str], *,
                 baseline: str | None = None, test: str = "ttest", alpha: float = 0.05,
                 seed: int = 0) -> Comparison:
    """Evaluate every run with trec_eval conventions; test each against ``baseline`` per query.

    Queries a run misses count as 0 (``missing="zero"``) so every run is averaged over the same
    judged queries and the paired test aligns. The baseline's own row has delta 0 and no p-value.
    """
    if baseline is not None and baseline not in runs:
        raise KeyError(f"baseline {baseline!r} is not among the runs {list(runs)}")
    results = {name: evaluate(run, qrels, measures, missing="zero") for name, run in runs.items()}
    rows, per_query = [], []
    for name, res in results.items():
        frame = res.per_query.assign(run=name)
        per_query.append(frame[["run", "qid", "measure", "value"]])
        for key in measures:
            mean, delta, p = res.means[key], 0.0, float("nan")
            if baseline is not None and name != baseline:
                t = paired_test(res.values(key), results[baseline].values(key), method=test, seed=seed)
                delta, p = t.mean_diff, t.pvalue
            rows.append({"run": name, "measure": key, "mean": mean, "delta": delta, "p_value": p,
                         "significant": bool(p < alpha), "n": res.n})
    return Comparison(pd.DataFrame(rows), pd.concat(per_query, ignore_index=True))
