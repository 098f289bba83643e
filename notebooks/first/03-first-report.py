# %% [markdown]
# # FIRST 3/3: report — configurations, ablation, agreement and latency
#
# Collects what `first_train` and `first_rerank` measured into the tables of the paper's comparisons: BM25 alone,
# zero-shot and trained models under single-token and generation decoding (main table), the training objectives
# under single-token decoding (ablation: LM-only, rank-only, joint), Kendall τ between the two decodings, and
# seconds per window. `metrics.json` holds the claims `experiments/first/expected.yaml` checks, each difference
# between two configurations with the p-value of its paired test over the same queries (`*_p`).
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/first_report/` (ignored by
# git and DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/first_report"

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.first import compare as first_compare
from lab.rerank.evaluation import ablation_table, average_over, claims, main_table

cfg = lab.config.load("first", profile)
run = lab.tracking.current("first_report", out_dir, params=lab.config.as_plain(cfg), profile=profile)
rerank_dir, train_dir = Path("outputs") / "first_rerank", Path("outputs") / "first_train"
summary = pd.read_csv(rerank_dir / "summary.csv")
taus = pd.read_csv(rerank_dir / "kendall_tau.csv")
timing = pd.read_csv(rerank_dir / "timing.csv")
per_query = pd.read_csv(rerank_dir / "per_query.csv", dtype={"qid": str})
rerank_metrics = json.loads((rerank_dir / "metrics.json").read_text())
train_metrics = json.loads((train_dir / "metrics.json").read_text())
dataset, baseline = cfg.rerank.datasets[0], cfg.rerank.baseline
configs = ["zeroshot_single", "zeroshot_gen", "joint_single", "joint_gen", "lm_single", "lm_gen", "rank_single"]
main = main_table(summary, "ndcg_10", configs)
ablation = ablation_table(summary, "ndcg_10", baseline, cfg.variants)
found = claims(summary, taus, rerank_metrics["latency"]["ratio"], dataset=dataset, first_stage=baseline,
               timing=timing, free_gen_complete=rerank_metrics["latency"].get("gen_complete"),
               per_query=per_query, test=cfg.rerank.test)
beir_names = [Path(name).name for name in cfg.rerank.beir]
beir_avg = average_over(summary, beir_names, cfg.rerank.beir_first_stage) if beir_names else {}
run.log_metrics({"claims": found, "paper": {"beir_avg": beir_avg}, "train": train_metrics["train"], "latency": rerank_metrics["latency"],
                 "seconds": {"train": train_metrics["seconds"], "rerank": rerank_metrics["seconds"]}})
run.log_table(main.round(4), "main_table")
run.log_table(ablation.round(4), "ablation")
# one MLflow child run per configuration (params model/decoding/first_stage, metrics ndcg_10, ndcg_5, p_value, ...)
configurations = first_compare.configurations(cfg, lab.config.load("data", profile).out_dir, rerank_dir / "runs",
                                              summary, timing)
first_compare.log_configurations(run, configurations)
main.round(4)

# %%
ablation.round(4)

# %%
pd.Series(found).round(4)

# %%
sns.set_theme(style="whitegrid")
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
bars = summary[(summary["measure"] == "ndcg_10")]
sns.barplot(data=bars, x="config", y="mean", hue="first_stage", ax=left)
left.set(ylabel="nDCG@10", xlabel="", ylim=(0, 1), title=f"{dataset}: nDCG@10 per configuration")
left.tick_params(axis="x", rotation=30)
lat = rerank_metrics["latency"]
speed = pd.DataFrame({"decoding": ["single-token", "constrained gen", "free gen"],
                      "seconds per window": [lat["single_s_per_window"], lat.get("constrained_s_per_window", float("nan")),
                                             lat["gen_s_per_window"]]})
sns.barplot(data=speed, x="decoding", y="seconds per window", ax=right)
right.set(xlabel="", title=f"latency (free gen / single {lat['ratio']:.2f}x)")
fig.tight_layout()
run.log_figure(fig, "ndcg_and_latency")

# %% [markdown]
# Left: nDCG@10 of every configuration on both first stages (`first_stage` is the first stage's own order); right:
# seconds per window of the trained model for single-token, grammar-constrained and free generation on the same
# windows. The claims table above is what `python -m lab.expected first` checks: whether training beats the first
# stage and zero-shot, whether the joint objective beats LM-only, the single-token vs generation gap and agreement,
# and the latency ratio.
