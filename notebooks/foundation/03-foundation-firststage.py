# %% [markdown]
# # First-stage baselines on TREC DL 2019 and 2020
#
# Evaluates the six first-stage top-100 runs every reranker in this repo starts from, with trec_eval
# conventions (graded nDCG@10; MAP, MRR@10 and R@100 count grade ≥ 2 as relevant), and tests each run
# against BM25 per query.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/firststage/` (ignored by
# git and DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/firststage"

# %%
import pandas as pd

import lab.config
import lab.tracking
from lab.data import trecdl
from lab.eval import plots
from lab.eval.report import compare_runs

cfg = lab.config.load("firststage", profile)
data_cfg = lab.config.load("data", profile)
run = lab.tracking.current("firststage", out_dir, params=lab.config.as_plain(cfg), profile=profile)

comparisons = {}
for name in cfg.datasets:
    ds = trecdl.load_materialised(data_cfg.out_dir, name, cfg.runs)
    comparisons[name] = compare_runs(ds.runs, ds.qrels, cfg.measures, baseline=cfg.baseline,
                                     test=cfg.test, alpha=cfg.alpha)
    run.log_metrics({name: comparisons[name].means()})

summary = pd.concat([c.summary.assign(dataset=n) for n, c in comparisons.items()], ignore_index=True)
per_query = pd.concat([c.per_query.assign(dataset=n) for n, c in comparisons.items()], ignore_index=True)
run.log_table(summary[["dataset", "run", "measure", "mean", "delta", "p_value", "significant", "n"]], "summary")
run.log_table(per_query[["dataset", "run", "qid", "measure", "value"]], "per_query")
ndcg = summary[summary["measure"] == "ndcg_10"]
run.log_table(pd.DataFrame({"run": ndcg["run"] + " / " + ndcg["dataset"], "ndcg_10": ndcg["mean"]}), "ndcg_10")
summary.pivot_table(index="run", columns=["dataset", "measure"], values="mean").loc[list(cfg.runs)].round(4)

# %%
fig = plots.metric_by_run(per_query, "ndcg_10", hue="dataset", order=list(cfg.runs),
                          title="nDCG@10 per first stage (bars: mean, 95% CI; dots: queries)")
run.log_figure(fig, "ndcg_10_by_run")

# %% [markdown]
# The learned first stages (SPLADE++ED, RepLLaMA, TAS-B, ada2) score about 0.2 nDCG@10 above BM25 on both years
# (`summary.csv` holds the per-query paired test); BM25's 0.5058 / 0.4796 are the baselines every reranker here
# must beat.
