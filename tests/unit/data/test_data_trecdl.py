"""lab.data.trecdl on the real TREC DL files: counts from shared/data/README.md, and the data stage."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lab.data.formats import read_topics
from lab.data.trecdl import (
    BEIR_SETS, load_beir_topics_qrels, load_dataset, load_materialised, load_query_pool, materialise,
)
from lab.sections import FIRST_STAGES, DataConfig


def grades(qrels):
    return dict(sorted(Counter(g for d in qrels.judgements.values() for g in d.values()).items()))


def test_dl19(dl19):
    assert len(dl19.queries) == 43 and dl19.qrels.n_pairs() == 9260
    assert grades(dl19.qrels) == {0: 5158, 1: 1601, 2: 1804, 3: 697}
    assert dl19.qids == dl19.qrels.qids == sorted(dl19.qids, key=int)      # qrels order (ascending qid)
    assert list(dl19.runs) == list(FIRST_STAGES)


def test_dl20_only_judged_topics(dl20, mirror):
    assert len(read_topics(mirror / "trec-dl/topics.dl20.txt")) == 200
    assert len(dl20.queries) == 54 and dl20.qrels.n_pairs() == 11386
    assert grades(dl20.qrels) == {0: 7780, 1: 1940, 2: 1020, 3: 646}
    assert not any("\r" in q.text for q in dl20.queries)


@pytest.mark.parametrize("which", ["dl19", "dl20"])
def test_every_run_has_100_hits_per_judged_query(request, which):
    ds = request.getfixturevalue(which)
    for fs, run in ds.runs.items():
        assert list(run.rankings) == ds.qids, fs                    # re-keyed into qrels order
        assert [r.query for r in run] == ds.queries, fs             # query text equals the topic text
        assert {len(r) for r in run} == {100}, fs
        assert all(isinstance(q, str) for q in run.rankings), fs
        assert all(isinstance(c.docid, str) and c.text for r in run for c in r.candidates), fs


def test_scores_and_ranks_as_in_file(dl19, mirror):
    raw = json.loads((mirror / "trec-dl/repllama_top100_dl19.json").read_bytes())
    entry = raw[5]
    ranking = dl19.runs["repllama"][str(entry["hits"][0]["qid"])]
    assert [(c.docid, c.rank, c.score, c.text) for c in ranking.candidates] == [
        (h["docid"], h["rank"], h["score"], h["content"]) for h in entry["hits"]
    ]


def test_tiny_profile_subset(mirror):
    ds = load_dataset("trec-dl-2019", first_stages=["bm25", "splade_pp_ed"], depth=20, max_queries=5)
    full = load_dataset("trec-dl-2019", first_stages=["bm25"])
    assert ds.qids == full.qids[:5]
    assert ds.qrels.qids == ds.qids and ds.qrels.n_pairs() == sum(len(full.qrels[q]) for q in ds.qids)
    assert list(ds.runs) == ["bm25", "splade_pp_ed"]
    assert {len(r) for run in ds.runs.values() for r in run} == {20}
    assert ds.runs["bm25"][ds.qids[0]].candidates == full.runs["bm25"][ds.qids[0]].candidates[:20]


@pytest.mark.parametrize("kwargs,match", [
    ({"depth": 101}, "depth"), ({"depth": 0}, "depth"), ({"max_queries": -1}, "max_queries"),
    ({"first_stages": ["bm25", "colbert"]}, "first stage"),
])
def test_load_dataset_refuses(mirror, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("trec-dl-2019", **kwargs)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("trec-dl-2021")


def test_query_pool(mirror):
    pool = load_query_pool("msmarco-passage-dev-subset")
    assert len(pool) == 6980 and len({q.qid for q in pool}) == 6980


BEIR_COUNTS = {  # README: topics, judgements
    "scifact": (300, 339), "nfcorpus": (323, 12334), "fiqa": (648, 1706), "arguana": (1406, 1406),
    "trec-covid": (50, 66334),
}


@pytest.mark.parametrize("name", BEIR_SETS)
def test_beir_topics_qrels(mirror, name):
    topics, qrels = load_beir_topics_qrels(name)
    assert (len(topics), qrels.n_pairs()) == BEIR_COUNTS[name]
    assert set(qrels.qids) <= {q.qid for q in topics}
    if name == "nfcorpus":
        assert grades(qrels) == {1: 11758, 2: 576} and topics[0].qid == "PLAIN-2"
    if name == "trec-covid":
        assert grades(qrels) == {0: 41661, 1: 10456, 2: 14217}


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


CFG = DataConfig(first_stages=FIRST_STAGES, beir=("scifact",))


def test_materialise_is_byte_stable_and_reads_back(mirror, tmp_path, dl19, dl20):
    s1 = materialise(CFG, tmp_path / "a")
    s2 = materialise(CFG, tmp_path / "b")
    assert s1 == s2
    t1, t2 = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert t1 == t2                                                  # identical bytes, file for file
    expected = {f"{ds}/{f}" for ds in CFG.datasets for f in ("queries.tsv", "qrels.txt")}
    expected |= {f"{ds}/runs/{fs}.trec" for ds in CFG.datasets for fs in FIRST_STAGES}
    expected |= {f"{ds}/candidates/{fs}.jsonl" for ds in CFG.datasets for fs in FIRST_STAGES}
    expected |= {"pools/msmarco-passage-dev-subset.tsv", "beir/scifact/queries.tsv", "beir/scifact/qrels.txt"}
    assert set(t1) == expected
    assert s1["datasets"]["trec-dl-2019"]["grades"] == {"0": 5158, "1": 1601, "2": 1804, "3": 697}
    assert s1["datasets"]["trec-dl-2020"]["queries"] == 54 and s1["datasets"]["trec-dl-2020"]["judgements"] == 11386
    assert s1["datasets"]["trec-dl-2019"]["candidates"] == {fs: 4300 for fs in FIRST_STAGES}
    assert s1["datasets"]["trec-dl-2020"]["candidates_per_query"] == {fs: [100] for fs in FIRST_STAGES}
    assert s1["pools"] == {"msmarco-passage-dev-subset": {"queries": 6980}}
    assert s1["beir"]["scifact"]["judgements"] == 339
    json.dumps(s1)                                                   # JSON-ready for metrics files
    for ds in (dl19, dl20):
        back = load_materialised(tmp_path / "a", ds.name)
        assert back.queries == ds.queries and back.qrels == ds.qrels
        assert list(back.runs) == sorted(FIRST_STAGES)
        for fs, run in ds.runs.items():
            assert back.runs[fs].rankings == run.rankings, fs


def test_materialise_again_replaces_stale_outputs(mirror, tmp_path):
    cfg = DataConfig(datasets=("trec-dl-2019",), first_stages=("bm25", "tasb"), depth=10, max_queries=3)
    materialise(cfg, tmp_path)
    first = _tree(tmp_path)
    materialise(cfg, tmp_path)                                      # same folder twice: same bytes
    assert _tree(tmp_path) == first
    materialise(DataConfig(datasets=("trec-dl-2019",), first_stages=("bm25",), depth=10, max_queries=3), tmp_path)
    assert not (tmp_path / "trec-dl-2019/candidates/tasb.jsonl").exists()
    assert _tree(tmp_path)["trec-dl-2019/candidates/bm25.jsonl"] == first["trec-dl-2019/candidates/bm25.jsonl"]
    back = load_materialised(tmp_path, "trec-dl-2019")
    assert len(back.queries) == 3 and {len(r) for r in back.runs["bm25"]} == {10}
    with pytest.raises(FileNotFoundError, match="was not materialised"):
        load_materialised(tmp_path, "trec-dl-2019", ["tasb"])
    with pytest.raises(FileNotFoundError, match="data"):
        load_materialised(tmp_path, "trec-dl-2020")
