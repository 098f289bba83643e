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
# # SpeContext 1/4: the distilled LM (DLM)
#
# SpeContext (arXiv 2512.00722) uses a distilled LM of the target as its retrieval algorithm. No public code exists;
# our design (every choice a `specontext.dlm` parameter): the DLM keeps target layers `dlm.layers`, shares and freezes
# the target's embedding, and is distilled by KL on the target's cached top-k next-token logits over TREC DL 2019
# passage text through `lab.train.fit`. The undistilled copy (same layers, no training) is kept as the ablation.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root
# whatever the kernel's folder, reads the pipeline's outputs, writes its own into
# `outputs/interactive/specontext_dlm/` (ignored by git and DVC) and logs to MLflow tagged `source=interactive`; edit
# the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/specontext_dlm"

# %%
from pathlib import Path

import pandas as pd
import seaborn as sns
import torch

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.kv.retrieval_head import build_dlm
from lab.methods.specontext import dlm as spec_dlm
from lab.models import load_model, load_tokenizer, setup_torch

cfg = lab.config.load("specontext", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("specontext_dlm", out_dir, params=lab.config.as_plain(cfg), profile=profile)
setup_torch(cfg.threads, seed)
model_path = Path(lab.config.load("models", profile).out_dir) / cfg.model_role
data_dir = lab.config.load("data", profile).out_dir
target, tok = load_model(model_path, kind="causal_lm"), load_tokenizer(model_path)
texts = spec_dlm.passage_texts(data_dir, cfg.dlm.dataset, cfg.dlm.first_stage, seed)
d = cfg.dlm
seqs = spec_dlm.token_sequences(tok, texts, d.sequences + d.val_sequences, d.seq_len)
values, ids = spec_dlm.teacher_topk(target, seqs, d.top_k)
train, val = slice(0, d.sequences), slice(d.sequences, None)

# %%
undistilled = build_dlm(target, list(d.layers), d.freeze_embedding).eval()
kl_before = spec_dlm.heldout_kl(undistilled, seqs[val], values[val], ids[val], d.temperature)
dlm = build_dlm(target, list(d.layers), d.freeze_embedding)
result = spec_dlm.distill(dlm, seqs[train], values[train], ids[train], cfg, seed=seed, run=run)
kl_after = spec_dlm.heldout_kl(result.model, seqs[val], values[val], ids[val], d.temperature)
spec_dlm.save_dlm(result.model, Path(run.out_dir) / "dlm", d.layers)
curve = pd.DataFrame([{"step": r["step"], "loss": r["loss"]} for r in result.records("train")])
run.log_table(curve, "learning_curve")
run.log_metrics({"heldout_kl": {"undistilled": kl_before, "distilled": kl_after},
                 "train": {"first_loss": float(curve["loss"].iloc[0]), "last_loss": float(curve["loss"].iloc[-1]),
                           "steps": len(curve), "tokens": int(seqs[train].numel())}})
pd.Series({"held-out KL, undistilled": kl_before, "held-out KL, distilled": kl_after}).round(4)

# %%
sns.set_theme(style="whitegrid")
ax = sns.lineplot(data=curve, x="step", y="loss", marker="o")
ax.axhline(kl_before, ls="--", color="grey", label="undistilled (held-out)")
ax.axhline(kl_after, ls=":", color="black", label="distilled (held-out)")
ax.set(ylabel="top-k KL to the target", title=f"DLM = target layers {list(d.layers)}")
ax.legend()
run.log_figure(ax.figure, "distillation")

# %% [markdown]
# The figure shows the top-k KL of the DLM to the target per training step, with the held-out KL of the undistilled
# copy (dashed) and the distilled DLM (dotted): distillation should move the DLM's next-token distribution, and so
# (the paper's premise) its attention focus, toward the target's.
