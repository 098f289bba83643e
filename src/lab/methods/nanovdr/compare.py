"""NanoVDR's objectives side by side in MLflow (lab.tracking's convention).

``nanovdr_distill`` logs one child run per objective (param ``objective``, learning curves); the evaluation
happens later, in ``nanovdr_report``. :func:`log_objectives` puts what the report measured on those same
children, with the same names across siblings: ``retention`` (student / teacher nDCG@10), ``retention_ndcg_5``,
``ndcg_10``, ``ndcg_5``, ``delta`` / ``p_value`` (nDCG@10 vs the teacher, paired over the same queries), tag
``evaluated_by`` = the report's run id. So "which objective retains most" is one sort of the distill children.
The distill run is the latest FINISHED one of this profile in the database; when there is none (its outputs
came from a DVC cache, or another database) or the report runs interactively, the children are logged under the
report's run instead.
"""

from __future__ import annotations

import pandas as pd

from lab import tracking

PRIMARY = "ndcg_10"


def objective_metrics(summary: pd.DataFrame, retention: pd.DataFrame, objectives) -> dict[str, dict[str, float]]:
    """``{objective: {retention, retention_ndcg_5, ndcg_10, ndcg_5, delta, p_value}}`` of ``student-<objective>``."""
    out = {}
    for objective in objectives:
        name = f"student-{objective}"
        ret = retention[retention["run"] == name].set_index("measure")
        rows = summary[summary["run"] == name].set_index("measure")
        if PRIMARY not in ret.index:
            raise KeyError(f"run {name!r} has no {PRIMARY} retention (measures: {sorted(ret.index)})")
        values = {"retention": float(ret.loc[PRIMARY, "retention"])}
        values.update({f"retention_{m}": float(ret.loc[m, "retention"]) for m in ret.index if m != PRIMARY})
        values.update({m: float(rows.loc[m, "mean"]) for m in rows.index})
        values.update(delta=float(rows.loc[PRIMARY, "delta"]), p_value=float(rows.loc[PRIMARY, "p_value"]))
        out[objective] = {k: v for k, v in values.items() if pd.notna(v)}
    return out


def log_objectives(run, metrics: dict[str, dict[str, float]], *, profile: str, experiment: str = "lab") -> str:
    """Log ``metrics`` on the distill stage's objective children; returns where (``distill`` or ``report``)."""
    import time

    from mlflow.entities import Metric

    children = {} if run.interactive else {   # exploring never rewrites the pipeline's runs
        r.data.tags.get("objective"): r
        for r in tracking.child_runs("nanovdr_distill", profile=profile, experiment=experiment, root=run.root)}
    if not set(metrics) <= set(children):
        for objective, values in metrics.items():
            run.child(objective, params={"objective": objective}, metrics=values, tags={"objective": objective})
        return "report"
    client, ts = run._client, int(time.time() * 1000)
    for objective, values in metrics.items():
        child = children[objective].info.run_id
        client.log_batch(child, metrics=[Metric(k, float(v), ts, 0) for k, v in sorted(values.items())])
        client.set_tag(child, "evaluated_by", run.run_id)
    return "distill"
