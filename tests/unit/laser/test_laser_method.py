"""LaSER wiring (lab.methods.laser): params schema and profiles, training triples with the oracle hold-out and the
DL19 leak check, the evaluation pool, and the Table-5 verdicts (fake materialised data, no model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import lab.config
from lab.config import ConfigError
from tests.conftest import TOPICS, write_fake_trec

REPO = Path(__file__).resolve().parents[3]


def load(profile="tiny", **kw):
    cfg = lab.config.load("laser", profile, REPO / "params.yaml")
    for part in ("train", "eval"):
        if part in kw:
            cfg = replace(cfg, **{part: replace(getattr(cfg, part), **kw.pop(part))})
    return replace(cfg, **kw)


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("laser-data")
    write_fake_trec(root, "trec-dl-2019", 19000, TOPICS[:4], TOPICS)
    write_fake_trec(root, "trec-dl-2020", 20000, TOPICS[4:8], TOPICS)
    return root


def test_profiles_load_and_smoke_runs_every_table5_row():
    smoke, paper = load("smoke"), load("paper")
    table5 = ["basic", "wo_explicit", "wo_latent", "wo_process", "wo_output", "wo_colearning", "full"]
    assert smoke.variants == ("zeroshot_k1", "zeroshot_k3", *table5, "full_oracle")
    assert [n for n in smoke.rows if smoke.rows[n].paper >= 0] == table5          # the paper's order
    assert [smoke.rows[n].paper for n in table5] == [18.25, 20.59, 19.93, 22.33, 19.97, 20.98, 23.10]
    assert paper.variants == tuple(table5) and paper.loss.segment_rule == "token"
    assert smoke.rows["full_oracle"].reasoning == "oracle" and "ORACLE" in smoke.rows["full_oracle"].label
    full = smoke.rows["full"]
    assert (full.k, full.w_latent, full.w_explicit, full.w_kl, full.w_mid) == (3, 1.0, 1.0, 10.0, 0.1)
    assert (smoke.loss.temperature, smoke.loss.mid_temperature) == (0.02, 0.05)


def test_unknown_variant_and_bad_key_are_refused_by_name(tmp_path):
    text = (REPO / "params.yaml").read_text()
    bad = tmp_path / "params.yaml"
    line = "  variants: [zeroshot_k1, zeroshot_k3, basic, wo_explicit, wo_latent, wo_process, wo_output, wo_colearning, full,"
    assert line in text
    bad.write_text(text.replace(line, "  variants: [zeroshot_k1, fulll,"))
    with pytest.raises((ConfigError, ValueError), match="fulll"):
        lab.config.load("laser", "smoke", bad)
    bad.write_text(text.replace("    basic: {label: \"basic contrastive\", k: 1,", "    basic: {label: \"b\", kk: 1,"))
    with pytest.raises(ConfigError, match="kk"):
        lab.config.load("laser", "smoke", bad)


def test_training_set_holds_out_the_rel3_passage_and_mines_the_judged_zero(fake_data):
    from lab.methods.laser.data import training_set

    cfg = load(train={"first_stages": ("bm25", "splade_pp_ed")})
    reasoning = {("trec-dl-2020", "20000"): "the insulin reasoning"}
    ts = training_set(cfg, fake_data, reasoning)
    assert ts.qids == ["20000", "20001", "20002", "20003"]            # one positive per query (max_positives 1)
    ex, orc = ts.examples[0], ts.oracle[0]
    assert ex.positive.startswith("insulin passage 1")               # grade 2: the rel-3 passage 0 is held out
    assert orc.reasoning.startswith("insulin passage 0") and ex.reasoning == "the insulin reasoning"
    assert ex.negative.startswith(TOPICS[0] + " passage 0")          # the judged-0 filler
    assert all(e.positive == o.positive and e.negative == o.negative for e, o in zip(ts.examples, ts.oracle))
    assert ts.notes["missing_reasoning"] == 3 and ts.notes["queries_with_oracle"] == 4


def test_training_never_uses_the_evaluation_set(fake_data, tmp_path):
    from lab.methods.laser.data import training_set

    with pytest.raises(ValueError, match="evaluation set"):
        training_set(load(train={"dataset": "trec-dl-2019"}), fake_data, {})
    leaky = tmp_path / "data"
    write_fake_trec(leaky, "trec-dl-2019", 19000, TOPICS[:4], TOPICS)
    write_fake_trec(leaky, "trec-dl-2020", 19002, TOPICS[4:8], TOPICS)   # qids 19002, 19003 are DL19's
    with pytest.raises(ValueError, match="2 evaluation queries"):
        training_set(load(), leaky, {})


def test_eval_pool_is_the_union_of_the_pool_stages_top_k(fake_data):
    from lab.methods.laser.data import eval_pool

    pool = eval_pool(load(eval={"pool_stages": ("bm25",), "pool_depth": 2}), fake_data)
    assert len(pool.queries) == 4 and len(pool.docids) == len(set(pool.docids))
    both = eval_pool(load(eval={"pool_stages": ("bm25", "splade_pp_ed"), "pool_depth": 2}), fake_data)
    assert set(pool.docids) < set(both.docids)                     # SPLADE's list is rotated by one


def test_table5_verdicts_need_the_papers_direction_and_p_below_alpha():
    from lab.methods.laser.evaluate import configs
    from lab.methods.laser.report import claims, k_sweep, table5

    cfg = load("smoke")
    names = [c.name for c in configs(cfg)]
    n = len(cfg.variants)
    assert names[:n] == list(cfg.variants) and names[n:n + 5] == [f"full_k{k}" for k in (1, 2, 3, 4, 5)]
    assert names[-1] == "rewrite"
    summary = pd.DataFrame([
        {"config": "basic", "k": 1, "ndcg_10": 0.40, "soft_entropy": 0.0},
        {"config": "full", "k": 3, "ndcg_10": 0.45, "ndcg_10_delta": 0.05, "ndcg_10_p": 0.01, "soft_entropy": 2.0},
        {"config": "wo_explicit", "k": 3, "ndcg_10": 0.42, "ndcg_10_delta": 0.02, "ndcg_10_p": 0.30,
         "soft_entropy": 2.0},
        {"config": "zeroshot_k1", "k": 1, "ndcg_10": 0.35, "ndcg_10_delta": -0.05, "ndcg_10_p": 0.01,
         "soft_entropy": 0.0},
        {"config": "full_k1", "k": 1, "ndcg_10": 0.41, "ndcg_10_delta": 0.01, "ndcg_10_p": 0.5, "soft_entropy": 0.0},
        {"config": "full_k3", "k": 3, "ndcg_10": 0.45, "ndcg_10_delta": 0.05, "ndcg_10_p": 0.01, "soft_entropy": 2.0},
    ])
    t = table5(cfg, summary).set_index("variant")
    assert t.loc["full", "verdict"] == "reproduced" and t.loc["basic", "verdict"] == "baseline"
    assert t.loc["wo_explicit", "verdict"].startswith("not reproduced (within noise")
    assert t.loc["wo_latent", "verdict"] == "not run" and t.loc["zeroshot_k1", "verdict"] == "no paper value"
    assert list(t.index[:7]) == ["basic", "wo_explicit", "wo_latent", "wo_process", "wo_output", "wo_colearning",
                                 "full"]
    assert k_sweep(cfg, summary)["k"].tolist() == [1, 3]
    c = claims(cfg, summary)
    assert c["full_minus_basic"] == 0.05 and c["full_minus_basic_p"] == 0.01 and c["basic_ndcg_10"] == 0.40


def test_report_reads_p_values_at_full_precision_not_the_csvs_six_decimals(tmp_path):
    import json

    from lab.methods.laser.report import claims, load_summary, table5

    cfg = load("smoke")
    rows = [{"config": "basic", "k": 1, "ndcg_10": 0.318933, "ndcg_10_delta": None, "ndcg_10_p": None},
            {"config": "wo_latent", "k": 1, "ndcg_10": 0.256835, "ndcg_10_delta": -0.062098, "ndcg_10_p": 0.0}]
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False, float_format="%.6f")   # as log_table writes
    (tmp_path / "metrics.json").write_text(json.dumps({
        "basic": {"ndcg_10": 0.3189333999783772},
        "wo_latent": {"ndcg_10": 0.25683544073577486, "ndcg_10_delta": -0.06209795924260242,
                      "ndcg_10_p": 3.8859234639991835e-07}, "pool": {"size": 643}}))
    summary = load_summary(tmp_path)
    assert claims(cfg, summary)["wo_latent_minus_basic_p"] == 3.8859234639991835e-07
    assert table5(cfg, summary).set_index("variant").loc["wo_latent", "verdict"] == \
        "not reproduced (opposite sign, p = 3.9e-07)"
