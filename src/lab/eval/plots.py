"""Seaborn figures shared by the stages (return the Figure; the caller logs it via lab.tracking)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # stages run headless under papermill; JupyterLab's inline backend still works
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def metric_by_run(per_query: pd.DataFrame, measure: str, *, hue: str | None = "dataset",
                  order: list[str] | None = None, title: str | None = None):
    """Mean of ``measure`` per run (bars, 95% bootstrap CI over queries) with every query as a dot.

    ``per_query`` is long form with columns run, qid, measure, value (+ ``hue`` column).
    The dots matter: on 43-54 queries a mean hides how often a run wins or loses per query.
    """
    data = per_query[per_query["measure"] == measure]
    if hue is not None and hue not in data:
        hue = None
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * data["run"].nunique() * (2 if hue else 1)), 4.2))
    sns.barplot(data=data, x="run", y="value", hue=hue, order=order, errorbar=("ci", 95), seed=0,
                alpha=0.75, ax=ax)
    # stripplot jitters the dots with numpy's global RNG: seed it here (and put the caller's state back) so the PNG
    # is byte-stable and a stage rerun with the same data leaves the report stage, which embeds it, up to date
    state = np.random.get_state()
    np.random.seed(0)
    try:
        sns.stripplot(data=data, x="run", y="value", hue=hue, order=order, dodge=hue is not None, size=2.5,
                      palette="dark:black" if hue else None, color=None if hue else "black", alpha=0.35,
                      legend=False, ax=ax)
    finally:
        np.random.set_state(state)
    ax.set_ylabel(measure)
    ax.set_xlabel("")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def paired_scatter(per_query: pd.DataFrame, measure: str, x_run: str, y_run: str, *, title: str | None = None):
    """Per-query ``measure`` of one run against another (points above the diagonal: ``y_run`` wins)."""
    data = per_query[per_query["measure"] == measure].pivot_table(index=["qid"], columns="run", values="value")
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    sns.scatterplot(x=data[x_run], y=data[y_run], ax=ax)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"{x_run} {measure}", ylabel=f"{y_run} {measure}", title=title)
    fig.tight_layout()
    return fig
