"""FIRST's BEIR first stage (stage first_firststage): the streamed dense runs equal exact search, feed the rerank
stage through first.rerank.beir_runs, are reused only when nothing they depend on changed; the stage's config."""

import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from lab.methods.first import firststage, rerank as first_rerank
from lab.retrieval.first_stage import passage_text
from tests.unit.first.conftest import REPO, load_cfg


@pytest.fixture()
def beir_set(tmp_path):
    """A 9-document BEIR folder; doc ``q2`` has a query's id (BEIR's exact search drops that self-hit)."""
    folder = tmp_path / "beir" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"T{i}" if i % 2 else "", "text": f"text about topic {i}"} for i in range(8)]
    docs.append({"_id": "q2", "title": "", "text": "topic 2 itself"})
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"topic {i}"}) + "\n"
                                                  for i in range(3)))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t1\n")   # q0 unjudged
    return folder, docs


def _cfg(folder, runs_pattern, **dense):
    cfg = load_cfg("tiny", rerank={"beir": (str(folder),), "beir_runs": runs_pattern})
    return replace(cfg, dense=replace(cfg.dense, **{"encoder": "random:bert-tiny", "max_length": 16, "chunk": 4,
                                                    "depth": 5, **dense}))


def test_stage_runs_equal_exact_search_and_feed_the_rerank_stage(beir_set, fake_data, tmp_path, monkeypatch):
    folder, docs = beir_set
    out = tmp_path / "stage"
    cfg = _cfg(folder, str(out / "runs" / "{name}.trec"))
    manifest = firststage.stage_runs(cfg, out, progress=False)           # 9 passages in chunks of 4: three chunks
    entry = manifest["scifact"]
    assert (entry["file"], entry["queries"], entry["reused"]) == ("scifact.trec", 2, False)
    # exact search by hand: every passage encoded at once, q . p for all, top 5 without the self-hit
    enc = firststage.load_encoder(cfg, "cpu")
    p = enc.encode([passage_text(d["title"], d["text"]) for d in docs], batch_size=4, progress=False)   # [9, D]
    ids = [d["_id"] for d in docs]
    lines = [line.split() for line in (out / "runs" / "scifact.trec").read_text().splitlines()]
    assert len(lines) == 10 and all(line[5] == "contriever" for line in lines)
    for qid in ("q1", "q2"):
        q = enc.encode([f"topic {qid[1:]}"], batch_size=1, progress=False)[0]                    # [D]
        scores = p @ q                                                                            # [9]
        want = [i for i in np.argsort(-scores, kind="stable") if ids[i] != qid][:5]
        got = [line for line in lines if line[0] == qid]
        assert [line[2] for line in got] == [ids[i] for i in want], qid
        assert np.allclose([float(line[4]) for line in got], scores[want], atol=1e-5)
    assert not any(line[0] == "q2" and line[2] == "q2" for line in lines)
    # first_rerank reads the runs through first.rerank.beir_runs, passage text "title. text" (official)
    beir = first_rerank.eval_sets(cfg, fake_data)[-1]
    texts = {c.docid: c.text for r in beir.runs["contriever"] for c in r.candidates}
    assert sorted(beir.runs["contriever"].rankings) == ["q1", "q2"]
    want_text = {d["_id"]: f"{d['title']}. {d['text']}" if d["title"] else d["text"] for d in docs}
    assert texts and all(t == want_text[d] for d, t in texts.items())
    summary, per_query = firststage.evaluate_runs(cfg, out / "runs")
    assert set(summary["measure"]) == {"ndcg_10", "recall_100"} and summary["n"].eq(2).all()
    assert set(per_query["qid"]) == {"q1", "q2"} and set(per_query["run"]) == {"scifact"}
    # rerun on the previous outputs: copied, no encoder loaded; a changed setting recomputes
    monkeypatch.setattr(firststage, "load_encoder", lambda *a, **k: pytest.fail("encoder loaded for a reused run"))
    again = firststage.stage_runs(cfg, tmp_path / "stage2", previous=out, progress=False)
    assert again["scifact"]["reused"] and again["scifact"]["fingerprint"] == entry["fingerprint"]
    assert (tmp_path / "stage2" / "runs" / "scifact.trec").read_bytes() == (out / "runs" / "scifact.trec").read_bytes()
    monkeypatch.undo()
    deeper = firststage.stage_runs(_cfg(folder, "", depth=4), tmp_path / "stage3", previous=out, progress=False)
    assert not deeper["scifact"]["reused"] and deeper["scifact"]["fingerprint"] != entry["fingerprint"]


def test_no_beir_set_writes_an_empty_manifest_without_an_encoder(tmp_path, monkeypatch):
    monkeypatch.setattr(firststage, "load_encoder", lambda *a, **k: pytest.fail("no BEIR set: no encoder"))
    for profile in ("smoke", "tiny"):
        cfg = load_cfg(profile)
        assert cfg.rerank.beir == () and cfg.dense.encoder == ""
        assert firststage.stage_runs(cfg, tmp_path / profile, progress=False) == {}
        summary, per_query = firststage.evaluate_runs(cfg, tmp_path / profile / "runs")
        assert summary.empty and per_query.empty and list(per_query.columns) == ["dataset", "run", "qid", "measure",
                                                                                   "value"]


def test_paper_reranks_the_stage_runs_and_dvc_wires_them(monkeypatch):
    monkeypatch.delenv("LAB_PAPER_DRY_RUN", raising=False)
    paper = load_cfg("paper")
    assert len(paper.rerank.beir) == 11 and paper.dense.encoder == "hf:facebook/contriever-msmarco"
    assert paper.rerank.beir_runs == "outputs/first_firststage/runs/{name}.trec"
    assert dict(paper.dense.measures) == {"ndcg_10": "nDCG@10", "recall_100": "R@100"}
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    fs, rr = stages["first_firststage"], stages["first_rerank"]
    runs_out = "outputs/first_firststage/runs"
    assert any(runs_out in o for o in fs["outs"]) and runs_out in rr["deps"]
    assert paper.rerank.beir_runs.startswith(runs_out + "/")
    assert {"first.dense", "first.rerank.beir", "first.rerank.beir_first_stage"} <= set(fs["params"])
    assert {"notebooks/first/00-first-firststage.py", "src/lab/methods/first/firststage.py"} <= set(fs["deps"])
    monkeypatch.setenv("LAB_PAPER_DRY_RUN", "1")
    assert load_cfg("paper").rerank.beir == ()                # the dry run retrieves nothing
    with pytest.raises(ValueError, match="share a name"):
        firststage.stage_runs(load_cfg("tiny", rerank={"beir": ("a/scifact", "b/scifact")}), "unused")
