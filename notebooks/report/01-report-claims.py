# %% [markdown]
# # Report: did it reproduce?
#
# Every paper's claims (`experiments/<paper>/expected.yaml`) checked against what the pipeline measured: the paper's
# value, ours (read from the stage outputs and bench JSONs, never typed), the comparison and, for a difference
# between two systems, the paired test's p-value; then each paper's central table beside ours, its results tables
# and figures. Writes `index.html` (self-contained, opens offline), its markdown twin `index.md` (the source of
# README's results tables: `make readme`) and `claims.csv`.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/report/` (ignored by git
# and DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/report"

# %%
from pathlib import Path

import pandas as pd

import lab.config
import lab.tracking
from lab import report as lab_report

cfg = lab.config.load("report", profile)
run = lab.tracking.current("report", out_dir, params=lab.config.as_plain(cfg), profile=profile)
report = lab_report.build(papers=cfg.papers, title=cfg.title)
claims = pd.DataFrame(lab_report.claim_rows(report))
run.log_metrics({"verdicts": lab_report.verdict_counts(report)})
claims[["paper", "claim", "profile", "paper_value", "ours", "p", "verdict"]]

# %%
fig = lab_report.verdict_figure(report)
report.extra_figures.append(run.log_figure(fig, "verdicts"))
paths = lab_report.write(report, run.out_dir)
run.log_table(claims, "claims")
for path in (paths["html"], paths["md"]):
    run.log_artifact(path, "report")
pd.DataFrame([{"paper": p.name, **report.counts(p.name, report.outputs_profile)} for p in report.papers])

# %% [markdown]
# The figure counts each paper's claims by verdict and profile; only claims of the profile the outputs were made
# with can be `reproduced`, the others read `not run`. `index.html` holds the tables, every claim's reason and
# command, and the figures of each paper's report stage.
