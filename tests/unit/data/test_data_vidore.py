"""lab.data.vidore: QA (v1) and BEIR (v2/v3) parquet layouts, binarisation, errors, Hub path (faked)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from PIL import Image

from lab.data import sources, vidore
from lab.data.formats import DataFormatError
from lab.data.sources import DataUnavailableError
from lab.data.vidore import VidoreSet, binarise, load_vidore
from lab.records import Query
from tests.unit.data.vidore_fixtures import make_v1, make_v2, make_v3, png, write

V1 = VidoreSet("v1/tiny", "vidore/tiny_qa_test", "qa")
V2 = VidoreSet("v2/tiny", "vidore/tiny_v2_beir", "beir")
V3 = VidoreSet("v3/tiny", "vidore/vidore_v3_tiny", "beir")


def test_registry_lists_the_papers_sets():
    reg = vidore.registry()
    by_version = {v: [k for k in reg if k.startswith(v + "/")] for v in ("v1", "v2", "v3")}
    assert {v: len(k) for v, k in by_version.items()} == {"v1": 10, "v2": 4, "v3": 8}
    assert all(reg[k].format == "qa" for k in by_version["v1"])
    assert all(reg[k].format == "beir" and reg[k].split == "test" for k in by_version["v2"] + by_version["v3"])
    assert reg["v1/docvqa"].repo == "vidore/docvqa_test_subsampled"
    assert reg["v3/pharmaceuticals"].repo == "vidore/vidore_v3_pharmaceuticals"
    with pytest.raises(KeyError, match="unknown ViDoRe set 'v9/x'"):
        vidore.vidore_set("v9/x")


def test_v1_qa_skips_none_queries_and_collapses_pages(tmp_path):
    make_v1(tmp_path / "root")
    ds = load_vidore(V1, tmp_path / "pages", root=tmp_path / "root")
    assert [p.docid for p in ds.pages] == ["docs/a.png", "docs/b.png", "docs/c.png"]     # 5 rows, 3 files
    assert [p.text for p in ds.pages] == ["red page", "blue page", "green page"]
    assert ds.queries == [Query("0", "red page"), Query("3", "blue page"), Query("4", "green page")]  # row ids, shard 2 offset
    assert ds.qrels.judgements == {"0": {"docs/a.png": 1}, "3": {"docs/b.png": 1}, "4": {"docs/c.png": 1}}
    assert ds.skipped == {"no_query": 1, "duplicate_query": 1, "no_relevant": 0}
    with Image.open(ds.pages[1].image) as im:                     # the page image, written to disk
        assert im.size == (8, 8) and im.convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    assert ds.pages[0].image.parent == tmp_path / "pages" and ds.pages[0].image.suffix == ".png"


def test_v1_duplicate_query_takes_the_last_rows_page(tmp_path):
    # vidore-benchmark's qrels come from {query: image_filename}, so the last row with a text wins
    folder = tmp_path / "root" / V1.repo / "data"
    write(folder / "test-00000-of-00001.parquet", {
        "query": ["same", "same"], "image": [png("red"), png("blue")], "image_filename": ["a", "b"]})
    ds = load_vidore(V1, tmp_path / "pages", root=tmp_path / "root")
    assert ds.queries == [Query("0", "same")] and ds.qrels.judgements == {"0": {"b": 1}}
    assert [p.text for p in ds.pages] == ["", ""]                 # no text column: empty page text


def test_v2_beir_binarises_and_filters_languages(tmp_path):
    make_v2(tmp_path / "root")
    ds = load_vidore(V2, tmp_path / "pages", root=tmp_path / "root")
    assert [p.docid for p in ds.pages] == ["0", "1", "2"]
    assert ds.queries == [Query("10", "red page"), Query("11", "blue page")]   # 12 has only a 0.0 judgement
    assert ds.qrels.judgements == {"10": {"0": 1}, "11": {"2": 1}}              # 0.0 dropped, 2.0 -> 1
    assert ds.graded == {"10": {"0": 1.0, "1": 0.0}, "11": {"2": 2.0}, "12": {"1": 0.0}}
    assert ds.skipped == {"language": 0, "no_relevant": 1}
    en = load_vidore(V2, tmp_path / "pages", root=tmp_path / "root", languages=["English"])
    assert en.queries == [Query("10", "red page")] and en.skipped["language"] == 1


def test_v3_graded_scores_become_binary(tmp_path):
    make_v3(tmp_path / "root")
    ds = load_vidore(V3, tmp_path / "pages", root=tmp_path / "root")
    assert ds.qrels.judgements == {"0": {"3": 1, "2": 1}, "1": {"1": 1}}        # 2 (full) and 1 (critical)
    assert ds.graded["0"] == {"3": 2.0, "2": 1.0}
    assert [p.text for p in ds.pages] == ["red page", "green page", "blue page", "grey page"]   # markdown
    assert binarise({"a": {"x": 0, "y": -1}, "b": {"x": 0.5}}).judgements == {"b": {"x": 1}}


def test_pages_are_content_addressed_and_shared(tmp_path):
    make_v1(tmp_path / "root")
    make_v2(tmp_path / "root")
    a = load_vidore(V1, tmp_path / "pages", root=tmp_path / "root")
    b = load_vidore(V2, tmp_path / "pages", root=tmp_path / "root")
    assert a.pages[0].image == b.pages[0].image                    # the same red PNG bytes, one file
    assert len(list((tmp_path / "pages").iterdir())) == 3


def test_malformed_files_name_the_file_and_row(tmp_path):
    root = tmp_path / "root"
    folder = make_v3(root)
    qrels = folder / "qrels" / "test-00000-of-00001.parquet"
    write(qrels, {"query_id": [0, 0], "corpus_id": [3, 99], "score": [2, 1]})
    with pytest.raises(DataFormatError, match=r"qrels/test-00000-of-00001.parquet: row 1: corpus_id '99' is not in the corpus"):
        load_vidore(V3, tmp_path / "pages", root=root)
    write(qrels, {"query_id": [0], "corpus_id": [3], "score": [None]}, {"score": pa.float64()})
    with pytest.raises(DataFormatError, match=r"row 0: score None is not a number"):
        load_vidore(V3, tmp_path / "pages", root=root)
    write(qrels, {"query_id": [0], "doc": [3], "score": [2]})
    with pytest.raises(DataFormatError, match=r"qrels/test-00000-of-00001.parquet: no column 'corpus-id' / 'corpus_id'"):
        load_vidore(V3, tmp_path / "pages", root=root)
    corpus = folder / "corpus" / "test-00000-of-00001.parquet"
    write(corpus, {"corpus_id": [0, 1], "image": [png("red"), {"bytes": b"not an image", "path": None}]})
    with pytest.raises(DataFormatError, match=r"corpus/test-00000-of-00001.parquet: row 1: column 'image' is not a readable image"):
        load_vidore(V3, tmp_path / "pages", root=root)
    corpus.write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match=r"corpus/test-00000-of-00001.parquet: not a readable parquet file"):
        load_vidore(V3, tmp_path / "pages", root=root)
    v1 = make_v1(root) / "data" / "test-00001-of-00002.parquet"
    write(v1, {"query": [""], "image": [png("red")], "image_filename": ["z"]})
    with pytest.raises(DataFormatError, match=r"test-00001-of-00002.parquet: row 0: 'query' must be text or None"):
        load_vidore(V1, tmp_path / "pages", root=root)


def test_missing_layout_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vidore/tiny_v2_beir: no \['corpus/test-\*.parquet'"):
        load_vidore(V2, tmp_path / "pages", root=tmp_path)


def test_hub_mirror_and_offline(tmp_path, monkeypatch):
    src = tmp_path / "hub"
    make_v3(src)
    calls = []

    def fake(repo_id, allow_patterns, revision, local_only):
        calls.append((repo_id, tuple(allow_patterns), revision, local_only))
        return str(src / repo_id)

    monkeypatch.setattr(sources, "hf_snapshot", fake)
    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path / "mirror"))      # a mirror without the repo
    monkeypatch.delenv("LAB_OFFLINE", raising=False)
    spec = VidoreSet("v3/tiny", V3.repo, "beir", revision="abc")
    ds = load_vidore(spec, tmp_path / "pages")
    assert len(ds.queries) == 2
    assert calls == [(V3.repo, ("corpus/test-*.parquet", "queries/test-*.parquet", "qrels/test-*.parquet"), "abc", False)]
    # the mirror's hf-datasets/<owner>/<name> wins over the Hub
    make_v3(tmp_path / "mirror" / vidore.MIRROR_SUBDIR)
    calls.clear()
    assert len(load_vidore(spec, tmp_path / "pages").queries) == 2 and calls == []
    # offline, not mirrored, not in the HF cache: a DataUnavailableError naming what was tried
    monkeypatch.setenv("LAB_DATA_MIRROR", "")
    monkeypatch.setenv("LAB_OFFLINE", "1")

    def miss(repo_id, allow_patterns, revision, local_only):
        calls.append(local_only)
        raise FileNotFoundError("not in the local cache")

    monkeypatch.setattr(sources, "hf_snapshot", miss)
    with pytest.raises(DataUnavailableError, match=r"vidore/vidore_v3_tiny@abc \(local cache only: LAB_OFFLINE is set\)"):
        load_vidore(spec, tmp_path / "pages")
    assert calls == [True]
