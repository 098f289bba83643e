# %% [markdown]
# # LaSER 3/4: dense retrieval on DL19 for every variant, the K sweep and rewrite-then-retrieve
#
# Queries and passages are encoded by the latent view (K-1 soft tokens through the KV cache, mean of the K states,
# L2) with the variant's own K; the corpus is the union of the six first stages' top `eval.pool_depth` over the 43
# judged DL19 queries (the only passages with text here). The sweep re-encodes both sides with the full model at
# K = 1..5; rewrite-then-retrieve encodes query + the generated reasoning with the basic model. Paired t-tests
# against basic contrastive over the same queries. One MLflow child run per configuration.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root
# whatever the kernel's folder, reads the pipeline's outputs, writes its own into
# `outputs/interactive/laser_eval/` (ignored by git and DVC) and logs to MLflow tagged `source=interactive`; edit
# the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/laser_eval"

# %%
from pathlib import Path

import seaborn as sns

import lab.config
import lab.tracking
from lab.data.formats import write_trec_run
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.laser import bright_eval, data as laser_data, evaluate as laser_eval
from lab.models import setup_torch

cfg = lab.config.load("laser", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("laser_eval", out_dir, params=lab.config.as_plain(cfg), profile=profile)
data_dir = lab.config.load("data", profile).out_dir
run.log_datasets(data_dir, [cfg.eval.dataset])
setup_torch(cfg.threads, seed)
model_path = laser_data.model_path(cfg, lab.config.load("models", profile).out_dir)
bright = cfg.eval.benchmark == "bright"          # paper profile: BRIGHT's tasks instead of the DL19 pool
if bright:
    tasks = bright_eval.load_tasks(cfg)
    run.log_metrics({"bright": {t: {"queries": len(b.queries), "documents": len(b.docids), "excluded": b.n_excluded}
                                for t, b in tasks.items()}})
else:
    pool = laser_data.eval_pool(cfg, data_dir)
    reasoning = laser_data.read_reasoning("outputs/laser_reasoning/reasoning.csv")
    run.log_metrics({"pool": {"queries": len(pool.queries), "passages": len(pool.docids)}})

# %%
clock = laser_data.Stopwatch()
if bright:
    out = bright_eval.run_bright(cfg, tasks, model_path=model_path, adapters_dir="outputs/laser_train/adapters")
    summary, per_query, metrics = bright_eval.score(cfg, tasks, out)
    for (name, task), r in out.runs.items():
        write_trec_run(r, Path(run.out_dir) / "runs" / f"{name}.{task}.trec", tag=name)
    children = [(name, {"variant": variant, "k": k, "rewrite": False}) for name, variant, k in bright_eval.configs(cfg)]
else:
    out = laser_eval.run_all(cfg, pool, model_path=model_path, adapters_dir="outputs/laser_train/adapters",
                             reasoning=reasoning)
    summary, per_query, metrics = laser_eval.score(cfg, pool, out)
    for name, r in out.runs.items():
        write_trec_run(r, Path(run.out_dir) / "runs" / f"{name}.trec", tag=name)
    children = [(c.name, {"variant": c.variant, "k": c.k, "rewrite": c.rewrite}) for c in laser_eval.configs(cfg)]
run.log_table(summary, "summary")
run.log_table(per_query, "per_query")
run.log_metrics({**metrics, "seconds": out.seconds, "seconds_total": clock.seconds()})
for name, params in children:
    run.child(name, params=params, metrics=metrics[name])
summary.round(4)

# %%
sns.set_theme(style="whitegrid")
ax = sns.barplot(data=summary, y="config", x="ndcg_10", orient="h", color="steelblue")
ax.set_xlabel("BRIGHT avg nDCG@10 (12 tasks, excluded ids dropped)" if bright else
              "DL19 nDCG@10 (dense over the candidate pool)")
run.log_figure(ax.figure, "ndcg_10")

# %% [markdown]
# The figure shows nDCG@10 (DL19 at smoke; the BRIGHT average in the paper profile) of every evaluated configuration:
# the variants at their own K, the full model at each inference K of the sweep, and rewrite-then-retrieve.
