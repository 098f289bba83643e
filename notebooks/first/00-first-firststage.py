# %% [markdown]
# # FIRST 0: the BEIR first stage — Contriever's top 100, the candidates the reranker reorders
#
# FIRST (Reddy et al., EMNLP 2024) reranks Contriever's top 100 on eleven BEIR sets (Table 1). This stage retrieves
# them from the text: each corpus is streamed in chunks into an exact faiss inner-product index (never held as one
# dict of texts), encoded as in Contriever's own BEIR evaluation (mean pooling, no L2 normalisation, dot product,
# 512 tokens, `title + " " + text`), and each set's judged queries get their top 100 as a TREC run in
# `runs/<set>.trec`; `first_rerank` reads those through `first.rerank.beir_runs`. A run whose encoder weights and
# settings are unchanged is copied from the previous outputs instead of being encoded again (`runs/manifest.json`).
# The smoke and tiny profiles list no BEIR set (this machine holds no BEIR corpus, and `first_rerank` reranks none
# there), so the stage writes an empty manifest in seconds; the paper profile (GPU) runs all eleven.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/first_firststage/` (ignored
# by git and DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/first_firststage"

# %%
from pathlib import Path

import lab.config
import lab.tracking
from lab.eval import plots
from lab.methods.first import common as first_common, firststage as first_firststage

cfg = lab.config.load("first", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("first_firststage", out_dir, params=lab.config.as_plain(cfg), profile=profile)
first_common.setup_torch(cfg, seed)
clock = first_common.Stopwatch()
# the stage writes into a staging folder; the last successful outputs are outputs/first_firststage
manifest = first_firststage.stage_runs(cfg, run.out_dir, previous=Path("outputs") / "first_firststage")
summary, per_query = first_firststage.evaluate_runs(cfg, Path(run.out_dir) / first_firststage.RUNS)
run.log_metrics({"sets": {k: {"queries": v["queries"], "reused": v["reused"], "seconds": v["seconds"],
                              **{r.measure: r.mean for r in summary[summary["dataset"] == k].itertuples()}}
                          for k, v in manifest.items()},
                 "n_sets": len(manifest), "seconds": {"total": clock.seconds()}})
run.log_table(summary, "summary")
run.log_table(per_query, "per_query")
summary

# %%
fig = plots.metric_by_run(per_query, "recall_100", hue=None,
                          title=f"{cfg.rerank.beir_first_stage} top 100: R@100 per BEIR set ({len(manifest)} sets, "
                                f"profile {profile})")
run.log_figure(fig, "recall_100_by_set")

# %% [markdown]
# The figure shows, per BEIR set, the share of each query's relevant documents that the dense top 100 holds (bars:
# mean with 95% CI; dots: queries): the ceiling for any reranking of these candidates (`summary.csv` adds nDCG@10,
# the first-stage row of Table 1). With no BEIR set in the profile (smoke, tiny) it is empty.
