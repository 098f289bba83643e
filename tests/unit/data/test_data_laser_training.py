"""LaSER-Training reader on fixtures written here: the save_to_disk Arrow layout, parquet, JSON lines, the mirror
folder and the Hub seam, and errors naming the file, the row and the field."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lab.data import laser_training as L
from lab.data import sources
from lab.data.formats import DataFormatError
from lab.data.sources import DataUnavailableError
from tests.unit.data.laser_training_fixtures import ROWS, write_arrow


def test_arrow_parquet_and_jsonl_give_the_same_rows(tmp_path):
    a = write_arrow(tmp_path / "arrow" / "bge_reasoning" / "data-00000-of-00001.arrow", ROWS)
    p = tmp_path / "pq" / "train.parquet"
    p.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS), p)
    j = tmp_path / "train.jsonl"
    j.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    got = [L.read_training_rows([f]) for f in (a, p, j)]
    assert [[(r.query, r.reasoning, r.prompt, r.positives, r.negatives) for r in g] for g in got] == [[
        (ROWS[0]["query"], ROWS[0]["reasoning_query"], ROWS[0]["prompt"], tuple(ROWS[0]["positive_passages"]),
         tuple(ROWS[0]["negative_passages"])),
        (ROWS[1]["query"], "ok", "", ("Goldbach's conjecture.",), ())]] * 3
    assert got[0][1].row == 1 and got[0][1].file == str(a)
    assert L.training_files(tmp_path / "arrow", "bge_reasoning") == [a]
    assert len(L.read_training_rows([a], max_rows=1)) == 1


def test_tevatron_dict_passages_are_title_plus_text(tmp_path):
    rows = [{**ROWS[0], "positive_passages": [{"docid": "7", "title": "Phototaxis", "text": "Moths turn."}]}]
    (r,) = L.read_training_rows([write_arrow(tmp_path / "d" / "data-00000-of-00001.arrow", rows)])
    assert r.positives == ("Phototaxis Moths turn.",)


def test_bad_rows_name_file_row_and_field(tmp_path):
    no_prompt = [{k: v for k, v in ROWS[0].items() if k != "prompt"}]
    f = write_arrow(tmp_path / "a" / "data-00000-of-00001.arrow", no_prompt)
    with pytest.raises(DataFormatError, match=r"data-00000-of-00001.arrow: no field 'prompt'"):
        L.read_training_rows([f])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[0], "positive_passages": "one string"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl: row 1: field 'positive_passages' is str, not a list"):
        L.read_training_rows([bad])
    bad.write_text(json.dumps({**ROWS[0], "positive_passages": []}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl: row 0: field 'positive_passages' is empty"):
        L.read_training_rows([bad])
    bad.write_text(json.dumps({**ROWS[0], "negative_passages": [3]}) + "\n")
    with pytest.raises(DataFormatError, match=r"row 0: field 'negative_passages'\[0\] is int, not text"):
        L.read_training_rows([bad])
    bad.write_text("{not json\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl:1: not valid JSON"):
        L.read_training_rows([bad])
    (tmp_path / "x.parquet").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match=r"x.parquet: not a readable parquet file"):
        L.read_training_rows([tmp_path / "x.parquet"])


def test_mirror_first_then_the_hub_then_a_clear_error(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_arrow(mirror / "hf-datasets" / L.REPO / "bge_reasoning" / "data-00000-of-00001.arrow", ROWS)
    monkeypatch.setenv("LAB_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("LAB_OFFLINE", "1")
    monkeypatch.setattr(sources, "hf_snapshot", lambda *a: pytest.fail("the mirror must be used first"))
    (f,) = L.hub_training_files("bge_reasoning")
    assert f.is_relative_to(mirror) and len(L.read_training_rows([f])) == 2
    calls = []

    def hub(repo, patterns, revision, local_only):
        calls.append((repo, revision, local_only))
        folder = tmp_path / "hub" / str(revision).replace("/", "_")
        if revision == L.PARQUET_BRANCH:            # parquet-converter layout
            (folder / "default" / "train").mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(ROWS), folder / "default" / "train" / "0000.parquet")
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path / "empty"))
    monkeypatch.setattr(sources, "hf_snapshot", hub)
    (f,) = L.hub_training_files()
    assert f.name == "0000.parquet" and calls == [(L.REPO, None, True), (L.REPO, L.PARQUET_BRANCH, True)]

    def miss(*a):
        raise FileNotFoundError("not in the local cache")

    monkeypatch.setattr(sources, "hf_snapshot", miss)
    with pytest.raises(DataUnavailableError, match=r"LaSER training data jinjiajie/LaSER-Training / bge_reasoning "
                                                   r"is not available.*hf-datasets/jinjiajie/LaSER-Training.*"
                                                   r"LAB_OFFLINE is set"):
        L.hub_training_files("bge_reasoning")
    with pytest.raises(DataUnavailableError, match=r"no \['bge_reasoning/\*\*/\*.arrow'.*root .* given"):
        L.hub_training_files("bge_reasoning", root=tmp_path / "nowhere")
