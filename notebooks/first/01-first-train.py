# %% [markdown]
# # FIRST 1/3: train the listwise reranker (joint LM + ranking loss) and its ablations
#
# FIRST (Reddy et al., EMNLP 2024) fine-tunes an LLM on listwise windows with `L = L_LM + λ·L_rank`: the token
# loss of the gold permutation `[B] > [A] > ...` plus a weighted RankNet loss on the identifier logits right after
# `[`, the logits single-token reranking reads. The ablation trains the same model with `L_LM` only (what
# RankZephyr does) and with `L_rank` only. Smoke profile: SmolLM2-135M-Instruct + LoRA on TREC DL 2020 BM25
# windows, gold orders from the graded qrels (ties broken by BM25 rank for the LM target; the RankNet loss skips tied
# pairs, half of the smoke windows' pairs); DL 2019 is never trained on (checked).
# Interrupted training resumes from `first.checkpoint_dir`.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/first_train/` (ignored by
# git and DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/first_train"

# %%
from pathlib import Path

import pandas as pd
import seaborn as sns

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.first import common as first_common, train as first_train

cfg = lab.config.load("first", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("first_train", out_dir, params=lab.config.as_plain(cfg), profile=profile)
first_common.setup_torch(cfg, seed)
model_path = Path(lab.config.load("models", profile).out_dir) / cfg.model_role
data_dir = lab.config.load("data", profile).out_dir
training = first_train.training_set(cfg, data_dir, seed)
run.log_metrics({"data": training.summary()})
pd.DataFrame([training.summary()])

# %%
results, seconds = {}, {}
for variant in cfg.variants:
    clock = first_common.Stopwatch()
    results[variant] = first_train.train_variant(cfg, variant, training, model_path=model_path,
                                                 adapters_dir=Path(run.out_dir) / "adapters", seed=seed,
                                                 checkpoint_root=run.output_path(cfg.checkpoint_dir), run=run)
    seconds[variant] = clock.seconds()
curves = first_train.curves(results)
endpoints = first_train.curve_endpoints(curves)
run.log_table(curves, "learning_curves")
run.log_metrics({"train": endpoints, "seconds": seconds})
pd.DataFrame(endpoints).T.round(4)

# %%
long = curves.melt(id_vars=["variant", "step"], value_vars=["lm", "rank"], var_name="loss", value_name="value")
long = long[((long["loss"] == "lm") & (long["variant"] != "rank")) | ((long["loss"] == "rank") & (long["variant"] != "lm"))]
sns.set_theme(style="whitegrid")
grid = sns.relplot(data=long, x="step", y="value", hue="variant", col="loss", kind="line", height=3.2, aspect=1.3,
                   facet_kws={"sharey": False})
grid.set_titles("{col_name} loss")
run.log_figure(grid.figure, "learning_curves")

# %% [markdown]
# The figure shows the per-step training losses of each objective: the token loss of the target permutation (joint
# and LM-only) and the RankNet loss on the first-identifier logits (joint and rank-only). In the smoke run (54 DL20
# windows, one epoch, 14 optimizer steps of 4 windows per objective) the first-five/last-five step means went from
# 0.76 to 0.57 (joint, token loss), 0.038 to 0.032 (joint, RankNet), 0.76 to 0.54 (LM-only) and 0.037 to 0.032
# (rank-only); the steps are noisy because each sees only four windows, the same four for every objective (same seed).
