# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # SpeContext 4/4: report — fidelity vs budget, parameter reduction, changed set
#
# Collects what `specontext_dlm`, `specontext_heads` and `specontext_eval` measured into the claims
# `experiments/specontext/expected.yaml` checks: the gap of the retrieval head to the global oracle and to each
# baseline at equal budget, distilled vs undistilled DLM, the head's parameter reduction and the changed-set fraction.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root
# whatever the kernel's folder, reads the pipeline's outputs, writes its own into
# `outputs/interactive/specontext_report/` (ignored by git and DVC) and logs to MLflow tagged `source=interactive`; edit
# the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/specontext_report"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.specontext import report as spec_report

cfg = lab.config.load("specontext", profile)
run = lab.tracking.current("specontext_report", out_dir, params=lab.config.as_plain(cfg), profile=profile)
fid = pd.read_csv("outputs/specontext_eval/fidelity.csv")
reduction = pd.read_csv("outputs/specontext_heads/param_reduction.csv")
dlm_metrics = json.loads(Path("outputs/specontext_dlm/metrics.json").read_text())
needles = pd.read_csv("outputs/specontext_eval/needle_summary.csv")
claims = spec_report.claims(fid, reduction, dlm_metrics, needles)
run.log_metrics({"claims": claims})
run.log_table(spec_report.main_table(fid), "main_table")
pd.Series(claims).round(4)

# %%
sns.set_theme(style="whitegrid")
long = fid.melt(id_vars=["method", "budget", "context"], value_vars=["agreement", "kl", "mass_recall"],
                var_name="metric", value_name="value")
grid = sns.relplot(data=long, x="budget", y="value", hue="method", row="metric", col="context", kind="line",
                   marker="o", height=2.6, aspect=1.2, facet_kws={"sharey": "row"})
grid.set(xscale="log")
run.log_figure(grid.figure, "fidelity_vs_budget")

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
sns.barplot(data=fid, x="method", y="changed_fraction", hue="budget", ax=ax)
ax.set(ylabel="fraction of the set changed per step", xlabel="")
ax.tick_params(axis="x", rotation=40)
run.log_figure(fig, "changed_set")
reduction

# %% [markdown]
# Top: agreement, KL and attention-mass recall against budget per method and context; bottom: the fraction of the
# selected set that changes from one decoding step to the next (what elastic loading copies); the table gives the
# retrieval head's parameters against the DLM's and the target's, with and without the embedding.
