"""LaSER's training data (Hugging Face dataset ``jinjiajie/LaSER-Training``) as typed rows.

What the official code reads (ignorejjj/LaSER ``src/tevatron/retriever/dataset.py``, ``TrainDatasetWithRewrite``;
README "Prepare training data"): one row per query with ``query`` (text), ``reasoning_query`` (the explicit
reasoning r_q, text; shorter than 5 characters -> the query replaces it, applied by the method), ``prompt`` (the
row's task instruction, formatted into ``"Instruct: {instruct}\\nQuery: {query}"``), ``positive_passages`` and
``negative_passages`` (lists of passage *strings*: the code prefixes them with ``passage_prefix`` directly). The
code picks positive ``(hash(row + seed) + epoch) % len`` (Python's ``hash`` of an int is the int) and the first
``train_group_size - 1`` negatives (1 in the paper's script, ``train_group_size 2``). The README says the data is a
``datasets.save_to_disk`` folder; the training script reads ``./data/bge_reasoning`` after downloading the repo
into ``./data``, so the repo is assumed to hold ``bge_reasoning/`` (``laser.train.hub_subset``).

Read without ``datasets``: ``save_to_disk`` folders (``data-NNNNN-of-NNNNN.arrow``, Arrow IPC streams), parquet
(``push_to_hub`` / the Hub's parquet-converter branch ``refs/convert/parquet``) or JSON lines, batch by batch with
pyarrow. Rows whose passages are tevatron-style ``{"title", "text"}`` dicts are accepted (``title + " " + text``).
Bad data raises :class:`~lab.data.formats.DataFormatError` naming the file, the row and the field. Files are found by
:func:`lab.data.sources.hub_dataset_folder`: ``root``, the mirror's ``hf-datasets/jinjiajie/LaSER-Training/``, the Hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from lab.data.formats import DataFormatError
from lab.data.sources import hub_dataset_folder

__all__ = ["REPO", "FIELDS", "TrainingRow", "training_files", "read_training_rows", "hub_training_files"]

REPO = "jinjiajie/LaSER-Training"
FIELDS = ("query", "reasoning_query", "prompt", "positive_passages", "negative_passages")
PARQUET_BRANCH = "refs/convert/parquet"
_KINDS = (("arrow", "*.arrow"), ("parquet", "*.parquet"), ("jsonl", "*.jsonl"))


@dataclass(frozen=True)
class TrainingRow:
    query: str
    reasoning: str                     # reasoning_query as stored (the short-reasoning rule is the method's)
    prompt: str                        # the row's instruction ("" = the prompt file's default task)
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    file: str = ""
    row: int = -1


def training_files(folder: str | Path, subset: str = "") -> list[Path]:
    """The data files under ``folder`` (``folder/subset`` when given): arrow (``save_to_disk``), else parquet, else
    JSON lines; the first kind found wins, sorted by path (``data-00000-of-00002`` before ``-00001-``)."""
    base = Path(folder) / subset if subset else Path(folder)
    for _, pattern in _KINDS:
        files = sorted(p for p in base.rglob(pattern) if p.is_file() and "cache-" not in p.name)
        if files:
            return files
    return []


def hub_training_files(subset: str = "", *, root: str | Path | None = None, repo: str = REPO,
                       revision: str | None = None) -> list[Path]:
    """The files of ``repo`` (``subset`` folder) from ``root``, the mirror, else the Hub (main, then the parquet
    branch, whose layout is ``<config>/train/NNNN.parquet``)."""
    sub = f"{subset}/" if subset else ""
    patterns = [f"{sub}**/*.arrow", f"{sub}*.arrow", f"{sub}**/*.json", f"{sub}*.json", f"{sub}**/*.parquet",
                f"{sub}*.parquet", f"{sub}**/*.jsonl", f"{sub}*.jsonl"]
    folder = hub_dataset_folder(repo, patterns=patterns, has_files=lambda f: bool(training_files(f, subset)),
                                what=f"LaSER training data {repo}{' / ' + subset if subset else ''}", root=root,
                                revisions=[revision] if revision is not None else [None, PARQUET_BRANCH])
    return training_files(folder, subset)


def _arrow_batches(path: Path):
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))       # what datasets' ArrowWriter writes
    except pa.ArrowInvalid:
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
        except pa.ArrowInvalid as e:
            raise DataFormatError(path, None, f"not a readable Arrow file: {e}") from None
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
        return
    yield from reader


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of one file as dicts of the five fields (missing columns raise, naming the file and the field)."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for no, line in enumerate(f):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataFormatError(path, no + 1, f"not valid JSON: {e}") from None
        return
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:             # not parquet, truncated footer
            raise DataFormatError(path, None, f"not a readable parquet file: {e}") from None
        _check_fields(path, pf.schema_arrow.names)
        batches = pf.iter_batches(batch_size=256, columns=list(FIELDS))
    else:
        batches = _arrow_batches(path)
    for batch in batches:
        _check_fields(path, batch.schema.names)
        yield from batch.select(list(FIELDS)).to_pylist()


def _check_fields(path: Path, names: Sequence[str]) -> None:
    missing = [c for c in FIELDS if c not in names]
    if missing:
        raise DataFormatError(path, None, f"no field {missing[0]!r} (fields: {sorted(names)}; LaSER-Training rows "
                                          f"need {list(FIELDS)})")


def _text(value: Any, path: Path, row: int, name: str, *, allow_none: bool = False) -> str:
    if value is None and allow_none:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(path, None, f"row {row}: field {name!r} is {type(value).__name__}, not text")
    return value


def _passages(value: Any, path: Path, row: int, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise DataFormatError(path, None,
                              f"row {row}: field {name!r} is {type(value).__name__}, not a list of passages")
    out = []
    for i, p in enumerate(value):
        if isinstance(p, dict) and isinstance(p.get("text"), str):     # tevatron's {"docid", "title", "text"}
            p = f"{p.get('title') or ''} {p['text']}".strip()
        if not isinstance(p, str):
            raise DataFormatError(path, None, f"row {row}: field {name!r}[{i}] is {type(p).__name__}, not text")
        out.append(p)
    return tuple(out)


def read_training_rows(files: Sequence[str | Path], *, max_rows: int = 0) -> list[TrainingRow]:
    """Every row of ``files`` in order (``max_rows`` > 0: the first N). A row needs a non-empty query and at least
    one positive passage; negatives may be empty (the method decides what to do with such rows)."""
    out: list[TrainingRow] = []
    if not files:
        raise DataFormatError("LaSER-Training", None, "no data files given")
    for f in files:
        path = Path(f)
        for row, rec in enumerate(_records(path)):
            if max_rows and len(out) >= max_rows:
                return out
            if not isinstance(rec, dict):
                raise DataFormatError(path, None, f"row {row}: expected an object with {list(FIELDS)}, "
                                                  f"got {type(rec).__name__}")
            missing = [c for c in FIELDS if c not in rec]
            if missing:
                raise DataFormatError(path, None, f"row {row}: no field {missing[0]!r}")
            query = _text(rec["query"], path, row, "query").strip()
            if not query:
                raise DataFormatError(path, None, f"row {row}: field 'query' is empty")
            pos = _passages(rec["positive_passages"], path, row, "positive_passages")
            if not pos:
                raise DataFormatError(path, None, f"row {row}: field 'positive_passages' is empty")
            out.append(TrainingRow(query, _text(rec["reasoning_query"], path, row, "reasoning_query", allow_none=True),
                                   _text(rec["prompt"], path, row, "prompt", allow_none=True).strip(), pos,
                                   _passages(rec["negative_passages"], path, row, "negative_passages"),
                                   str(path), row))
    return out
