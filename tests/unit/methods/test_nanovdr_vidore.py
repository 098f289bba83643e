"""NanoVDR's ViDoRe path end to end: tiny parquet sets (v1 QA, v2/v3 BEIR) -> teacher index in the
index stage -> a distilled random:bert-tiny student -> NDCG@5 per set, macro per version, retention.

The tiny sets' query texts equal their relevant page's text, so the text teacher (random:bert-tiny
over page text, the smoke stand-in) ranks single-relevant queries perfectly: a check that docids,
qrels and embeddings stay aligned through files, cache and search.
"""

from __future__ import annotations

import numpy as np
import pytest

from lab.data import vidore
from lab.methods.nanovdr import distill as nanovdr_distill, evaluate as nanovdr_evaluate, index as nanovdr_index
from lab.methods.nanovdr.vidore import index_benchmarks, load_benchmark
from lab.records import Query
from lab.retrieval.dense import EmbeddingCache
from tests.unit.data.vidore_fixtures import make_root, tiny_registry

SETS = ["v1/tiny", "v2/tiny", "v3/tiny"]


@pytest.fixture
def tiny_sets(tmp_path, monkeypatch):
    monkeypatch.setattr(vidore, "registry", tiny_registry)
    return make_root(tmp_path / "hub")


def test_vidore_index_and_evaluation(tiny_sets, fake_data, lab_cache, make_cfg, tmp_path):
    index_dir = tmp_path / "index"
    cfg = make_cfg(data_dir=str(fake_data), index_dir=str(index_dir), benchmarks=SETS, benchmark_dir=str(tiny_sets))
    cache = EmbeddingCache(tmp_path / "emb")
    summary = nanovdr_index.build_index(cfg, index_dir, seed=0, cache=cache, progress=False)
    assert {k: (v["pages"], v["queries"]) for k, v in summary["benchmarks"].items()} == {
        "v1/tiny": (3, 3), "v2/tiny": (3, 2), "v3/tiny": (4, 2)}
    art = load_benchmark(index_dir, "v3/tiny")
    assert art.page_emb.shape == (4, 64) and art.query_emb.shape == (2, 64)
    assert art.qrels.judgements == {"0": {"3": 1, "2": 1}, "1": {"1": 1}}
    assert all(p.image.is_file() and p.image.parent == index_dir / "pages" / "vidore" for p in art.pages)
    # the smoke artefacts do not depend on the benchmarks: same fingerprint without them
    plain = nanovdr_index.build_index(make_cfg(data_dir=str(fake_data)), tmp_path / "plain", seed=0, cache=cache, progress=False)
    assert plain["fingerprint"] == summary["fingerprint"] and "benchmarks" not in plain
    # teacher pages and queries are embedded once: a rebuild reads every matrix from the cache
    cache.computed.clear()
    nanovdr_index.build_index(cfg, tmp_path / "again", seed=0, cache=cache, progress=False)
    assert cache.computed == {}

    student = tmp_path / "cosine.safetensors"
    nanovdr_distill.distill(cfg, "cosine", student, seed=0, progress=False)
    report = nanovdr_evaluate.evaluate_benchmarks(cfg, {"student-cosine": student})
    s = report.per_set.set_index(["version", "run"])
    assert list(report.per_set["queries"]) == [3, 3, 2, 2, 2, 2]
    assert s.loc[("v1", "teacher"), "ndcg_5"] == pytest.approx(1.0)          # query text == page text
    assert s.loc[("v2", "teacher"), "ndcg_5"] == pytest.approx(1.0)
    assert 0.5 < s.loc[("v3", "teacher"), "ndcg_5"] <= 1.0                   # one query has two relevant pages
    v = report.per_version.set_index(["version", "run"])
    assert (v.xs("teacher", level="run")["retention"] == 1.0).all()
    student_ret = [v.loc[(ver, "student-cosine"), "mean"] / v.loc[(ver, "teacher"), "mean"] for ver in ("v1", "v2", "v3")]
    r = dict(zip(report.retention["run"], report.retention["retention"]))
    assert r["teacher"] == 1.0 and r["student-cosine"] == pytest.approx(np.mean(student_ret))
    metrics = report.metrics()
    assert set(metrics["ndcg_5"]) == {"teacher", "student-cosine"} and set(metrics["ndcg_5"]["teacher"]) == {"v1", "v2", "v3"}
    assert report.long()["qid"].tolist()[:2] == ["v1/tiny", "v1/tiny"]
    again = nanovdr_evaluate.evaluate_benchmarks(cfg, {"student-cosine": student})
    assert again.per_set.equals(report.per_set)


def test_benchmark_query_in_training_is_refused(tiny_sets, make_cfg, tmp_path):
    cfg = make_cfg(benchmarks=["v2/tiny"], benchmark_dir=str(tiny_sets))
    with pytest.raises(ValueError, match=r"v2/tiny: 1 benchmark queries are also training/validation queries: \['10'\]"):
        index_benchmarks(cfg, tmp_path, teacher=None, cache=None, exclude=[Query("t1", "Red  PAGE")], progress=False)


def test_evaluation_needs_an_index_and_a_benchmark(tiny_sets, make_cfg, tmp_path):
    with pytest.raises(ValueError, match="benchmarks is empty"):
        nanovdr_evaluate.evaluate_benchmarks(make_cfg(), {}, index_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no teacher index for ViDoRe set v1/tiny"):
        nanovdr_evaluate.evaluate_benchmarks(make_cfg(benchmarks=["v1/tiny"]), {}, index_dir=tmp_path)
