"""Tiny ViDoRe-shaped parquet repos (8x8 PNG pages) laid out like the Hub: ``<root>/<owner>/<name>/``.

Columns and layouts follow ``src/lab/data/vidore.yaml``: v1 QA rows in ``data/test-*.parquet`` (two
shards, so row offsets are exercised), v2 BEIR with hyphenated ids + ``language``, v3 BEIR with
underscored ids + ``markdown`` and graded scores 1 / 2. Images are ``{bytes, path}`` structs, as
``datasets`` writes its Image feature. Shared by the loader tests and the NanoVDR evaluation test.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "grey": (90, 90, 90)}


def png(color: str) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), COLORS[color]).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def write(path: Path, columns: dict, types: dict | None = None) -> Path:
    types = types or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({k: pa.array(v, type=types.get(k, IMAGE if k == "image" else None)) for k, v in columns.items()})
    pq.write_table(table, path)
    return path


def make_v1(root: Path, repo: str = "vidore/tiny_qa_test") -> Path:
    """Rows: red (q0), blue page without a query, red again (duplicate query, same page), a query on
    the blue page (duplicate file name), then in shard 2 a green page. Query texts equal page texts."""
    folder = root / repo / "data"
    write(folder / "test-00000-of-00002.parquet", {
        "query": ["red page", None, "red page", "blue page"],
        "image": [png("red"), png("blue"), png("red"), png("blue")],
        "image_filename": ["docs/a.png", "docs/b.png", "docs/a.png", "docs/b.png"],
        "text_description": ["red page", "blue page", "red page", "blue page"],
        "answer": ["x", None, "x", "y"],
    })
    write(folder / "test-00001-of-00002.parquet", {
        "query": ["green page"], "image": [png("green")], "image_filename": ["docs/c.png"],
        "text_description": ["green page"], "answer": ["z"],
    })
    return root / repo


def make_v2(root: Path, repo: str = "vidore/tiny_v2_beir") -> Path:
    """Hyphenated ids (int64), float scores with a 0.0, queries in two languages, one query with no
    relevant page (dropped)."""
    folder = root / repo
    write(folder / "corpus" / "test-00000-of-00001.parquet", {
        "corpus-id": [0, 1, 2], "image": [png("red"), png("green"), png("blue")],
        "text_description": ["red page", "green page", "blue page"]})
    write(folder / "queries" / "test-00000-of-00001.parquet", {
        "query-id": [10, 11, 12], "query": ["red page", "blue page", "green page"],
        "language": ["english", "french", "english"]})
    write(folder / "qrels" / "test-00000-of-00001.parquet", {
        "query-id": [10, 10, 11, 12], "corpus-id": [0, 1, 2, 1], "score": [1.0, 0.0, 2.0, 0.0]})
    return folder


def make_v3(root: Path, repo: str = "vidore/vidore_v3_tiny") -> Path:
    """Underscored ids, ``markdown`` page text, graded scores 1 (critical) and 2 (full)."""
    folder = root / repo
    write(folder / "corpus" / "test-00000-of-00001.parquet", {
        "corpus_id": [0, 1, 2, 3], "image": [png("red"), png("green"), png("blue"), png("grey")],
        "doc_id": ["d", "d", "e", "e"], "markdown": ["red page", "green page", "blue page", "grey page"]})
    write(folder / "queries" / "test-00000-of-00001.parquet", {
        "query_id": [0, 1], "query": ["grey page", "green page"], "language": ["english", "english"]})
    write(folder / "qrels" / "test-00000-of-00001.parquet", {
        "query_id": [0, 0, 1], "corpus_id": [3, 2, 1], "score": [2, 1, 2],
        "content_type": [["text"], ["table"], ["text"]]})
    return folder


REGISTRY = {"v1/tiny": ("vidore/tiny_qa_test", "qa", make_v1),
            "v2/tiny": ("vidore/tiny_v2_beir", "beir", make_v2),
            "v3/tiny": ("vidore/vidore_v3_tiny", "beir", make_v3)}


def make_root(root: Path) -> Path:
    """All three tiny sets under one root (the ``benchmark_dir`` layout)."""
    for _, _, make in REGISTRY.values():
        make(root)
    return root


def tiny_registry():
    from lab.data.vidore import VidoreSet

    return {k: VidoreSet(k, repo, fmt) for k, (repo, fmt, _) in REGISTRY.items()}
