"""FIRST's configurations as MLflow child runs, side by side in the compare view (lab.tracking's convention).

The ``first_report`` stage logs one child of its run per configuration (``dataset`` x ``first_stage`` x
``model`` x ``decoding``; the first stage's own order is ``model=none, decoding=none``), all with the same
metric names: ``ndcg_10``, ``ndcg_5`` (one per ``MEASURES`` entry), ``delta`` / ``p_value`` (nDCG@10 vs the
baseline first stage, paired test over the same queries), ``p_value_fs`` (vs the configuration's own first
stage) and ``seconds_per_window`` (reranked configurations only: a first stage reranks nothing).

The numbers are re-evaluated from the TREC run files ``first_rerank`` saved (``outputs/first_rerank/runs``),
so nDCG@5 comes without rerunning the reranker (~20 min on smoke); nDCG@10 is checked against
``summary.csv`` (to its 6 written decimals), so the children can never disagree with the stage's own table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lab.data.formats import read_trec_run
from lab.data.trecdl import load_materialised
from lab.methods.first.config import FirstConfig
from lab.rerank.evaluation import compare, split_name

MEASURES = {"ndcg_10": "nDCG@10", "ndcg_5": "nDCG@5"}
PRIMARY = "ndcg_10"


def configurations(cfg: FirstConfig, data_dir: str | Path, runs_dir: str | Path, summary: pd.DataFrame,
                   timing: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, run): params ``dataset, first_stage, model, decoding`` + the metric columns."""
    r = cfg.rerank
    rows = []
    for name in r.datasets:
        ds = load_materialised(data_dir, name, ())
        qids = ds.qids[: r.max_queries] if r.max_queries else ds.qids   # the queries first_rerank evaluated
        folder = Path(runs_dir) / name
        runs = {p.stem.replace("__", "/"): read_trec_run(p, p.stem.replace("__", "/")).subset(qids)
                for p in sorted(folder.glob("*.trec"))}
        if not runs:
            raise FileNotFoundError(f"{folder}: no TREC runs (run the DVC 'first_rerank' stage first)")
        base = r.baseline if r.baseline in runs else next(iter(runs))
        table, _ = compare(runs, ds.qrels.subset(qids), MEASURES, dataset=name, baseline=base, test=r.test,
                           alpha=r.alpha)
        wide = table.pivot(index="run", columns="measure", values="mean")
        primary = table[table["measure"] == PRIMARY].set_index("run")
        for run_name in runs:
            fs, config = split_name(run_name)
            model, _, decoding = config.rpartition("_") if config != "first_stage" else ("none", "", "none")
            row = {"dataset": name, "first_stage": fs, "config": config, "model": model, "decoding": decoding,
                   **{m: float(wide.loc[run_name, m]) for m in MEASURES},
                   "delta": float(primary.loc[run_name, "delta"]), "p_value": float(primary.loc[run_name, "p_value"]),
                   "p_value_fs": float(primary.loc[run_name, "p_value_fs"])}
            t = timing[(timing["dataset"] == name) & (timing["first_stage"] == fs) & (timing["config"] == config)]
            if len(t):
                row["seconds_per_window"] = float(t["seconds_per_window"].iloc[0])
            rows.append(row)
    out = pd.DataFrame(rows)
    check = summary[summary["measure"] == PRIMARY].merge(out, on=["dataset", "first_stage", "config"])
    if len(check) != len(out) or ((check["mean"] - check[PRIMARY]).abs() > 5e-7).any():   # summary.csv holds 6 decimals
        raise ValueError(f"{runs_dir}: the saved runs' {PRIMARY} disagrees with summary.csv "
                         "(stale first_rerank outputs?)")
    return out


def log_configurations(run, table: pd.DataFrame) -> list:
    """One child of ``run`` per row of :func:`configurations`; NaN metrics (a baseline's own p-value) are left out."""
    params = ["dataset", "first_stage", "model", "decoding"]
    metrics = [c for c in table.columns if c not in (*params, "config")]
    children = []
    for row in table.to_dict("records"):
        values = {m: row[m] for m in metrics if pd.notna(row.get(m))}
        name = f"{row['first_stage']}/{row['config']}"
        if table["dataset"].nunique() > 1:
            name += f"@{row['dataset']}"
        children.append(run.child(name, params={p: row[p] for p in params}, metrics=values))
    return children
