# %% [markdown]
# # FIRST 2/3: rerank TREC DL 2019 with single-token and generation decoding
#
# Every configuration `<model>:<mode>` reranks the top candidates of each first stage (BM25 and SPLADE++ED) in
# sliding windows: `zeroshot` is the untrained base model, `joint` / `lm` / `rank` the models trained by
# `first_train`; `single` sorts a window by the identifier logits after `[` (one forward pass, FIRST), `gen`
# greedily generates the permutation `[B] > [A] > ...` (RankZephyr-style). nDCG@10 is tested per query against
# BM25 and against the run's own first stage; Kendall τ compares the two decodings of the same model on the same
# windows; latency is seconds per window, one window at a time, on the same windows and model. A 135M model does not
# write a permutation by itself, so the smoke profile constrains generation to the `[X] > [Y]` grammar
# (`first.rerank.generation`); the latency cell still times free generation, the paper's baseline.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/first_rerank/` (ignored by
# git and DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/first_rerank"

# %%
from pathlib import Path

import lab.config
import lab.tracking
from lab.eval import plots
from lab.methods.first import common as first_common, rerank as first_rerank
from lab.rerank.evaluation import nested_metrics

cfg = lab.config.load("first", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("first_rerank", out_dir, params=lab.config.as_plain(cfg), profile=profile)
first_common.setup_torch(cfg, seed)
model_path = Path(lab.config.load("models", profile).out_dir) / cfg.model_role
adapters = Path("outputs") / "first_train" / "adapters"
sets = first_rerank.eval_sets(cfg, lab.config.load("data", profile).out_dir)
clock = first_common.Stopwatch()
runs, timing, generations = first_rerank.rerank_all(cfg, sets, model_path=model_path, adapters_dir=adapters)
rerank_seconds = clock.seconds()
first_rerank.save_runs(runs, Path(run.out_dir) / "runs")
summary, per_query, taus = first_rerank.evaluate_all(cfg, sets, runs)
run.log_metrics(nested_metrics(summary, taus))
run.log_table(summary, "summary")
run.log_table(per_query, "per_query")
run.log_table(taus, "kendall_tau")
summary[["dataset", "first_stage", "config", "measure", "mean", "delta", "p_value", "p_value_fs"]].round(4)

# %%
clock = first_common.Stopwatch()
latency = first_rerank.latency(cfg, model_path, adapters / "joint", sets[0].runs[cfg.rerank.baseline],
                               cfg.rerank.latency_windows)
timing["seconds"] = timing["seconds"].round(3)
timing["seconds_per_window"] = timing["seconds_per_window"].round(4)
run.log_table(timing, "timing")
run.log_table(generations, "generations")
run.log_metrics({"latency": latency.summary(), "seconds": {"rerank": rerank_seconds, "latency": clock.seconds()}})
timing

# %%
shown = per_query.assign(run=per_query["config"])
fig = plots.metric_by_run(shown, "ndcg_10", hue="first_stage",
                          title="TREC DL 2019 nDCG@10 per configuration (bars: mean, 95% CI; dots: queries)")
run.log_figure(fig, "ndcg_10_by_config")

# %% [markdown]
# The figure shows nDCG@10 per configuration on each first stage (`first_stage` is the first stage's own order; dots
# are queries), so a reranker that helps sits above its first stage's bar with most dots moved up. With
# `first.rerank.generation: constrained` the `gen` rows decode the whole permutation greedily under the `[X] > [Y]`
# grammar (their first step is the single-token forward, so top-1 always agrees); the `timing` table above gives
# seconds per window and, for generation, the share of complete permutations, and `latency` compares single-token
# with free generation on the same windows (the paper's speed comparison).
