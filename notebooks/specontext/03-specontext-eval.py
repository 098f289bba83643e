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
# # SpeContext 3/4: fidelity and needles vs the baselines at equal budget
#
# Every method decodes from a copy of one full-KV prefill of each haystack (TREC DL 2020 passages): teacher-forced
# over the full-KV greedy continuation we measure top-1 agreement and KL(full || method), the attention mass the
# attended rows capture, the recall of the global oracle's set and the fraction of the set that changes per step
# (elastic loading's transfer). Needles (passkey, RULER single / multi-key / multi-value, written by us on real
# passages) are scored only where full KV succeeds; its success rate comes first.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root
# whatever the kernel's folder, reads the pipeline's outputs, writes its own into
# `outputs/interactive/specontext_eval/` (ignored by git and DVC) and logs to MLflow tagged `source=interactive`; edit
# the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/specontext_eval"

# %%
import json
from pathlib import Path

import pandas as pd
import seaborn as sns
import torch

import lab.config
import lab.tracking
from lab.eval import plots  # noqa: F401  (sets the headless backend)
from lab.methods.specontext import benchmarks as spec_bench, dlm as spec_dlm, evaluate as spec_eval, heads as spec_heads
from lab.models import load_model, load_tokenizer, setup_torch

cfg = lab.config.load("specontext", profile)
seed = lab.config.read_params().get("seed", 0)
run = lab.tracking.current("specontext_eval", out_dir, params=lab.config.as_plain(cfg), profile=profile)
setup_torch(cfg.threads, seed)
model_path = Path(lab.config.load("models", profile).out_dir) / cfg.model_role
data_dir = lab.config.load("data", profile).out_dir
target, tok = load_model(model_path, kind="causal_lm"), load_tokenizer(model_path)
texts = spec_dlm.passage_texts(data_dir, cfg.eval.dataset, cfg.eval.first_stage, seed)
kept = json.loads(Path("outputs/specontext_heads/heads.json").read_text())
dlms = {"specontext": spec_dlm.load_dlm(target, Path("outputs/specontext_dlm/dlm"), cfg.dlm.layers),
        "specontext_undistilled": spec_dlm.load_dlm(target, None, cfg.dlm.layers)}
heads = {m: spec_heads.build_selector(d, [tuple(h) for h in kept["distilled" if m == "specontext" else "undistilled"]], m)
         for m, d in dlms.items()}
n_layers = target.config.num_hidden_layers

rows = []
for context in cfg.eval.contexts:
    for sample in range(cfg.eval.samples):
        start = sample * len(texts) // max(1, cfg.eval.samples)
        prompt = spec_dlm.token_sequences(tok, texts[start:] + texts[:start], 1, context)     # (1, L)
        selectors = spec_eval.make_selectors(cfg, cfg.eval.methods, heads, n_layers)
        for row in spec_eval.fidelity(target, prompt, selectors, cfg.eval.budgets, cfg, cfg.eval.continuation):
            rows.append({**row, "sample": sample})
fid = pd.DataFrame(rows)
run.log_table(fid, "fidelity")
table = fid.groupby(["method", "context", "budget"], as_index=False).mean(numeric_only=True).drop(columns="sample")
for r in table.to_dict("records"):
    run.child(f"{r['method']}-B{r['budget']}-L{r['context']}",
              params={"method": r["method"], "budget": r["budget"], "context": r["context"]},
              metrics={k: r[k] for k in ("agreement", "kl", "mass_recall", "oracle_recall", "changed_fraction",
                                         "changed_bytes_per_step")})
run.log_metrics({"fidelity": {f"{r['method']}.B{r['budget']}.L{r['context']}": {
    k: r[k] for k in ("agreement", "kl", "mass_recall", "oracle_recall", "changed_fraction")}
    for r in table.to_dict("records")}})
table.round(4)

# %%
needle_rows = []
for context in cfg.eval.needle_contexts:
    selectors = spec_eval.make_selectors(cfg, cfg.eval.methods, heads, n_layers)
    needle_rows += spec_eval.needle_eval(target, tok, texts, selectors, cfg.eval.needle_budgets, cfg, context, seed)
needles = pd.DataFrame(needle_rows)
run.log_table(needles, "needles")
summary = spec_eval.needle_summary(needles)
run.log_table(summary, "needle_summary")
full_rate = float((needles[needles.method == "full"]["score"] >= 1.0).mean())
run.log_metrics({"needles": {"full_success_rate": full_rate, "scored": int(summary["scored_needles"].max()) if len(summary) else 0,
                             **{f"{r['method']}.B{r['budget']}": r["accuracy"] for r in summary.to_dict("records")}}})
print(f"full-KV needle success rate: {full_rate:.2f}")
summary

# %%
bench_rows = []          # paper profile: LongBench / RULER from the Hub (specontext.bench.sets; none in smoke)
for name in cfg.bench.sets:
    selectors = spec_eval.make_selectors(cfg, cfg.eval.methods, heads, n_layers)
    bench_rows += spec_bench.benchmark_eval(target, tok, spec_bench.load(name, cfg.bench.samples), selectors,
                                            cfg.bench.budgets, cfg)
if bench_rows:
    bench = pd.DataFrame(bench_rows)
    run.log_table(bench, "benchmarks")
    bench_table = bench.groupby(["set", "method", "budget"], as_index=False)["score"].mean()
    run.log_metrics({"benchmarks": {f"{r['set']}.{r['method']}.B{r['budget']}": r["score"]
                                    for r in bench_table.to_dict("records")}})

# %%
sns.set_theme(style="whitegrid")
grid = sns.relplot(data=table, x="budget", y="agreement", hue="method", col="context", kind="line", marker="o",
                   height=3.2, aspect=1.1)
grid.set(xscale="log")
run.log_figure(grid.figure, "agreement_vs_budget")

# %% [markdown]
# The figure shows teacher-forced top-1 agreement with full KV against the budget B for every method and context
# length; the global oracle is the ceiling of one shared set, the per-layer oracle that of layer-wise retrieval.
