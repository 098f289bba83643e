"""NanoVDR-Train reader on tiny parquet fixtures: splits, filters, lazy pages, -Multi balance, file resolution."""

from __future__ import annotations

import pytest

from lab.data import nanovdr_train as T
from lab.data.formats import DataFormatError
from lab.data.sources import DataUnavailableError
from tests.unit.data.nanovdr_train_fixtures import ROWS, VAL, write_dataset, write_split


def test_reads_train_and_validation_splits(tmp_path):
    write_dataset(tmp_path)
    train = T.read_queries("train", root=tmp_path)
    assert [q.qid for q in train] == ["q0", "q1", "q2", "q3", "q4", "q6"]            # q5 is blank
    assert train[2].text == "wie hoch ist der umsatz" and (train[2].language, train[2].source) == ("de", "colpali_train_set")
    assert [q.qid for q in T.read_queries("validation", root=tmp_path)] == [v[0] for v in VAL]
    assert [q.qid for q in T.read_queries("train", root=tmp_path, languages=["en"])] == ["q0", "q1"]
    assert [q.qid for q in T.read_queries("train", root=tmp_path, sources=["visrag_synthetic"])] == ["q1", "q6"]
    assert train[0].query().text == ROWS[0][1]


def test_pages_are_decoded_only_on_demand_from_their_row(tmp_path):
    write_dataset(tmp_path)
    train = T.read_queries("train", root=tmp_path)
    q6 = train[-1]                                     # row 6: third row group (row_group_size 3)
    assert (q6.file.endswith("train-00000-of-00001.parquet"), q6.row) == (True, 6)
    assert q6.load_image().size == (26, 36)
    assert train[0].load_image().size == (20, 30)


def test_bad_files_name_the_file_and_row(tmp_path):
    folder = tmp_path / "nanovdr" / "NanoVDR-Train"
    write_split(folder, "train", ROWS, text_column="prompt")
    with pytest.raises(DataFormatError, match=r"train-00000-of-00001.parquet: no column 'query'"):
        T.read_queries("train", root=tmp_path)
    write_split(folder, "train", ROWS + [("q0", "again", "en", "x")])
    with pytest.raises(DataFormatError, match=r"parquet:7: query id 'q0' already in .* row 0"):
        T.read_queries("train", root=tmp_path)


def test_mirror_then_offline_hub(tmp_path, monkeypatch):
    write_dataset(tmp_path / "mirror" / "hf-datasets")
    (tmp_path / "mirror" / "trec-dl").mkdir()
    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path / "mirror"))
    assert len(T.read_queries("validation")) == 2                      # found in the mirror
    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path / "empty"))
    monkeypatch.setenv("LAB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match=r"nanovdr/NanoVDR-Train \(train\).*LAB_OFFLINE is set"):
        T.read_queries("train")


def test_balance_caps_translated_languages_only(tmp_path):
    write_dataset(tmp_path)
    train = T.read_queries("train", root=tmp_path)                     # en: 2, de: 3, fr: 1
    kept = T.balance(train, per_language=2, seed=0)
    langs = [q.language for q in kept]
    assert langs.count("en") == 2 and langs.count("de") == 2 and langs.count("fr") == 1
    assert [q.qid for q in kept] == [q.qid for q in train if q in kept]          # file order
    assert kept == T.balance(train, per_language=2, seed=0) and T.balance(train, 0, 0) == train
