# %% [markdown]
# # LaSER 1/4: explicit reasoning per query (cached)
#
# LaSER's explicit view encodes the query followed by a reasoning text r_q. The paper trains on LaSER-Training's
# stored rationales; here the smoke backbone itself (SmolLM2-135M-Instruct) writes r_q greedily with the reasoning
# prompt of `lab/retrieval/prompts/laser_v1.yaml` for DL20 (training) and DL19 (used only by rewrite-then-retrieve).
# The number of trajectory segments per trace (blank-line ends + the last token) is what the process alignment
# samples K states from.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root
# whatever the kernel's folder, reads the pipeline's outputs, writes its own into
# `outputs/interactive/laser_reasoning/` (ignored by git and DVC) and logs to MLflow tagged `source=interactive`; edit
# the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/laser_reasoning"

# %%
import seaborn as sns

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.laser import data as laser_data
from lab.models import setup_torch

cfg = lab.config.load("laser", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("laser_reasoning", out_dir, params=lab.config.as_plain(cfg), profile=profile)
data_dir = lab.config.load("data", profile).out_dir
run.log_datasets(data_dir, list(cfg.reasoning.datasets))
setup_torch(cfg.threads, seed)
model_path = laser_data.model_path(cfg, lab.config.load("models", profile).out_dir)
model, tok = laser_data.load_base(model_path, cfg.optim.dtype)

# %%
clock = laser_data.Stopwatch()
table = laser_data.reasoning_table(cfg, data_dir, model, tok)
seconds = clock.seconds()
run.log_table(table, "reasoning")
stats = {name: {"queries": len(g), "chars_mean": float(g["chars"].mean()), "new_tokens_mean": float(g["new_tokens"].mean()),
                "segments_mean": float(g["segments"].mean()), "segments_median": float(g["segments"].median()),
                "short": int((g["chars"] < cfg.loss.min_reasoning_chars).sum())}
         for name, g in table.groupby("dataset", sort=False)}
run.log_metrics({"reasoning": stats, "seconds": seconds})
table.groupby("dataset")[["chars", "new_tokens", "segments"]].describe().T.round(1)

# %%
sns.set_theme(style="whitegrid")
grid = sns.displot(data=table, x="segments", hue="dataset", discrete=True, multiple="dodge", height=3.2, aspect=1.6)
grid.set_axis_labels("trajectory segments per trace", "queries")
run.log_figure(grid.figure, "segments")

# %% [markdown]
# The figure shows how many trajectory segments each generated trace has, per dataset; with K = 3 latent steps,
# traces with fewer than 3 segments repeat their last segment state in the process alignment.
