"""NanoVDR's training queries (Hugging Face dataset ``nanovdr/NanoVDR-Train``) into lab records.

What the NanoVDR authors publish about it (Ryenhails/NanoVDR README and model cards, read 2026-12): ~1.49M queries,
711K English ones drawn from four public visual-document training sets (the model cards list them; mteb's
NanoVDR entry names ViDoRe's DocVQA / InfoVQA / TabFQuAD / ArxivQA training splits as seen in training) plus 778K
MarianMT translations into de / fr / es / it / pt; the students train on the query *text* only against cached
teacher targets, and the best checkpoint is chosen on a separate validation split (``val_sources:
queries_val`` in configs/query/*.yaml).

The dataset's file layout could not be read here (no Hub access), so this reader assumes the Hub's parquet
convention and nothing more: ``<config>/<split>-NNNNN-of-NNNNN.parquet`` or ``<config>/<split>/*.parquet``
(``data/`` being the default config), one row per query with a text column (``query``, else ``question`` or
``text``), optionally ``language`` / ``lang`` (default ``"en"``), ``source`` / ``dataset`` (default: the config
folder), an id (``query_id`` / ``qid`` / ``id``; default ``<config>/<file stem>:<row>``) and the ground-truth
page image (``image``), which is **not decoded here**: :class:`TrainQuery` keeps (file, row) so a teacher decodes a
page only when its batch runs. Bad data raises :class:`~lab.data.formats.DataFormatError` naming file and row (``file:row: problem``; rows 0-based).

Files are found like :mod:`lab.data.vidore`'s: an explicit ``root`` holding ``<owner>/<name>/``, the data mirror's
``hf-datasets/<owner>/<name>/``, then ``huggingface_hub.snapshot_download`` of the split's parquet files only
(``LAB_OFFLINE=1``: local HF cache only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lab.data.formats import DataFormatError, pick_column
from lab.data.sources import HF_MIRROR_SUBDIR, DataUnavailableError, hub_dataset_folder
from lab.records import Query

__all__ = ["REPO", "TrainQuery", "train_folder", "split_files", "read_queries", "balance", "MIRROR_SUBDIR"]

REPO = "nanovdr/NanoVDR-Train"
MIRROR_SUBDIR = HF_MIRROR_SUBDIR
TEXT = ("query", "question", "text")
LANGUAGE = ("language", "lang")
SOURCE = ("source", "dataset")
QID = ("query_id", "qid", "id")
SPLIT_ALIASES = {"validation": ("validation", "val", "dev"), "train": ("train",), "test": ("test",)}


@dataclass(frozen=True)
class TrainQuery:
    qid: str
    text: str
    language: str = "en"
    source: str = ""
    file: str = ""          # parquet file holding the row (its page image is read from there when needed)
    row: int = -1

    def query(self) -> Query:
        return Query(self.qid, self.text)

    def load_image(self):
        """The row's ground-truth page image (PIL), decoded now; raises when the row has none."""
        import io

        import pyarrow.parquet as pq
        from PIL import Image

        if not self.file or self.row < 0:
            raise DataFormatError(self.file or "?", None, f"query {self.qid}: no source row")
        pf = pq.ParquetFile(self.file)
        if "image" not in pf.schema_arrow.names:
            raise DataFormatError(self.file, None, f"no 'image' column (query {self.qid})")
        start = 0
        for g in range(pf.num_row_groups):        # read only the row group holding the row
            n = pf.metadata.row_group(g).num_rows
            if self.row < start + n:
                value = pf.read_row_group(g, columns=["image"]).column("image")[self.row - start].as_py()
                break
            start += n
        else:
            raise DataFormatError(self.file, self.row, "row out of range")
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise DataFormatError(self.file, self.row, "empty image")
        return Image.open(io.BytesIO(data))


def _has_split(folder: Path, split: str) -> bool:
    return bool(split_files(folder, split, missing_ok=True))


def train_folder(split: str = "train", root: str | Path | None = None, repo: str = REPO,
                 revision: str | None = None) -> Path:
    """The local folder of ``repo`` holding ``split``'s parquet files (see the module doc for the order)."""
    aliases = SPLIT_ALIASES.get(split, (split,))
    patterns = [f"**/{alias}-*.parquet" for alias in aliases] + [f"**/{alias}/*.parquet" for alias in aliases]
    return hub_dataset_folder(repo, patterns=patterns, has_files=lambda f: _has_split(f, split),
                              what=f"{repo} ({split})", root=root, strict_root=False, revisions=(revision,))


def split_files(folder: str | Path, split: str, missing_ok: bool = False) -> list[Path]:
    """``split``'s parquet files under ``folder`` (any config), sorted by path."""
    folder = Path(folder)
    files: set[Path] = set()
    for alias in SPLIT_ALIASES.get(split, (split,)):
        files.update(folder.glob(f"**/{alias}-*.parquet"))
        files.update(folder.glob(f"**/{alias}/*.parquet"))
    out = sorted(f for f in files if f.is_file())
    if not out and not missing_ok:
        raise DataUnavailableError(f"{folder}: no {split!r} parquet files ({split}-*.parquet or {split}/*.parquet)")
    return out


def _rows(path: Path, folder: Path) -> Iterator[TrainQuery]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    cols = {k: pick_column(path, names, w, k == "text") for k, w in
            (("text", TEXT), ("language", LANGUAGE), ("source", SOURCE), ("qid", QID))}
    rel = path.relative_to(folder)
    config = rel.parts[0] if len(rel.parts) > 1 else ""
    stem = f"{config}/{path.stem}" if config else path.stem
    row = 0
    # batch by batch, text columns only: the image column (most of the bytes) is never read here
    for batch in pf.iter_batches(batch_size=8192, columns=[c for c in cols.values() if c]):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            text = data[cols["text"]][i]
            if not isinstance(text, str):
                raise DataFormatError(path, row, f"{cols['text']!r} is {type(text).__name__}, not text")
            qid = str(data[cols["qid"]][i]) if cols["qid"] else f"{stem}:{row}"
            yield TrainQuery(qid, text.strip(), str(data[cols["language"]][i]) if cols["language"] else "en",
                             str(data[cols["source"]][i]) if cols["source"] else config, str(path), row)
            row += 1


def read_queries(split: str = "train", *, root: str | Path | None = None, repo: str = REPO,
                 languages: Sequence[str] = (), sources: Sequence[str] = (), folder: str | Path | None = None
                 ) -> list[TrainQuery]:
    """Every query of ``split`` (file order), kept when its language is in ``languages`` and its source in
    ``sources`` (empty = all). Empty texts are dropped; a qid seen twice raises (targets are cached per qid)."""
    folder = Path(folder) if folder else train_folder(split, root, repo)
    out, seen = [], {}
    for path in split_files(folder, split):
        for q in _rows(path, folder):
            if not q.text or (languages and q.language not in languages) or (sources and q.source not in sources):
                continue
            if q.qid in seen:
                raise DataFormatError(path, q.row, f"query id {q.qid!r} already in {seen[q.qid]}")
            seen[q.qid] = f"{path} row {q.row}"
            out.append(q)
    return out


def balance(queries: Sequence[TrainQuery], per_language: int, seed: int, keep_all: Sequence[str] = ("en",)
            ) -> list[TrainQuery]:
    """At most ``per_language`` queries of each language outside ``keep_all`` (a seeded sample, file order kept):
    the -Multi mixture balances ~200K queries per translated language (issue 10) instead of every query in all
    five. ``per_language`` 0 keeps everything."""
    if per_language <= 0:
        return list(queries)
    rng = np.random.default_rng(seed)
    by_lang: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        by_lang.setdefault(q.language, []).append(i)
    keep: set[int] = set()
    for lang in sorted(by_lang):
        idx = by_lang[lang]
        if lang in keep_all or len(idx) <= per_language:
            keep.update(idx)
        else:
            keep.update(int(i) for i in rng.choice(idx, size=per_language, replace=False))
    return [q for i, q in enumerate(queries) if i in keep]


def _suffix(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    return ".img"            # PIL sniffs the format from the bytes, not the name


def extract_pages(queries: Sequence[TrainQuery], out_dir: str | Path) -> dict[str, Path]:
    """Write each query's ground-truth page image to ``out_dir/<sha256[:2]>/<sha256><ext>`` (content-addressed: a
    page shared by several queries is one file; an existing file is not rewritten) and return ``{qid: path}``.
    Streams each parquet file's ``image`` column batch by batch (256 rows), so neither the images nor the decoded
    pages are ever held together; pixels are not decoded here at all (the teacher decodes a page when its batch
    runs). Queries without an image column are left out."""
    import hashlib

    import pyarrow.parquet as pq

    from lab.paths import atomic_path

    out_dir = Path(out_dir)
    wanted: dict[str, dict[int, list[str]]] = {}
    for q in queries:
        if q.file and q.row >= 0:
            wanted.setdefault(q.file, {}).setdefault(q.row, []).append(q.qid)
    paths: dict[str, Path] = {}
    for file, rows in wanted.items():
        pf = pq.ParquetFile(file)
        if "image" not in pf.schema_arrow.names:
            continue
        start = 0
        for batch in pf.iter_batches(batch_size=256, columns=["image"]):
            col = batch.column(0)
            for r in [r for r in rows if start <= r < start + batch.num_rows]:
                value = col[r - start].as_py()
                data = value.get("bytes") if isinstance(value, dict) else value
                if not data:
                    raise DataFormatError(file, r, "empty image")
                digest = hashlib.sha256(data).hexdigest()
                path = out_dir / digest[:2] / f"{digest}{_suffix(data)}"
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(path) as tmp:
                        Path(tmp).write_bytes(data)
                for qid in rows[r]:
                    paths[qid] = path
            start += batch.num_rows
    return paths
