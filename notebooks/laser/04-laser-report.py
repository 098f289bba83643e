# %% [markdown]
# # LaSER 4/4: Table 5 (ablations) beside the paper's, and the inference-K sweep
#
# The paper's column is BRIGHT average nDCG@10 (x100, Qwen3-0.6B, Table 5); ours is DL19 nDCG@10 with
# SmolLM2-135M-Instruct after a few CPU LoRA steps, so only the *direction* of each row against basic contrastive
# is compared, with the paired t-test's p-value: a difference within noise is `not reproduced`. Rows not run
# (not in `laser.variants`) say so.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root
# whatever the kernel's folder, reads the pipeline's outputs, writes its own into
# `outputs/interactive/laser_report/` (ignored by git and DVC) and logs to MLflow tagged `source=interactive`; edit
# the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/laser_report"

# %%
import seaborn as sns

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.laser import report as laser_report

cfg = lab.config.load("laser", profile)
run = lab.tracking.current("laser_report", out_dir, params=lab.config.as_plain(cfg), profile=profile)
summary = laser_report.load_summary("outputs/laser_eval")
table = laser_report.table5(cfg, summary)
sweep = laser_report.k_sweep(cfg, summary)
run.log_table(table, "table5")
run.log_table(sweep, "k_sweep")
run.log_metrics({"claims": laser_report.claims(cfg, summary)})
table.round(4)

# %%
sns.set_theme(style="whitegrid")
ax = sns.lineplot(data=sweep, x="k", y="ndcg_10", marker="o")
ax.set_xlabel("inference K (thinking steps, queries and passages)")
ax.set_ylabel("DL19 nDCG@10")
run.log_figure(ax.figure, "k_sweep")

# %% [markdown]
# The figure shows the full LaSER model's DL19 nDCG@10 as the number of inference thinking steps K varies (trained
# at K = 3).
