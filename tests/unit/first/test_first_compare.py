"""FIRST's configurations as MLflow children (lab.methods.first.compare): one row per run with the same metric
names, nDCG@5 re-evaluated from the saved TREC runs, nDCG@10 checked against summary.csv."""

from dataclasses import replace

import pandas as pd
import pytest

from lab.data.formats import write_trec_run
from lab.data.trecdl import load_materialised
from lab.methods.first import compare as first_compare
from lab.rerank.evaluation import compare
from lab.records import Ranking, Run
from tests.unit.first.conftest import load_cfg


def saved_rerank(fake_data, tmp_path):
    """What first_rerank leaves: TREC runs (first stages + one reranked config per first stage), summary, timing."""
    ds = load_materialised(fake_data, "trec-dl-2019", ["bm25", "splade_pp_ed"])
    runs = dict(ds.runs)
    for fs, base in ds.runs.items():      # a "reranker" that reverses each list: a different nDCG, same queries
        rev = Run(f"{fs}/joint_single")
        for r in base.rankings.values():
            flipped = list(reversed(r.candidates))
            rev.add(Ranking(r.query, [replace(c, score=float(len(r) - i)) for i, c in enumerate(flipped)]))
        runs[rev.name] = rev
    folder = tmp_path / "runs"
    for name, run in runs.items():
        scored = Run(name, {q: Ranking(r.query, [replace(c, score=float(len(r) - i))   # as save_runs: len - position
                                                 for i, c in enumerate(r.candidates)])
                            for q, r in run.rankings.items()})
        write_trec_run(scored, folder / "trec-dl-2019" / f"{name.replace('/', '__')}.trec", tag=name.replace("/", "__"))
    summary, _ = compare(runs, ds.qrels, {"ndcg_10": "nDCG@10"}, dataset="trec-dl-2019", baseline="bm25")
    timing = pd.DataFrame([{"dataset": "trec-dl-2019", "first_stage": fs, "config": "joint_single",
                            "seconds_per_window": 0.5} for fs in ds.runs])
    return folder, summary, timing


def test_one_row_per_configuration_with_the_same_metrics(fake_data, tmp_path):
    cfg = load_cfg("tiny", rerank={"datasets": ("trec-dl-2019",), "baseline": "bm25", "max_queries": 0})
    folder, summary, timing = saved_rerank(fake_data, tmp_path)
    table = first_compare.configurations(cfg, fake_data, folder, summary, timing)
    assert len(table) == 4
    reranked = table[table["model"] == "joint"]
    assert set(reranked["decoding"]) == {"single"} and (reranked["seconds_per_window"] == 0.5).all()
    firsts = table[table["model"] == "none"]
    assert set(firsts["first_stage"]) == {"bm25", "splade_pp_ed"} and firsts["seconds_per_window"].isna().all()
    want = summary.set_index("run")["mean"]
    for row in table.itertuples():
        name = row.first_stage if row.model == "none" else f"{row.first_stage}/{row.config}"
        assert row.ndcg_10 == pytest.approx(want[name], abs=1e-12)
        assert 0 <= row.ndcg_5 <= 1
    assert reranked["ndcg_10"].gt(firsts["ndcg_10"].max()).all()   # the fake lists hold the relevant passages last
    base = table[(table["model"] == "none") & (table["first_stage"] == "bm25")].iloc[0]
    assert pd.isna(base["p_value"]) and reranked["p_value"].between(0, 1).all()   # the baseline is not tested


def test_stale_runs_that_disagree_with_summary_are_refused(fake_data, tmp_path):
    cfg = load_cfg("tiny", rerank={"datasets": ("trec-dl-2019",), "baseline": "bm25", "max_queries": 0})
    folder, summary, timing = saved_rerank(fake_data, tmp_path)
    summary.loc[summary["run"] == "bm25/joint_single", "mean"] += 0.01
    with pytest.raises(ValueError, match="disagrees with summary.csv"):
        first_compare.configurations(cfg, fake_data, folder, summary, timing)
