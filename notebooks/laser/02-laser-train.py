# %% [markdown]
# # LaSER 2/4: train the variants (Table 5 rows) through the one trainer
#
# Every trained variant starts from the same base model and LoRA init and sees the same DL20 (query, positive,
# hard negative) triples in the same order; they differ only in K and the loss weights of
# `L = L_cl(latent) + w_e L_cl(explicit) + w_kl KL(p_E || p_L) + w_mid L_mid` (laser.rows). DL19 is never trained on
# (checked). One MLflow child run per variant (params `variant`, `k`, the weights); the per-step loss parts are its
# `curve.*` metrics. The oracle row, when selected, is a control: its reasoning is a held-out rel-3 passage.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root
# whatever the kernel's folder, reads the pipeline's outputs, writes its own into
# `outputs/interactive/laser_train/` (ignored by git and DVC) and logs to MLflow tagged `source=interactive`; edit
# the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/laser_train"

# %%
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import seaborn as sns

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.laser import data as laser_data, train as laser_train
from lab.models import setup_torch

cfg = lab.config.load("laser", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("laser_train", out_dir, params=lab.config.as_plain(cfg), profile=profile)
data_dir = lab.config.load("data", profile).out_dir
run.log_datasets(data_dir, [cfg.train.dataset])
setup_torch(cfg.threads, seed)
model_path = laser_data.model_path(cfg, lab.config.load("models", profile).out_dir)
reasoning = laser_data.read_reasoning("outputs/laser_reasoning/reasoning.csv")
training = laser_data.training_set(cfg, data_dir, reasoning, seed=seed)
run.log_metrics({"data": training.summary()})
pd.DataFrame([training.summary()])

# %%
results, seconds = {}, {}
for name in [v for v in cfg.variants if cfg.rows[v].train]:
    row = cfg.rows[name]
    with run.child(name, params={"variant": name, "k": row.k, **asdict(row)}, end=False) as child:
        clock = laser_data.Stopwatch()
        results[name] = laser_train.train_variant(cfg, name, training, model_path=model_path,
                                                  adapters_dir=Path(run.out_dir) / "adapters", seed=seed,
                                                  checkpoint_root=cfg.checkpoint_dir, run=child)
        seconds[name] = clock.seconds()
        child.log_metrics({"seconds": seconds[name], "steps": len(results[name].records())})
curves = laser_train.curves(results)
endpoints = laser_train.curve_endpoints(curves)
run.log_table(curves, "learning_curves")
run.log_metrics({"train": endpoints, "seconds": seconds, "seconds_total": sum(seconds.values())})
pd.DataFrame(endpoints).T.round(4)

# %%
long = curves.melt(id_vars=["variant", "step"], value_vars=["cl_latent", "cl_explicit", "kl", "mid"],
                   var_name="part", value_name="value")
sns.set_theme(style="whitegrid")
grid = sns.relplot(data=long, x="step", y="value", hue="variant", col="part", kind="line", height=2.8, aspect=1.1,
                   facet_kws={"sharey": False})
grid.set_titles("{col_name}")
run.log_figure(grid.figure, "learning_curves")

# %% [markdown]
# The figure shows each loss part per optimizer step for every trained variant (a part whose weight is 0 stays at 0):
# the latent and explicit InfoNCE terms, the output KL and the step-wise trajectory KL.
