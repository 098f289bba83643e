"""LaSER's report (stage laser_report): Table 5 in the paper's layout with the paper's column beside ours, the
extra rows (zero-shot, rewrite-then-retrieve, the oracle control) and the inference-K sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from lab.methods.laser.config import LaserConfig

PAPER_METRIC = "BRIGHT avg nDCG@10 x100, Qwen3-0.6B (Table 5)"


def load_summary(eval_dir: str | Path) -> pd.DataFrame:
    """``<eval_dir>/summary.csv`` with every number the stage's ``metrics.json`` holds at full precision put back:
    the CSV keeps 6 decimals, which turned the paired test's p = 3.9e-7 (w/o latent vs basic) into "p = 0"."""
    eval_dir = Path(eval_dir)
    summary = pd.read_csv(eval_dir / "summary.csv")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    for i, name in enumerate(summary["config"]):
        row = metrics.get(name)
        for key, value in (row.items() if isinstance(row, dict) else ()):
            if key in summary.columns and isinstance(value, (int, float)):
                summary.loc[i, key] = float(value)
    return summary


def table5(cfg: LaserConfig, summary: pd.DataFrame, measure: str = "ndcg_10") -> pd.DataFrame:
    """One line per ``laser.rows`` entry in params order (the paper's order): paper value, ours, the difference
    from the baseline and its p-value, and a verdict on the paper's direction (row vs baseline)."""
    e = cfg.eval
    got = summary.set_index("config")
    base_paper = cfg.rows[e.baseline].paper if e.baseline in cfg.rows else -1.0
    rows = []
    for name, row in cfg.rows.items():
        line: dict[str, Any] = {"row": row.label or name, "variant": name, "k": row.k, "reasoning": row.reasoning,
                                "paper": row.paper if row.paper >= 0 else None}
        if name not in got.index:
            line.update({"ours": None, "delta": None, "p": None, "verdict": "not run"})
        else:
            r = got.loc[name]
            line["ours"] = float(r[measure])
            if name == e.baseline:
                line.update({"delta": 0.0, "p": None, "verdict": "baseline"})
            else:
                d, p = float(r[f"{measure}_delta"]), float(r[f"{measure}_p"])
                line.update({"delta": d, "p": p})
                if row.paper < 0 or base_paper < 0:
                    line["verdict"] = "no paper value"
                else:
                    up = row.paper > base_paper
                    same = (d > 0) == up and d != 0
                    line["verdict"] = "reproduced" if same and p < e.alpha else (
                        f"not reproduced ({'within noise' if p >= e.alpha else 'opposite sign'}, p = {p:.2g})")
        rows.append(line)
    return pd.DataFrame(rows, columns=["row", "variant", "k", "reasoning", "paper", "ours", "delta", "p", "verdict"])


def k_sweep(cfg: LaserConfig, summary: pd.DataFrame, measure: str = "ndcg_10") -> pd.DataFrame:
    v = cfg.eval.sweep_variant
    sweep = summary[summary["config"].str.startswith(f"{v}_k")]
    return sweep[["config", "k", measure, "soft_entropy"]].sort_values("k").reset_index(drop=True)


def claims(cfg: LaserConfig, summary: pd.DataFrame, measure: str = "ndcg_10") -> dict[str, float]:
    """The values experiments/laser/expected.yaml reads: full vs basic (and the rewrite, oracle rows when run)."""
    got = summary.set_index("config")
    b = cfg.eval.baseline
    out: dict[str, float] = {}
    # BRIGHT (paper profile): the number under each exclusion mode too (official = `measure`; mteb-1.x-compat)
    modes = [c for c in got.columns if c in (f"{measure}_official", f"{measure}_mteb_1x_compat")]
    for name in got.index:
        out[f"{name}_{measure}"] = float(got.loc[name, measure])
        for c in modes:
            out[f"{name}_{c}"] = float(got.loc[name, c])
        if name != b and f"{measure}_delta" in got.columns:
            out[f"{name}_minus_{b}"] = float(got.loc[name, f"{measure}_delta"])
            out[f"{name}_minus_{b}_p"] = float(got.loc[name, f"{measure}_p"])
    return out
