"""FIRST's BEIR first stage: dense runs written to first.rerank.beir_runs and read back by the rerank stage."""

import json

from lab.methods.first import firststage, rerank as first_rerank
from tests.unit.first.conftest import load_cfg


def test_dense_runs_feed_the_rerank_stage(fake_data, tmp_path):
    folder = tmp_path / "beir" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"T{i}" if i % 2 else "", "text": f"text about topic {i}"} for i in range(7)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"topic {i}"}) + "\n"
                                                  for i in range(3)))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td4\t1\n")   # q0 unjudged
    cfg = load_cfg("tiny", rerank={"beir": (str(folder),), "beir_runs": str(tmp_path / "runs" / "{name}.trec")})
    from dataclasses import replace

    cfg = replace(cfg, dense=replace(cfg.dense, encoder="random:bert-tiny", max_length=16, chunk=3, depth=5))
    out = firststage.materialise_beir_runs(cfg, progress=False)
    assert out == {"scifact": {"path": str(tmp_path / "runs" / "scifact.trec"), "queries": 2, "written": True}}
    lines = (tmp_path / "runs" / "scifact.trec").read_text().splitlines()
    assert len(lines) == 10 and all(line.endswith(" contriever") for line in lines)
    beir = first_rerank.eval_sets(cfg, fake_data)[-1]
    run = beir.runs["contriever"]
    assert sorted(run.rankings) == ["q1", "q2"] and all(len(r.candidates) == 5 for r in run)
    texts = {c.docid: c.text for r in run for c in r.candidates}
    assert all(t == (f"T{d[1:]}. " if int(d[1:]) % 2 else "") + f"text about topic {d[1:]}" for d, t in texts.items())
    again = firststage.materialise_beir_runs(cfg, progress=False)
    assert again["scifact"]["written"] is False                                        # an existing run is kept
