# %% [markdown]
# # Data: TREC DL 2019/2020 passage, with six first-stage top-100 runs
#
# Materialises the datasets every paper stage reads: judged topics, graded qrels and the first-stage
# candidate lists with passage text (rank_llm's BM25, BM25+RM3, TAS-B, ada2, SPLADE++ED, RepLLaMA runs),
# plus the unlabelled MS MARCO dev-subset query pool. Files come from `LAB_DATA_MIRROR`, else a verified
# download (SHA-256), never from an unverified copy.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/data/` (ignored by git and
# DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/data"

# %%
import pandas as pd
import seaborn as sns

import lab.config
import lab.tracking
from lab.data import trecdl
from lab.eval import plots  # noqa: F401  (sets the headless backend)

cfg = lab.config.load("data", profile)
run = lab.tracking.current("data", out_dir, params=lab.config.as_plain(cfg), profile=profile)
summary = trecdl.materialise(cfg, run.output_path(cfg.out_dir))

# %%
rows = [
    {"dataset": name, "grade": int(grade), "judgements": n}
    for name, s in summary["datasets"].items()
    for grade, n in s["grades"].items()
]
grades = pd.DataFrame(rows)
counts = pd.DataFrame(
    [{"dataset": name, "queries": s["queries"], "judgements": s["judgements"],
      **{f"candidates.{fs}": n for fs, n in s["candidates"].items()}}
     for name, s in summary["datasets"].items()]
).set_index("dataset")
run.log_metrics({
    name: {"queries": s["queries"], "judgements": s["judgements"], "candidates": s["candidates"],
           "grades": s["grades"]}
    for name, s in summary["datasets"].items()
})
run.log_metrics({f"pools.{pool}.queries": p["queries"] for pool, p in summary["pools"].items()})
run.log_table(grades, "grades")
counts

# %%
sns.set_theme(style="whitegrid")
grid = sns.catplot(data=grades, x="grade", y="judgements", col="dataset", kind="bar", height=3.2, aspect=1.2)
grid.set_titles("{col_name}")
run.log_figure(grid.figure, "qrels_grades")

# %% [markdown]
# Most judged passages are non-relevant (grade 0); binary measures count only grades ≥ 2 as relevant
# (the TREC DL passage convention), which leaves 2,501 (DL19) and 1,666 (DL20) relevant pairs.
