"""lab.data.beir: a local BEIR-format folder, and the Hub path through a fake downloader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lab.data import beir
from lab.data.beir import load_beir
from lab.data.formats import DataFormatError
from lab.records import Query

CORPUS = [
    {"_id": "d1", "title": "Flea", "text": "A flea can live a year \u2028 and more", "metadata": {}},
    {"_id": "d2", "title": "", "text": "Itâ\x80\x99s mojibake, kept"},
    {"_id": 3, "text": "no title, int id"},
]
QUERIES = [
    {"_id": "q1", "text": "how long do fleas live"},
    {"_id": "q2", "text": "unjudged in test"},
    {"_id": "q3", "text": "naïve query"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\td2\t2\nq3\t3\t0\n"


def make_folder(root: Path, gz: bool = False) -> Path:
    (root / "qrels").mkdir(parents=True)

    def put(name: str, data: bytes):
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (root / name).write_bytes(data)

    put("corpus.jsonl", "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in CORPUS).encode())
    put("queries.jsonl", "".join(json.dumps(q) + "\n" for q in QUERIES).encode())
    (root / "qrels" / "test.tsv").write_text(QRELS)
    return root


def check(ds):
    assert ds.corpus == {
        "d1": ("Flea", "A flea can live a year \u2028 and more"),
        "d2": ("", "Itâ\x80\x99s mojibake, kept"),
        "3": ("", "no title, int id"),
    }
    assert ds.queries == [Query("q1", "how long do fleas live"), Query("q3", "naïve query")]   # judged only
    assert ds.qrels.judgements == {"q1": {"d1": 1}, "q3": {"d2": 2, "3": 0}}


@pytest.mark.parametrize("gz", [False, True])
def test_local_folder(tmp_path, gz):
    ds = load_beir(make_folder(tmp_path / "scifact", gz))
    assert ds.name == "scifact"
    check(ds)


def test_local_missing_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        load_beir(make_folder(tmp_path / "x"), split="dev")


def test_malformed_qrels_line(tmp_path):
    folder = make_folder(tmp_path / "x")
    (folder / "qrels" / "test.tsv").write_text(QRELS + "q1\td2\n")
    with pytest.raises(DataFormatError, match=r"test.tsv:5: expected .* got 2 columns"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text(QRELS + "q1\td2\tyes\n")
    with pytest.raises(DataFormatError, match=r"test.tsv:5: score 'yes'"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text(QRELS + "q9\td2\t1\n")
    with pytest.raises(DataFormatError, match="no query"):
        load_beir(folder)


def test_hub_through_fake_downloader(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "src", gz=True)
    files = {
        ("BeIR/scifact", "corpus.jsonl.gz"): src / "corpus.jsonl.gz",
        ("BeIR/scifact", "queries.jsonl.gz"): src / "queries.jsonl.gz",
        ("BeIR/scifact-qrels", "test.tsv"): src / "qrels" / "test.tsv",
    }
    calls = []

    def fake(repo_id, filename, revision):
        calls.append((repo_id, filename, revision))
        if (repo_id, filename) not in files:
            raise FileNotFoundError(filename)
        return str(files[(repo_id, filename)])

    monkeypatch.setattr(beir, "_hf_download", fake)
    monkeypatch.chdir(tmp_path)                       # "scifact" must not resolve to a local folder
    for ident in ("scifact", "BeIR/scifact", "hf:BeIR/scifact"):
        calls.clear()
        ds = load_beir(ident, revision="abc")
        assert ds.name == "scifact"
        check(ds)
        assert calls == [
            ("BeIR/scifact", "corpus.jsonl.gz", "abc"),
            ("BeIR/scifact", "queries.jsonl.gz", "abc"),
            ("BeIR/scifact-qrels", "test.tsv", None),
        ]
    # plain .jsonl and qrels/<split>.tsv are the fallbacks; a repo with none of them is named in the error
    del files[("BeIR/scifact", "queries.jsonl.gz")]
    files[("BeIR/scifact", "queries.jsonl")] = tmp_path / "q.jsonl"
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    check(load_beir("scifact"))
    with pytest.raises(FileNotFoundError, match=r"BeIR/scifact-qrels: none of \['dev.tsv', 'qrels/dev.tsv'\]"):
        load_beir("scifact", split="dev")


def test_hub_not_found_error_is_a_miss(monkeypatch, tmp_path):
    from huggingface_hub.errors import EntryNotFoundError

    def fake(repo_id, filename, revision):
        raise EntryNotFoundError(f"{repo_id}/{filename}")

    monkeypatch.setattr(beir, "_hf_download", fake)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"BeIR/nfcorpus: none of \['corpus.jsonl.gz', 'corpus.jsonl'\]"):
        load_beir("nfcorpus")


def test_texts_join_title_and_stream_only_the_wanted_docids(tmp_path):
    folder = make_folder(tmp_path / "scifact")
    assert beir.read_beir_texts(folder / "corpus.jsonl", ["d1", "3"]) == {
        "d1": "Flea. A flea can live a year \u2028 and more", "3": "no title, int id"}   # official "title. text"
    assert [d for d, _, _ in beir.iter_beir_corpus(folder / "corpus.jsonl")] == ["d1", "d2", "3"]
    with pytest.raises(DataFormatError, match="1 docids are not in the corpus"):
        beir.read_beir_texts(folder / "corpus.jsonl", ["d1", "nope"])
