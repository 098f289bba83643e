"""BEIR-format datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

From a local folder (the layout BEIR's zips unpack to; ``.jsonl.gz`` accepted too) or from the
Hugging Face Hub, where BEIR keeps corpus + queries in ``BeIR/<name>`` and the qrels in
``BeIR/<name>-qrels``. The Hub is reached through ``huggingface_hub.hf_hub_download`` only (imported
lazily, so this module loads without it; no ``datasets`` dependency, whose loader scripts for BeIR no
longer run under recent ``datasets``). Which file names the Hub repos hold was not checked online
from here: the loader tries ``corpus.jsonl.gz`` then ``corpus.jsonl`` (same for queries) and
``<split>.tsv`` then ``qrels/<split>.tsv``, and names every file it tried when none is there.

Queries are kept only if judged in ``split`` (as BEIR's ``GenericDataLoader`` does), in file order.
Files are read as bytes split at ``\\n`` so that no Unicode line separator inside a text splits a record.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lab.data.formats import DataFormatError
from lab.records import Qrels, Query

__all__ = ["BeirDataset", "BeirFiles", "beir_files", "beir_text", "iter_beir_corpus", "load_beir", "read_beir_corpus",
           "read_beir_queries", "read_beir_qrels", "read_beir_texts", "judged_queries"]


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, tuple[str, str]]   # docid -> (title, text)
    queries: list[Query]                 # judged in the split, file order
    qrels: Qrels


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:           # binary iteration splits at b"\n" only
        for no, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield no, raw


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for no, raw in _records(path):
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(path, no, f"not valid JSON: {e}", raw.decode("utf-8", "replace")) from None
        if not isinstance(obj, dict) or "_id" not in obj:
            raise DataFormatError(path, no, "expected an object with '_id'", raw.decode("utf-8", "replace"))
        yield no, obj


def beir_text(title: str, text: str) -> str:
    """One passage string as the official FIRST code builds it (convert_results.py): ``title + ". " + text``,
    or the text alone when the title is empty."""
    return f"{title}. {text}" if title else text


def iter_beir_corpus(path: str | os.PathLike) -> Iterator[tuple[str, str, str]]:
    """``(docid, title, text)`` in file order, one record at a time (5-9M-document corpora never sit in memory)."""
    for no, obj in _jsonl(Path(path)):
        text = obj.get("text")
        if not isinstance(text, str):
            raise DataFormatError(path, no, "document has no 'text' string")
        yield str(obj["_id"]), obj.get("title") or "", text


def read_beir_corpus(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    return {docid: (title, text) for docid, title, text in iter_beir_corpus(path)}


def read_beir_texts(path: str | os.PathLike, docids: Iterable[str]) -> dict[str, str]:
    """:func:`beir_text` of only ``docids`` (e.g. a run's top 100 per query), streaming the corpus once."""
    wanted = set(docids)
    out = {d: beir_text(title, text) for d, title, text in iter_beir_corpus(path) if d in wanted}
    missing = wanted - set(out)
    if missing:
        raise DataFormatError(path, None, f"{len(missing)} docids are not in the corpus: {sorted(missing)[:5]}")
    return out


def read_beir_queries(path: str | os.PathLike) -> list[Query]:
    out = []
    for no, obj in _jsonl(Path(path)):
        if not isinstance(obj.get("text"), str):
            raise DataFormatError(path, no, "query has no 'text' string")
        out.append(Query(str(obj["_id"]), obj["text"]))
    return out


def read_beir_qrels(path: str | os.PathLike) -> Qrels:
    """``query-id<TAB>corpus-id<TAB>score`` with a header line (skipped when its score is not an integer)."""
    path = Path(path)
    judgements: dict[str, dict[str, int]] = {}
    for no, raw in _records(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataFormatError(path, no, f"not valid UTF-8: {e.reason}", repr(raw)) from None
        cols = line.split("\t")
        if len(cols) != 3 or not cols[0] or not cols[1]:
            raise DataFormatError(path, no, f"expected 'query-id<TAB>corpus-id<TAB>score', got {len(cols)} columns", line)
        try:
            grade = int(cols[2])
        except ValueError:
            if no == 1:              # the header: query-id corpus-id score
                continue
            raise DataFormatError(path, no, f"score {cols[2]!r} is not an integer", line) from None
        judgements.setdefault(cols[0], {})[cols[1]] = grade
    return Qrels(judgements)


def _find(folder: Path, *names: str) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise FileNotFoundError(f"{folder}: none of {list(names)} (not a BEIR-format folder?)")


def _hf_download(repo_id: str, filename: str, revision: str | None) -> str:
    """``hf_hub_download`` for a dataset repo (the seam tests replace)."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", revision=revision)


def _not_found_errors() -> tuple[type[BaseException], ...]:
    try:
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        return (FileNotFoundError,)
    return (FileNotFoundError, EntryNotFoundError)


def _hub_file(repo_id: str, names: list[str], revision: str | None, download: Callable) -> Path:
    missing = _not_found_errors()
    for n in names:
        try:
            return Path(download(repo_id, n, revision))
        except missing:
            continue
    raise FileNotFoundError(f"Hugging Face dataset {repo_id}: none of {names} found (revision {revision or 'main'})")


def hub_ids(name: str) -> tuple[str, str]:
    """``scifact``, ``BeIR/scifact`` or ``hf:BeIR/scifact`` -> (corpus repo, qrels repo)."""
    name = name.removeprefix("hf:")
    repo = name if "/" in name else f"BeIR/{name}"
    return repo, f"{repo}-qrels"


@dataclass(frozen=True)
class BeirFiles:
    name: str
    corpus: Path
    queries: Path
    qrels: Path


def beir_files(folder_or_hf_id: str | os.PathLike, split: str = "test", *, revision: str | None = None,
               qrels_revision: str | None = None) -> BeirFiles:
    """Where one BEIR set's corpus, queries and ``split`` qrels are: a local folder, else the Hub (:func:`hub_ids`).

    ``revision`` / ``qrels_revision`` pin the two Hub repos (commit ids make runs reproducible).
    """
    local = Path(folder_or_hf_id)
    if local.is_dir():
        return BeirFiles(local.name, _find(local, "corpus.jsonl", "corpus.jsonl.gz"),
                         _find(local, "queries.jsonl", "queries.jsonl.gz"),
                         _find(local / "qrels", f"{split}.tsv", f"{split}.tsv.gz"))
    repo, qrels_repo = hub_ids(str(folder_or_hf_id))
    return BeirFiles(repo.rsplit("/", 1)[1],
                     _hub_file(repo, ["corpus.jsonl.gz", "corpus.jsonl"], revision, _hf_download),
                     _hub_file(repo, ["queries.jsonl.gz", "queries.jsonl"], revision, _hf_download),
                     _hub_file(qrels_repo, [f"{split}.tsv", f"qrels/{split}.tsv"], qrels_revision, _hf_download))


def judged_queries(files: BeirFiles) -> tuple[list[Query], Qrels]:
    """Queries judged in the qrels (file order) and the qrels; every judged qid must have a query."""
    qrels = read_beir_qrels(files.qrels)
    queries = [q for q in read_beir_queries(files.queries) if q.qid in qrels]
    unknown = set(qrels.qids) - {q.qid for q in queries}
    if unknown:
        raise DataFormatError(files.qrels, None, f"{len(unknown)} judged qids have no query in {files.queries}: "
                                                 f"{sorted(unknown)[:5]}")
    return queries, qrels


def load_beir(
    folder_or_hf_id: str | os.PathLike,
    split: str = "test",
    *,
    revision: str | None = None,
    qrels_revision: str | None = None,
) -> BeirDataset:
    """Corpus, judged queries and qrels of one BEIR set, from a local folder or the Hub (:func:`beir_files`).

    Holds the whole corpus: for 5-9M-document sets use :func:`beir_files` with :func:`iter_beir_corpus` or
    :func:`read_beir_texts` instead.
    """
    files = beir_files(folder_or_hf_id, split, revision=revision, qrels_revision=qrels_revision)
    queries, qrels = judged_queries(files)
    return BeirDataset(files.name, read_beir_corpus(files.corpus), queries, qrels)
