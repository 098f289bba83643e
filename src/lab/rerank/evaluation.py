"""Evaluating listwise rerankings: effectiveness with two paired tests, decoding agreement, report tables.

Run names follow ``<first stage>`` (the first-stage order itself) and ``<first stage>/<model>_<mode>``
(e.g. ``bm25/joint_single``: the ``joint``-objective model, single-token decoding, over BM25's top
candidates). Every reranked run is tested per query against the **baseline** first stage (BM25 at smoke
scale) and against **its own** first stage, both with :func:`lab.eval.significance.paired_test`.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from lab.eval.agreement import run_kendall_tau
from lab.eval.metrics import evaluate
from lab.eval.significance import paired_test
from lab.records import Qrels, Run

__all__ = ["split_name", "compare", "agreement", "nested_metrics", "main_table", "ablation_table", "claims",
           "average_over", "permutation_complete"]


def split_name(name: str) -> tuple[str, str]:
    """``"bm25/joint_single"`` -> ``("bm25", "joint_single")``; a bare first stage -> ``(fs, "first_stage")``."""
    fs, _, config = name.partition("/")
    return fs, config or "first_stage"


def compare(runs: Mapping[str, Run], qrels: Qrels, measures: Mapping[str, str], *, dataset: str, baseline: str,
            test: str = "ttest", alpha: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, per_query)`` for every run of one dataset.

    summary: dataset, first_stage, config, run, measure, mean, n, delta / p_value (vs ``baseline``),
    delta_fs / p_fs (vs the run's own first stage), significant (p_value < alpha). Judged queries a run
    misses count 0 (``missing="zero"``), so every row averages the same queries.
    """
    if baseline not in runs:
        raise KeyError(f"baseline {baseline!r} not among the runs {sorted(runs)}")
    results = {name: evaluate(run, qrels, measures, missing="zero") for name, run in runs.items()}
    rows, per_query = [], []
    for name, res in results.items():
        fs, config = split_name(name)
        per_query.append(res.per_query.assign(dataset=dataset, first_stage=fs, config=config, run=name))
        for key in measures:
            row = {"dataset": dataset, "first_stage": fs, "config": config, "run": name, "measure": key,
                   "mean": res.means[key], "n": res.n}
            for suffix, ref in (("", baseline), ("_fs", fs)):
                delta, p = 0.0, float("nan")
                if name != ref and ref in results:
                    t = paired_test(res.values(key), results[ref].values(key), method=test)
                    delta, p = t.mean_diff, t.pvalue
                row[f"delta{suffix}"], row[f"p_value{suffix}"] = delta, p
            row["significant"] = bool(row["p_value"] < alpha)
            rows.append(row)
    cols = ["dataset", "first_stage", "config", "run", "qid", "measure", "value"]
    return pd.DataFrame(rows), pd.concat(per_query, ignore_index=True)[cols]


def agreement(runs: Mapping[str, Run], *, dataset: str, depth: int) -> pd.DataFrame:
    """Kendall tau per query between ``<fs>/<model>_single`` and ``<fs>/<model>_gen`` where both exist."""
    rows = []
    for name, run in runs.items():
        fs, config = split_name(name)
        if not config.endswith("_single"):
            continue
        model = config.removesuffix("_single")
        other = f"{fs}/{model}_gen"
        if other in runs:
            for qid, tau in run_kendall_tau(run, runs[other], depth).items():
                rows.append({"dataset": dataset, "first_stage": fs, "model": model, "qid": qid, "tau": tau})
    return pd.DataFrame(rows, columns=["dataset", "first_stage", "model", "qid", "tau"])


def permutation_complete(text: str, num: int, identifiers: Sequence[str]) -> bool:
    """Whether a generated ranking names each of the first ``num`` identifiers exactly once, in brackets
    (the ``[`` may be missing before the first one), and nothing else in brackets."""
    import re

    found = [m.strip() for m in re.findall(r"\[([^\[\]]*)\]", text)]
    lead = re.match(r"\s*([^\[\]>\s]+)\s*\]", text)
    if lead:
        found.insert(0, lead.group(1))
    return sorted(found) == sorted(identifiers[:num])


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def nested_metrics(summary: pd.DataFrame, taus: pd.DataFrame | None = None) -> dict:
    """``{dataset: {first_stage: {config: {measure, measure_delta, measure_p, measure_p_fs}, kendall_tau: {model}}}}``.

    Undefined values (a run's p-value against itself) are left out, never written as NaN.
    """
    out: dict = {}
    for row in summary.itertuples():
        node = out.setdefault(row.dataset, {}).setdefault(row.first_stage, {}).setdefault(row.config, {})
        values = {row.measure: row.mean, f"{row.measure}_delta": row.delta, f"{row.measure}_p": row.p_value,
                  f"{row.measure}_p_fs": row.p_value_fs}
        node.update({k: v for k, v in ((k, _clean(v)) for k, v in values.items()) if v is not None})
    if taus is not None and len(taus):
        for (ds, fs, model), g in taus.groupby(["dataset", "first_stage", "model"], sort=False):
            out.setdefault(ds, {}).setdefault(fs, {}).setdefault("kendall_tau", {})[model] = float(g["tau"].mean())
    return out


def main_table(summary: pd.DataFrame, measure: str, configs: Sequence[str]) -> pd.DataFrame:
    """One row per (dataset, first stage), one column per configuration (``first_stage_alone`` first)."""
    data = summary[summary["measure"] == measure]
    table = data.pivot_table(index=["dataset", "first_stage"], columns="config", values="mean", sort=False)
    cols = [c for c in ("first_stage", *configs) if c in table.columns]
    table = table[cols].rename(columns={"first_stage": "first_stage_alone"})
    table.columns.name = None
    return table.reset_index()


def ablation_table(summary: pd.DataFrame, measure: str, first_stage: str, objectives: Sequence[str],
                   reference: str = "joint_single") -> pd.DataFrame:
    """The objectives' single-token rows on one first stage: mean, delta / p vs that first stage, and vs ``reference``."""
    data = summary[(summary["measure"] == measure) & (summary["first_stage"] == first_stage)]
    rows = []
    ref = data[data["config"] == reference]
    for obj in objectives:
        row = data[data["config"] == f"{obj}_single"]
        if row.empty:
            continue
        r = row.iloc[0]
        rows.append({"dataset": r["dataset"], "objective": obj, measure: r["mean"], "delta_vs_first_stage": r["delta_fs"],
                     "p_vs_first_stage": r["p_value_fs"],
                     "minus_joint": r["mean"] - ref.iloc[0]["mean"] if not ref.empty else float("nan")})
    return pd.DataFrame(rows)


def claims(summary: pd.DataFrame, taus: pd.DataFrame, latency_ratio: float | None, *, dataset: str,
           first_stage: str, trained: str = "joint", measure: str = "ndcg_10",
           timing: pd.DataFrame | None = None, free_gen_complete: float | None = None,
           per_query: pd.DataFrame | None = None, test: str = "ttest") -> dict[str, float]:
    """The FIRST claims on one (dataset, first stage): trained single-token vs the first stage, zero-shot,
    the LM-only objective and its own generation decoding; tau between the decodings; the latency ratio;
    with ``timing`` (from ``rerank_all``) the share of complete generated permutations per generation config, and
    ``free_gen_complete``: that share for free (unconstrained) generation on the latency windows. With
    ``per_query`` (from ``compare``) each difference between two configurations also gets the two-sided p-value
    of the paired ``test`` over the same queries (``<difference>_p``), which ``experiments/first/expected.yaml``
    requires below alpha: a difference within noise is not a reproduced claim."""
    data = summary[(summary["dataset"] == dataset) & (summary["first_stage"] == first_stage)
                   & (summary["measure"] == measure)].set_index("config")

    def get(config: str, col: str = "mean") -> float:
        return float(data.loc[config, col]) if config in data.index else float("nan")

    fs, single, gen = get("first_stage"), get(f"{trained}_single"), get(f"{trained}_gen")
    out = {
        f"first_stage_{measure}": fs, f"zeroshot_single_{measure}": get("zeroshot_single"),
        f"zeroshot_gen_{measure}": get("zeroshot_gen"), f"trained_single_{measure}": single,
        f"trained_gen_{measure}": gen, f"lm_single_{measure}": get("lm_single"),
        f"rank_single_{measure}": get("rank_single"),
        "trained_single_minus_first_stage": single - fs, "trained_single_p_vs_first_stage": get(f"{trained}_single", "p_value_fs"),
        "trained_single_minus_zeroshot": single - get("zeroshot_single"),
        "joint_minus_lm": single - get("lm_single"), "joint_minus_rank": single - get("rank_single"),
        "single_gen_abs_diff": abs(single - gen),
    }
    if per_query is not None:
        rows = per_query[(per_query["dataset"] == dataset) & (per_query["first_stage"] == first_stage)
                         & (per_query["measure"] == measure)]
        values = {config: dict(zip(g["qid"].astype(str), g["value"])) for config, g in rows.groupby("config")}
        for key, other in (("trained_single_minus_zeroshot", "zeroshot_single"), ("joint_minus_lm", "lm_single"),
                           ("joint_minus_rank", "rank_single")):
            if f"{trained}_single" in values and other in values:
                out[f"{key}_p"] = paired_test(values[f"{trained}_single"], values[other], method=test).pvalue
    t = taus[(taus["dataset"] == dataset) & (taus["first_stage"] == first_stage)] if len(taus) else taus
    for model, g in (t.groupby("model") if len(t) else ()):
        out[f"kendall_tau_{model}"] = float(g["tau"].mean())
    if latency_ratio is not None:
        out["latency_ratio"] = float(latency_ratio)
    if free_gen_complete is not None:
        out["free_gen_complete"] = float(free_gen_complete)
    if timing is not None and len(timing):
        rows = timing[(timing["dataset"] == dataset) & (timing["first_stage"] == first_stage)]
        for row in rows.itertuples():
            if row.config.endswith("_gen"):
                out[f"{row.config}_complete"] = float(row.complete)
    return {k: v for k, v in out.items() if not math.isnan(v)}


def average_over(summary: pd.DataFrame, datasets: Sequence[str], first_stage: str, measure: str = "ndcg_10") -> dict[str, float]:
    """``{config: mean over datasets}`` for the configurations every one of ``datasets`` has (the BEIR average)."""
    data = summary[summary["dataset"].isin(list(datasets)) & (summary["first_stage"] == first_stage)
                   & (summary["measure"] == measure)]
    out = {}
    for config, g in data.groupby("config", sort=False):
        if set(g["dataset"]) == set(datasets):
            out[config] = float(g["mean"].mean())
    return out
