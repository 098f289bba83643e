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
# # SpeContext 2/4: head ranking and the pruned retrieval head
#
# Our design: each head of each DLM (distilled, undistilled) is scored by how much of the target's layer- and
# head-averaged attention mass its own top-B keys capture on calibration rows (sinks and the recent window
# excluded); the best `heads.keep` heads (combined by max) form the retrieval head, pruned to the embedding, the DLM
# layers below the top kept layer and that layer's norm + Q/K rows. The table gives the parameter reduction.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root
# whatever the kernel's folder, reads the pipeline's outputs, writes its own into
# `outputs/interactive/specontext_heads/` (ignored by git and DVC) and logs to MLflow tagged `source=interactive`; edit
# the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/specontext_heads"

# %%
import json
from pathlib import Path

import seaborn as sns

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.specontext import dlm as spec_dlm, heads as spec_heads
from lab.models import load_model, load_tokenizer, setup_torch
from lab.paths import write_json

cfg = lab.config.load("specontext", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("specontext_heads", out_dir, params=lab.config.as_plain(cfg), profile=profile)
setup_torch(cfg.threads, seed)
model_path = Path(lab.config.load("models", profile).out_dir) / cfg.model_role
data_dir = lab.config.load("data", profile).out_dir
target, tok = load_model(model_path, kind="causal_lm"), load_tokenizer(model_path)
texts = spec_dlm.passage_texts(data_dir, cfg.dlm.dataset, cfg.dlm.first_stage, seed)
skip = -(-(cfg.dlm.sequences + cfg.dlm.val_sequences) * cfg.dlm.seq_len // cfg.heads.length)   # after the DLM text
calib = spec_dlm.token_sequences(tok, texts, cfg.heads.sequences, cfg.heads.length, skip=skip)
dlms = {"distilled": spec_dlm.load_dlm(target, Path("outputs/specontext_dlm/dlm"), cfg.dlm.layers),
        "undistilled": spec_dlm.load_dlm(target, None, cfg.dlm.layers)}
tables = {name: spec_heads.rank(m, target, calib, cfg).assign(dlm=name) for name, m in dlms.items()}
kept = {name: spec_heads.kept(t, cfg.heads.keep) for name, t in tables.items()}
write_json(Path(run.out_dir) / "heads.json", {name: [list(h) for h in hs] for name, hs in kept.items()})
reduction = spec_heads.reduction_table(target, dlms, kept)
ranked = tables["distilled"].merge(tables["undistilled"], on=["dlm_layer", "target_layer", "head"],
                                   suffixes=("_distilled", "_undistilled"))
run.log_table(ranked.round(6), "head_scores")
run.log_table(reduction, "param_reduction")
best = {name: float(t["capture"].iloc[: cfg.heads.keep].mean()) for name, t in tables.items()}
heads_row = reduction[reduction.model == "head_distilled"].iloc[0]
run.log_metrics({"capture": best, "reduction": {
    "vs_dlm_with_embedding": float(heads_row["reduction_vs_dlm_with_embedding"]),
    "vs_dlm_without_embedding": float(heads_row["reduction_vs_dlm_without_embedding"])}})
print(json.dumps(kept))
reduction

# %%
sns.set_theme(style="whitegrid")
long = ranked.melt(id_vars=["dlm_layer", "target_layer", "head"], value_vars=["capture_distilled", "capture_undistilled"],
                   var_name="dlm", value_name="capture")
grid = sns.catplot(data=long, x="head", y="capture", hue="dlm", col="target_layer", kind="bar", height=3, aspect=1.1)
grid.set_titles("target layer {col_name}")
run.log_figure(grid.figure, "head_capture")

# %% [markdown]
# The figure shows, per DLM head (columns: the target layer it came from), the fraction of the target's attention
# mass outside sinks and window that its top-B keys capture, for the distilled and the undistilled DLM.
