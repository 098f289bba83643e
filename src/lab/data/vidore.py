"""ViDoRe v1 / v2 / v3 (visual document retrieval) from Hugging Face parquet files into lab records.

NanoVDR reports NDCG@5 on ViDoRe v1 (10 sets), v2 (4) and v3 (8 public). The sets, their Hub ids and
where each name was read are in ``vidore.yaml`` beside this module. Two layouts exist:

* **QA** (v1): one row per (page, optional question): ``query`` (``None`` on pages without one),
  ``image``, ``image_filename``. As in vidore-benchmark's ``ViDoReEvaluatorQA``: ``None`` queries are
  skipped, a query text seen twice is one query (its relevant page is the *last* such row's, as that
  evaluator's dict comprehension leaves it), and pages are collapsed by ``image_filename`` (the first
  row's image is kept). The docid is the file name; the qid is the first row's index.
* **BEIR** (v2, v3): configs ``corpus`` / ``queries`` / ``qrels`` with ``corpus-id`` / ``query-id``
  (v2) or ``corpus_id`` / ``query_id`` (v3), ``query``, optional ``language``, and graded ``score``.

Relevance is **binarised** (score > 0 -> 1, the rest dropped), as NanoVDR's harness does for its
"binary qrels"; queries left without a relevant page are dropped (they would score 0 under trec_eval
but NanoVDR skips them). The raw scores stay in :attr:`VidoreDataset.graded`.

Files are found in this order: an explicit ``root`` folder holding ``<owner>/<name>/`` laid out like
the Hub repo; the data mirror's ``hf-datasets/<owner>/<name>/`` (``LAB_DATA_MIRROR``); the Hub through
``huggingface_hub.snapshot_download`` (only the needed parquet files; ``LAB_OFFLINE=1`` restricts it to
the local HF cache). No ``datasets`` dependency: pyarrow reads the parquet files, batch by batch, so
page images are written to disk (content-addressed) without holding a set in memory. Bad data raises
:class:`~lab.data.formats.DataFormatError` naming the file and the row.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import yaml

from lab.data.formats import DataFormatError, pick_column
from lab.data.pages import Page
from lab.data.sources import HF_MIRROR_SUBDIR, hub_dataset_folder
from lab.paths import atomic_path
from lab.records import Qrels, Query

__all__ = ["VidoreSet", "VidoreDataset", "registry", "vidore_set", "load_vidore", "dataset_folder",
           "binarise", "MIRROR_SUBDIR"]

MIRROR_SUBDIR = HF_MIRROR_SUBDIR       # <mirror>/hf-datasets/<owner>/<name>/<config>/<split>-*.parquet
TEXT_COLUMNS = ("text_description", "markdown", "text")   # page text, when the set ships one (OCR)
_IMAGE_EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp"}


@dataclass(frozen=True)
class VidoreSet:
    key: str                            # "<version>/<name>", e.g. "v1/docvqa"
    repo: str                           # Hugging Face dataset id
    format: Literal["qa", "beir"]
    split: str = "test"
    revision: str | None = None         # None = the repo's main

    @property
    def version(self) -> str:
        return self.key.split("/", 1)[0]

    def configs(self) -> tuple[str, ...]:
        """Top-level folders holding the parquet files (the Hub's config layout)."""
        return ("data",) if self.format == "qa" else ("corpus", "queries", "qrels")


@dataclass
class VidoreDataset:
    set: VidoreSet
    pages: list[Page]                         # deduplicated, file order; image = the page file on disk
    queries: list[Query]                      # queries with >= 1 relevant page, file order
    qrels: Qrels                              # binary (1 = relevant); only relevant pairs
    graded: dict[str, dict[str, float]]       # the files' scores before binarisation (QA: all 1)
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> rows / queries left out


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, VidoreSet]:
    """Every registered set, ``key -> VidoreSet`` (read once from the packaged ``vidore.yaml``)."""
    text = importlib.resources.files("lab.data").joinpath("vidore.yaml").read_text(encoding="utf-8")
    sets = yaml.safe_load(text)["sets"]
    return {k: VidoreSet(k, v["repo"], v["format"], v.get("split", "test"), v.get("revision")) for k, v in sets.items()}


def vidore_set(key: str) -> VidoreSet:
    try:
        return registry()[key]
    except KeyError:
        raise KeyError(f"unknown ViDoRe set {key!r}; registered: {sorted(registry())}") from None


def binarise(graded: Mapping[str, Mapping[str, float]]) -> Qrels:
    """Score > 0 -> relevant (1); other pairs and queries left with no relevant page are dropped."""
    out = {q: {d: 1 for d, s in docs.items() if s > 0} for q, docs in graded.items()}
    return Qrels({q: docs for q, docs in out.items() if docs})


# ------------------------------------------------------------------------------------------ locating

def _patterns(spec: VidoreSet) -> list[str]:
    return [f"{c}/{spec.split}-*.parquet" for c in spec.configs()]


def _has_files(folder: Path, spec: VidoreSet) -> bool:
    return all(any((folder / c).glob(f"{spec.split}-*.parquet")) for c in spec.configs())


def dataset_folder(spec: VidoreSet, root: str | Path | None = None) -> Path:
    """A local folder laid out like the Hub repo of ``spec`` (see the module docstring for the order)."""
    return hub_dataset_folder(spec.repo, patterns=_patterns(spec), has_files=lambda f: _has_files(f, spec),
                              what=f"ViDoRe set {spec.key}", root=root, revisions=(spec.revision,))


def _files(folder: Path, config: str, split: str) -> list[Path]:
    files = sorted((folder / config).glob(f"{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder / config}: no {split}-*.parquet")
    return files


# ------------------------------------------------------------------------------------------- reading

def _rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(0-based row, {column: value})`` for ``columns``, read in batches (images stay bytes)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:          # not parquet, truncated footer
        raise DataFormatError(path, None, f"not a readable parquet file: {e}") from None
    row = 0
    for batch in pf.iter_batches(batch_size=64, columns=list(columns)):
        for rec in batch.to_pylist():
            yield row, rec
            row += 1


def _schema(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as e:
        raise DataFormatError(path, None, f"not a readable parquet file: {e}") from None


def _image_file(value: Any, folder: Path, path: Path, row: int) -> Path:
    """Write one image cell (a ``{bytes, path}`` struct, as ``datasets`` stores images, or raw bytes)
    as ``<sha256[:32]>.<ext>`` under ``folder``; refuses cells that are not a decodable image."""
    from PIL import Image, UnidentifiedImageError

    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise DataFormatError(path, None, f"row {row}: column 'image' holds no embedded image bytes "
                                          f"(got {type(data).__name__})")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataFormatError(path, None, f"row {row}: column 'image' is not a readable image: {e}") from None
    out = folder / f"{hashlib.sha256(data).hexdigest()[:32]}{_IMAGE_EXT.get(fmt, '.img')}"
    if not out.is_file():
        with atomic_path(out) as tmp:
            tmp.write_bytes(bytes(data))
    return out


def _text(value: Any, path: Path, row: int, column: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(path, None, f"row {row}: column {column!r} is {type(value).__name__}, not text")
    return value


def _read_qa(files: Sequence[Path], pages_dir: Path) -> tuple[list[Page], list[Query], dict, dict]:
    pages: dict[str, Page] = {}
    qid_of: dict[str, str] = {}                 # query text -> qid (first row)
    graded: dict[str, dict[str, float]] = {}
    skipped = {"no_query": 0, "duplicate_query": 0}
    offset = 0
    for path in files:
        names = _schema(path)
        qcol, fcol = pick_column(path, names, ["query"]), pick_column(path, names, ["image_filename"])
        icol, tcol = pick_column(path, names, ["image"]), pick_column(path, names, TEXT_COLUMNS, required=False)
        last = -1
        for row, rec in _rows(path, [c for c in (qcol, fcol, icol, tcol) if c]):
            last = row
            fname = rec[fcol]
            if not isinstance(fname, str) or not fname:
                raise DataFormatError(path, None, f"row {row}: empty or missing 'image_filename' ({fname!r})")
            if fname not in pages:
                text = _text(rec.get(tcol), path, row, tcol) if tcol else ""
                pages[fname] = Page(fname, text, _image_file(rec[icol], pages_dir, path, row))
            query = rec[qcol]
            if query is None:
                skipped["no_query"] += 1
                continue
            if not isinstance(query, str) or not query.strip():
                raise DataFormatError(path, None, f"row {row}: 'query' must be text or None, got {query!r}")
            if query in qid_of:
                skipped["duplicate_query"] += 1
            qid = qid_of.setdefault(query, str(offset + row))
            graded[qid] = {fname: 1.0}          # the last row with this text decides (vidore-benchmark)
        offset += last + 1
    queries = [Query(q, t) for t, q in qid_of.items()]
    return list(pages.values()), queries, graded, skipped


def _read_beir(folder: Path, spec: VidoreSet, pages_dir: Path, languages: Sequence[str]):
    pages: dict[str, Page] = {}
    for path in _files(folder, "corpus", spec.split):
        names = _schema(path)
        idc, icol = pick_column(path, names, ["corpus-id", "corpus_id"]), pick_column(path, names, ["image"])
        tcol = pick_column(path, names, TEXT_COLUMNS, required=False)
        for row, rec in _rows(path, [c for c in (idc, icol, tcol) if c]):
            if rec[idc] is None:
                raise DataFormatError(path, None, f"row {row}: missing {idc}")
            docid = str(rec[idc])
            if docid in pages:
                raise DataFormatError(path, None, f"row {row}: duplicate {idc} {docid!r}")
            text = _text(rec.get(tcol), path, row, tcol) if tcol else ""
            pages[docid] = Page(docid, text, _image_file(rec[icol], pages_dir, path, row))
    wanted = {lang.lower() for lang in languages}
    queries: dict[str, Query] = {}
    left_out: set[str] = set()
    for path in _files(folder, "queries", spec.split):
        names = _schema(path)
        idc, qcol = pick_column(path, names, ["query-id", "query_id"]), pick_column(path, names, ["query"])
        lcol = pick_column(path, names, ["language"], required=False)
        for row, rec in _rows(path, [c for c in (idc, qcol, lcol) if c]):
            if rec[idc] is None:
                raise DataFormatError(path, None, f"row {row}: missing {idc}")
            qid, text = str(rec[idc]), rec[qcol]
            if qid in queries or qid in left_out:
                raise DataFormatError(path, None, f"row {row}: duplicate {idc} {qid!r}")
            if wanted and lcol and str(rec[lcol]).lower() not in wanted:
                left_out.add(qid)
                continue
            if not isinstance(text, str) or not text.strip():
                raise DataFormatError(path, None, f"row {row}: 'query' must be non-empty text, got {text!r}")
            queries[qid] = Query(qid, text)
    graded: dict[str, dict[str, float]] = {}
    for path in _files(folder, "qrels", spec.split):
        names = _schema(path)
        qc = pick_column(path, names, ["query-id", "query_id"])
        dc = pick_column(path, names, ["corpus-id", "corpus_id"])
        sc = pick_column(path, names, ["score"])
        for row, rec in _rows(path, [qc, dc, sc]):
            qid, docid, score = str(rec[qc]), str(rec[dc]), rec[sc]
            if qid in left_out:
                continue
            if qid not in queries:
                raise DataFormatError(path, None, f"row {row}: {qc} {qid!r} is not in the queries")
            if docid not in pages:
                raise DataFormatError(path, None, f"row {row}: {dc} {docid!r} is not in the corpus")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
                raise DataFormatError(path, None, f"row {row}: score {score!r} is not a number")
            graded.setdefault(qid, {})[docid] = float(score)
    skipped = {"language": len(left_out)}
    return list(pages.values()), list(queries.values()), graded, skipped


def load_vidore(key: str | VidoreSet, pages_dir: str | Path, *, root: str | Path | None = None,
                languages: Sequence[str] = ()) -> VidoreDataset:
    """One ViDoRe set: pages (images written under ``pages_dir``), queries, binary qrels.

    ``key`` is a registry key (``"v1/docvqa"``) or a :class:`VidoreSet`; ``root`` a local folder
    holding ``<owner>/<name>/`` (else mirror, then Hub); ``languages`` keeps only queries whose
    ``language`` column is one of them (sets without that column keep every query).
    """
    spec = key if isinstance(key, VidoreSet) else vidore_set(key)
    folder = dataset_folder(spec, root)
    pages_dir = Path(pages_dir)
    pages_dir.mkdir(parents=True, exist_ok=True)
    if spec.format == "qa":
        pages, queries, graded, skipped = _read_qa(_files(folder, "data", spec.split), pages_dir)
    elif spec.format == "beir":
        pages, queries, graded, skipped = _read_beir(folder, spec, pages_dir, languages)
    else:
        raise ValueError(f"{spec.key}: format must be 'qa' or 'beir', not {spec.format!r}")
    qrels = binarise(graded)
    kept = [q for q in queries if q.qid in qrels]
    skipped["no_relevant"] = len(queries) - len(kept)
    if not kept:
        raise DataFormatError(folder, None, f"{spec.key}: no query with a relevant page")
    return VidoreDataset(spec, pages, kept, qrels, graded, skipped)
