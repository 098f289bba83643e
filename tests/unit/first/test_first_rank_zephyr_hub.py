"""rank_zephyr_training_data_alpha from Hub-layout parquet: mirror folder first, then the Hub, no ``datasets``."""

import builtins
import json
from pathlib import Path

import pytest

from lab.data import sources
from lab.data.sources import DataUnavailableError
from lab.rerank import rank_zephyr
from lab.rerank.rank_zephyr import load_rank_zephyr
from tests.unit.first.conftest import FIXTURES

REPO_ID = "rryisthebest/rank_zephyr_training_data_alpha"
ROWS = [json.loads(line) for line in (FIXTURES / "rank_zephyr_alpha_sample.jsonl").read_text().splitlines()]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """A Hub-style parquet (id: string, conversations: list<struct<from, value>>), two row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path


@pytest.fixture
def no_datasets(monkeypatch):
    real = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("datasets is not installed")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)


@pytest.fixture
def offline_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("LAB_OFFLINE", "1")
    return tmp_path / "mirror"


def _same_as_jsonl(data):
    want = load_rank_zephyr(FIXTURES / "rank_zephyr_alpha_sample.jsonl")
    assert data.ids == want.ids == ["1048585", "2", "3", "4"] and data.skipped == want.skipped
    assert [(e.query, e.passages, e.ranks) for e in data.examples] == [
        (e.query, e.passages, e.ranks) for e in want.examples]
    assert data.repaired == want.repaired == 2


def test_mirror_folder_parquet_without_datasets(offline_mirror, no_datasets, monkeypatch):
    write_parquet(offline_mirror / "hf-datasets" / REPO_ID / "data" / "train-00000-of-00001.parquet", ROWS)
    monkeypatch.setattr(sources, "hf_snapshot", lambda *a: pytest.fail("the mirror must be used first"))
    _same_as_jsonl(load_rank_zephyr(REPO_ID))
    _same_as_jsonl(load_rank_zephyr("hf:" + REPO_ID))
    assert len(load_rank_zephyr(REPO_ID, max_examples=2).examples) == 2


def test_hub_falls_back_to_the_parquet_branch(offline_mirror, no_datasets, tmp_path, monkeypatch):
    calls = []

    def snapshot(repo, patterns, revision, local_only):
        calls.append((repo, revision, local_only))
        folder = tmp_path / "hub" / (revision or "main").replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        if revision == rank_zephyr.PARQUET_BRANCH:        # parquet-converter layout: default/<split>/NNNN.parquet
            write_parquet(folder / "default" / "train" / "0000.parquet", ROWS)
        return str(folder)

    monkeypatch.setattr(sources, "hf_snapshot", snapshot)
    _same_as_jsonl(load_rank_zephyr(REPO_ID))
    assert calls == [(REPO_ID, None, True), (REPO_ID, "refs/convert/parquet", True)]   # LAB_OFFLINE: cache only


def test_unavailable_names_everything_tried(offline_mirror, monkeypatch):
    def snapshot(repo, patterns, revision, local_only):
        raise FileNotFoundError("not in the local cache")

    monkeypatch.setattr(sources, "hf_snapshot", snapshot)
    with pytest.raises(DataUnavailableError) as err:
        load_rank_zephyr(REPO_ID)
    msg = str(err.value)
    assert "hf-datasets/" + REPO_ID in msg and "LAB_OFFLINE" in msg and "refs/convert/parquet" in msg


def test_local_parquet_file_and_bad_parquet(tmp_path):
    _same_as_jsonl(load_rank_zephyr(write_parquet(tmp_path / "rows.parquet", ROWS)))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="bad.parquet: not a readable parquet"):
        load_rank_zephyr(tmp_path / "bad.parquet")
    write_parquet(tmp_path / "nocol.parquet", [{"id": "1", "messages": "x"}])
    with pytest.raises(ValueError, match="no 'conversations' column"):
        load_rank_zephyr(tmp_path / "nocol.parquet")


def test_paper_profile_trains_on_it(monkeypatch, offline_mirror):
    from tests.unit.first.conftest import load_cfg
    from lab.methods.first import train as first_train

    cfg = load_cfg("paper")
    assert cfg.train.source == "rank_zephyr" and cfg.train.rank_zephyr == REPO_ID
    write_parquet(offline_mirror / "hf-datasets" / REPO_ID / "data" / "train-00000-of-00001.parquet", ROWS)
    ts = first_train.training_set(cfg, offline_mirror, seed=0)
    assert ts.kinds == ["rank_zephyr"] * 4 and ts.notes == {"skipped": 1, "repaired": 2}
