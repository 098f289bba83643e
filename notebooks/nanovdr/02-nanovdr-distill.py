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
# # NanoVDR 2/3: distil the teacher's query side into a small text encoder, six objectives
#
# The student (a small text backbone + mean pooling + MLP projector into the teacher's width,
# L2-normalised) reads only query text. NanoVDR's objective is pointwise cosine alignment
# `L = 1 - cos(student(q), teacher(q))`; the five baselines the paper compares it with (MSE, InfoNCE with
# the teacher's top-1 page as pseudo-positive, listwise KL over the teacher's top-K, Margin-MSE, cosine +
# KL) train here at the same budget (same queries, epochs, optimiser and schedule). Each objective is its
# own MLflow run (tag `objective`, child of this stage's run); the best epoch by validation loss is kept.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/nanovdr_distill/` (ignored
# by git and DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/nanovdr_distill"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import lab.config
import lab.tracking
from lab.methods.nanovdr import distill as nanovdr_distill

cfg = lab.config.load("nanovdr", profile)
track = lab.config.load("tracking", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("nanovdr_distill", out_dir, params=lab.config.as_plain(cfg), profile=profile)
train_params = lab.config.as_plain(cfg.train)

curves = []
for objective in cfg.objectives:
    child = lab.tracking.start_run(
        "nanovdr_distill", profile=profile, out_dir=Path(run.out_dir) / "objectives" / objective,
        params={"seed": seed, "objective": objective, "student": cfg.student, "teacher": cfg.teacher,
                "train": train_params},
        experiment=track.experiment, artifacts_dir=track.artifacts_dir,
        extra_tags={"objective": objective, "mlflow.parentRunId": run.run_id,
                    "mlflow.runName": f"nanovdr_distill-{objective}-{profile}"})
    try:
        curve = nanovdr_distill.distill(cfg, objective, Path(run.out_dir) / "students" / f"{objective}.safetensors",
                                        index_dir=cfg.index_dir, seed=seed)
        for record in curve.drop(columns="objective").to_dict("records"):   # learning curve, step = epoch
            child.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))
    except BaseException:
        lab.tracking.end_run(child.run_id, "FAILED")
        raise
    best = curve[curve["epoch"] == curve.attrs["best_epoch"]].iloc[0]
    child.log_metrics({"best_epoch": curve.attrs["best_epoch"], "best_val_loss": best["val_loss"],
                       "best_val_cosine": best["val_cosine"]})
    child.log_metrics({"seconds": curve.attrs["seconds"]}, step=0)          # wall time: MLflow only
    lab.tracking.end_run(child.run_id, "FINISHED")
    run.log_metrics({objective: {"best_epoch": curve.attrs["best_epoch"], "best_val_loss": best["val_loss"],
                                 "best_val_cosine": best["val_cosine"]}})
    run.log_metrics({objective: {"seconds": curve.attrs["seconds"]}}, step=0)
    curves.append(curve)

curves = pd.concat(curves, ignore_index=True)
run.log_table(curves, "learning_curves")
curves.pivot(index="epoch", columns="objective", values="val_cosine").round(4)

# %%
sns.set_theme(style="whitegrid")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
sns.lineplot(data=curves, x="epoch", y="val_cosine", hue="objective", marker="o", ax=axes[0])
axes[0].set_title("Validation cosine to the teacher (held-out queries)")
sns.lineplot(data=curves, x="epoch", y="train_loss", hue="objective", legend=False, ax=axes[1])
axes[1].set(yscale="log", title="Training loss (each objective on its own scale)")
fig.tight_layout()
run.log_figure(fig, "learning_curves")

# %% [markdown]
# The objectives that regress the teacher's query vector itself (cosine, MSE, cosine + KL) pull the
# student's validation cosine towards the teacher's (0.53, 0.53 and 0.45 at the best epoch in the smoke
# run; the cosine and MSE curves lie on top of each other); InfoNCE, listwise KL and Margin-MSE only constrain scores against DL20 pages that are barely related
# to the training queries, and their students stay at 0.06-0.24 even as their own losses fall (they
# overfit: best epochs 2-9 of 20).
