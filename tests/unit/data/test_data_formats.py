"""lab.data.formats on the real files (mirror) and on small malformed ones."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lab.data.formats import (
    DataFormatError, read_candidates_jsonl, read_qrels, read_rank_llm_json, read_topics, read_trec_run,
    write_candidates_jsonl, write_qrels, write_topics, write_trec_run,
)
from lab.records import Candidate, Qrels, Query, Ranking, Run

RUNS = ("bm25", "bm25rm3", "tasb", "ada2", "splade_pp_ed", "repllama")


def grades(qrels):
    return dict(sorted(Counter(g for d in qrels.judgements.values() for g in d.values()).items()))


def test_topics_crlf_stripped(mirror):
    path = mirror / "trec-dl/topics.dl20.txt"
    assert b"\r\n" in path.read_bytes()
    topics = read_topics(path)
    assert len(topics) == 200
    assert not any("\r" in q.text or "\r" in q.qid for q in topics)
    assert topics[0] == Query("1030303", "who is aziz hashim")


def test_topics_text_kept_as_is(mirror):
    pool = read_topics(mirror / "queries/topics.msmarco-passage.dev-subset.txt")
    assert len(pool) == 6980
    assert sum(q.text != q.text.strip() for q in pool) == 2   # README: 2 queries keep outer whitespace


def test_qrels_dl19_q0(mirror):
    qrels = read_qrels(mirror / "trec-dl/qrels.dl19-passage.txt")
    assert (len(qrels), qrels.n_pairs()) == (43, 9260)
    assert grades(qrels) == {0: 5158, 1: 1601, 2: 1804, 3: 697}


def test_qrels_dl20_zero_column(mirror):
    qrels = read_qrels(mirror / "trec-dl/qrels.dl20-passage.txt")
    assert (len(qrels), qrels.n_pairs()) == (54, 11386)
    assert grades(qrels) == {0: 7780, 1: 1940, 2: 1020, 3: 646}


@pytest.mark.parametrize("year", ["dl19", "dl20"])
@pytest.mark.parametrize("fs", RUNS)
def test_rank_llm_json_matches_trec_run(mirror, fs, year):
    topics = read_topics(mirror / f"trec-dl/topics.{'dl19-passage' if year == 'dl19' else 'dl20'}.txt")
    run = read_rank_llm_json(mirror / f"trec-dl/{fs}_top100_{year}.json", fs, topics)
    assert len(run) == {"dl19": 43, "dl20": 54}[year]
    depth = 1000 if fs == "repllama" else 100
    trec = read_trec_run(mirror / f"trec-dl/{fs}_top{depth}_{year}.trec.txt", fs)
    for r in run:
        assert isinstance(r.query.qid, str)
        assert len(r) == 100
        assert [c.rank for c in r.candidates] == list(range(1, 101))
        assert all(isinstance(c.text, str) and c.text for c in r.candidates)
        t = trec[r.query.qid].candidates
        assert len(t) == depth
        # README: the JSON's hits are the TREC run's first 100 lines (docids, ranks, scores)
        assert [(c.docid, c.rank, c.score) for c in r.candidates] == [(c.docid, c.rank, c.score) for c in t[:100]]


def test_repllama_qids_are_str_in_file_and_records(mirror):
    raw = json.loads((mirror / "trec-dl/repllama_top100_dl19.json").read_bytes())
    assert isinstance(raw[0]["hits"][0]["qid"], str)
    assert isinstance(json.loads((mirror / "trec-dl/bm25_top100_dl19.json").read_bytes())[0]["hits"][0]["qid"], int)
    bm25 = read_rank_llm_json(mirror / "trec-dl/bm25_top100_dl19.json", "bm25")
    rep = read_rank_llm_json(mirror / "trec-dl/repllama_top100_dl19.json", "repllama")
    assert set(bm25.rankings) == set(rep.rankings)            # the join that int/str would break
    assert all(isinstance(q, str) for q in rep.rankings)


def test_mojibake_preserved_through_jsonl(mirror, tmp_path):
    run = read_rank_llm_json(mirror / "trec-dl/bm25_top100_dl19.json", "bm25")
    hits = [c for r in run for c in r.candidates if "â\x80\x99" in c.text]
    assert hits, "README: about 20% of hits hold mojibake such as â\\x80\\x99"
    out = write_candidates_jsonl(run, tmp_path / "c.jsonl")
    data = out.read_bytes()
    assert "â\x80\x99".encode("utf-8") in data          # written raw, not as \u escapes
    assert b"\\u00e2" not in data
    back = read_candidates_jsonl(out, "bm25")
    texts = {(r.query.qid, c.docid): c.text for r in back for c in r.candidates}
    for r in run:
        for c in r.candidates:
            assert texts[(r.query.qid, c.docid)].encode("utf-8") == c.text.encode("utf-8")


def test_jsonl_round_trip_exact_and_byte_stable(mirror, tmp_path):
    run = read_rank_llm_json(mirror / "trec-dl/repllama_top100_dl20.json", "repllama")
    a = write_candidates_jsonl(run, tmp_path / "a.jsonl")
    back = read_candidates_jsonl(a, "repllama")
    assert back.rankings == run.rankings
    b = write_candidates_jsonl(back, tmp_path / "b.jsonl")
    assert a.read_bytes() == b.read_bytes()
    first = json.loads(a.read_bytes().split(b"\n")[0])
    assert list(first) == ["hits", "qid", "query"] and list(first["hits"][0]) == ["docid", "rank", "score", "text"]


def test_trec_run_and_qrels_round_trip(mirror, tmp_path):
    run = read_trec_run(mirror / "trec-dl/splade_pp_ed_top100_dl19.trec.txt", "splade")
    out = write_trec_run(run, tmp_path / "r.trec", tag="rank")
    assert out.read_bytes() == (mirror / "trec-dl/splade_pp_ed_top100_dl19.trec.txt").read_bytes()
    out = write_trec_run(run, tmp_path / "r2.trec", tag="x")
    assert read_trec_run(out, "splade").rankings == run.rankings
    qrels = read_qrels(mirror / "trec-dl/qrels.dl20-passage.txt")
    assert write_qrels(qrels, tmp_path / "q.txt").read_bytes() == (mirror / "trec-dl/qrels.dl20-passage.txt").read_bytes()
    assert read_qrels(tmp_path / "q.txt") == qrels


def test_topics_round_trip(tmp_path):
    qs = [Query("1", " padded query "), Query("2", "naïve café â\x80\x99 \u2028 end")]
    path = write_topics(qs, tmp_path / "t.tsv")
    assert read_topics(path) == qs
    with pytest.raises(ValueError, match="line break"):
        write_topics([Query("3", "two\nlines")], tmp_path / "bad.tsv")


def test_trec_run_topics_fill_text(tmp_path):
    run = Run("x", {"q1": Ranking(Query("q1", "hello"), [Candidate("d1", 2.0, 1), Candidate("d2", 1.0, 2)])})
    path = write_trec_run(run, tmp_path / "r.trec")
    assert path.read_text() == "q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.0 x\n"
    assert read_trec_run(path, "x", {"q1": "hello"}).rankings == run.rankings
    assert read_trec_run(path, "x")["q1"].query.text == ""


def test_trec_eval_style_run_and_qrels(tmp_path):
    """As trec_eval (9 and 10) reads them: ``#`` comment lines skipped in runs and qrels (first non-blank
    character only: a ``#`` inside a docid is data), a run line's columns after the sixth ignored, tabs and
    padded scores as in trec_eval's own test runs."""
    run_path = tmp_path / "results.test"
    run_path.write_text("# This run documents itself\n"
                        "301\tQ0\tFR940202-2-00150\t1\t  2.129133\tSTANDARD\n"
                        "   # an indented comment, then one mid-file\n"
                        "# 301 Q0 not-a-hit 9 9.9 STANDARD\n"
                        "301\tQ0\tCR#93E-1860\t2\t  1.724760\tSTANDARD\n"
                        "302 Q0 FT911-2671 1 3.5 STANDARD extra columns are ignored\n")
    run = read_trec_run(run_path, "std")
    assert [(q, c.docid, c.rank, c.score) for q in ("301", "302") for c in run[q].candidates] == [
        ("301", "FR940202-2-00150", 1, 2.129133), ("301", "CR#93E-1860", 2, 1.72476), ("302", "FT911-2671", 1, 3.5)]
    qrels_path = tmp_path / "qrels.test"
    qrels_path.write_text("# comment here\n301 0 CR93E-10279 0\n# and comment here\n301 0 CR#93E-1860 1\n"
                          "302 0 FT911-2671 2\n")
    assert read_qrels(qrels_path).judgements == {"301": {"CR93E-10279": 0, "CR#93E-1860": 1}, "302": {"FT911-2671": 2}}


MALFORMED = [
    (read_topics, "1\tok\nno tab here\n", 2, "qid<TAB>query"),
    (read_topics, "1\tok\n\tempty qid\n", 2, "qid"),
    (read_topics, "1\tok\r\n1\tagain\r\n", 2, "duplicate"),
    (read_qrels, "1 0 d1 1\n1 0 d2\n", 2, "4 columns"),
    (read_qrels, "1 0 d1 1\n\n1 Q0 d2 high\n", 3, "not an integer"),
    (read_qrels, "# judged by\n1 0 d1 1\n1 0 d2 1 extra\n", 3, "4 columns"),      # trec_eval refuses a 5th too
    (lambda p: read_trec_run(p, "r"), "# header\n1 Q0 d 1 2.5 t\n1 Q0 e 2 1.5\n", 3, "6 columns"),
    (lambda p: read_trec_run(p, "r"), "1 Q0 d 1 2.5 t\n1 Q0 e 2 1.5\n", 2, "6 columns"),
    (lambda p: read_trec_run(p, "r"), "1 Q0 d 1 abc t\n", 1, "not a number"),
    (lambda p: read_trec_run(p, "r"), "1 Q0 d 1 2 t\n1 Q0 d 2 1 t\n", 2, "twice"),
    (lambda p: read_candidates_jsonl(p, "r"), '{"qid": "1", "query": "q", "hits": []}\n{"qid": ""}\n', 2, "candidates"),
    (lambda p: read_candidates_jsonl(p, "r"), '{"qid": "1", "query": "q", "hits": [}\n', 1, "candidates"),
]


@pytest.mark.parametrize("reader,text,line_no,problem", MALFORMED)
def test_malformed_line_names_file_and_line(tmp_path, reader, text, line_no, problem):
    path = tmp_path / "bad.txt"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(DataFormatError) as info:
        reader(path)
    msg = str(info.value)
    assert f"{path}:{line_no}:" in msg and problem in msg
    bad_line = text.replace("\r", "").split("\n")[line_no - 1]
    assert repr(bad_line) in msg          # the offending line is shown
    assert isinstance(info.value, ValueError) and info.value.line_no == line_no


def test_rank_llm_json_errors(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps([{"query": "q", "hits": [{"qid": 1, "docid": "d", "rank": 1, "score": "x", "content": "t"}]}]))
    with pytest.raises(DataFormatError, match=r"entry 1, hit 1: score 'x'"):
        read_rank_llm_json(path, "r")
    path.write_text(json.dumps([{"query": "other", "hits": [{"qid": 1, "docid": "d", "rank": 1, "score": 1.0, "content": "t"}]}]))
    with pytest.raises(DataFormatError, match="differs from topic"):
        read_rank_llm_json(path, "r", {"1": "q"})
    with pytest.raises(DataFormatError, match="not in the topics"):
        read_rank_llm_json(path, "r", {"2": "q"})


def test_refused_write_keeps_old_file(tmp_path):
    good = write_qrels(Qrels({"1": {"d": 1}}), tmp_path / "q.txt").read_bytes()
    with pytest.raises(ValueError):
        write_trec_run(Run("bad tag"), tmp_path / "q.txt")
    with pytest.raises(ValueError):
        write_topics([Query("1", "a\rb")], tmp_path / "q.txt")
    assert (tmp_path / "q.txt").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.txt"]
