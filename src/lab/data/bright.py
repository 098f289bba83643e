"""BRIGHT (Su et al., 2024; Hugging Face ``xlangai/BRIGHT``): the 12 reasoning-intensive retrieval tasks as records.

Hub layout (dataset card; repo tree read 2026-12): configs ``examples``, ``documents`` (the short-document split,
what LaSER and BRIGHT's main table use) and ``long_documents``, one parquet file per task:
``<config>/<task>-00000-of-00001.parquet`` on main, ``<config>/<task>/0000.parquet`` on the parquet-converter branch.
``examples`` rows: ``id``, ``query``, ``reasoning``, ``gold_ids`` (short-document ids), ``gold_ids_long``,
``excluded_ids``; ``documents`` rows: ``id``, ``content``.

**Excluded ids.** BRIGHT's official evaluation (xlang-ai/BRIGHT ``run.py`` / ``retrievers.py``) drops each query's
``excluded_ids`` (``"N/A"`` entries aside) from its ranking *before* the top-k is taken, and asserts that none is a
gold id; it matters for leetcode, aops and the theoremqa tasks (the query's own source problem is in the corpus).
mteb 1.x's ``BrightRetrieval``, which the LaSER code evaluates with, loads the same documents and gold ids but
ignores ``excluded_ids``. :class:`BrightTask` always reads them; ``exclusion="mteb-1.x-compat"`` makes
:meth:`BrightTask.excluded_for` empty, and :func:`drop_excluded` applies them to a run. Qrels are ``gold_ids`` at
relevance 1 (as both evaluations). Query ids are unique within a task only (``0`` is in every StackExchange task).

Files are found by :func:`lab.data.sources.hub_dataset_folder`: ``root``, the mirror's ``hf-datasets/xlangai/BRIGHT/``
(laid out like the repo), the Hub (main, then ``refs/convert/parquet``). pyarrow reads them; bad data raises
:class:`~lab.data.formats.DataFormatError` naming the file, the row and the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from lab.data.formats import DataFormatError, pick_column
from lab.data.sources import hub_dataset_folder
from lab.records import Qrels, Query, Ranking, Run

__all__ = ["REPO", "TASKS", "EXCLUSION", "BrightTask", "bright_folder", "task_files", "load_bright_task",
           "load_bright", "drop_excluded"]

REPO = "xlangai/BRIGHT"
TASKS = ("biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow", "sustainable_living",
         "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems")
EXCLUSION = ("official", "mteb-1.x-compat")
PARQUET_BRANCH = "refs/convert/parquet"
_NA = "N/A"          # BRIGHT's placeholder in excluded_ids of tasks without exclusions


@dataclass
class BrightTask:
    task: str
    queries: list[Query]                       # examples order
    docids: list[str]                          # documents order
    texts: list[str]
    qrels: Qrels                               # gold_ids, relevance 1
    excluded: dict[str, frozenset[str]]        # qid -> excluded_ids as read ("N/A" dropped), whatever the mode
    reasoning: dict[str, str] = field(default_factory=dict)   # qid -> the examples' gold reasoning
    exclusion: Literal["official", "mteb-1.x-compat"] = "official"

    def excluded_for(self, qid: str) -> frozenset[str]:
        """What the ranking of ``qid`` must not hold: its excluded ids (official), nothing (mteb-1.x-compat)."""
        return frozenset() if self.exclusion == "mteb-1.x-compat" else self.excluded.get(qid, frozenset())

    def with_exclusion(self, exclusion: str) -> "BrightTask":
        if exclusion not in EXCLUSION:
            raise ValueError(f"BRIGHT exclusion {exclusion!r}: expected one of {list(EXCLUSION)}")
        return BrightTask(self.task, self.queries, self.docids, self.texts, self.qrels, self.excluded,
                          self.reasoning, exclusion)  # type: ignore[arg-type]

    @property
    def n_excluded(self) -> int:
        return sum(len(v) for v in self.excluded.values())


def _task_globs(config: str, task: str) -> list[str]:
    return [f"{config}/{task}-*.parquet", f"{config}/{task}/*.parquet"]


def task_files(folder: str | Path, config: str, task: str) -> list[Path]:
    """The parquet files of ``config`` / ``task`` under a folder laid out like the Hub repo (either layout)."""
    folder = Path(folder)
    for pattern in _task_globs(config, task):
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if files:
            return files
    return []


def bright_folder(tasks: Sequence[str] = TASKS, *, root: str | Path | None = None, repo: str = REPO,
                  revision: str | None = None) -> Path:
    """A local folder holding ``examples`` and ``documents`` of every task in ``tasks``."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown BRIGHT tasks {unknown}; the 12 are {list(TASKS)}")
    patterns = [g for t in tasks for c in ("examples", "documents") for g in _task_globs(c, t)]
    return hub_dataset_folder(repo, patterns=patterns, what=f"BRIGHT ({', '.join(tasks)})", root=root,
                              has_files=lambda f: all(task_files(f, c, t) for t in tasks
                                                      for c in ("examples", "documents")),
                              revisions=[revision] if revision is not None else [None, PARQUET_BRANCH])


def _rows(path: Path, wanted: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:              # not parquet, truncated footer
        raise DataFormatError(path, None, f"not a readable parquet file: {e}") from None
    names = pf.schema_arrow.names
    cols = [pick_column(path, names, [w]) for w in wanted]
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=cols):
        for rec in batch.to_pylist():
            yield row, rec
            row += 1


def _ids(value: Any, path: Path, row: int, column: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(path, None, f"row {row}: column {column!r} must be a list of document ids, got {value!r}")
    return list(value)


def load_bright_task(folder: str | Path, task: str, *, exclusion: str = "official", max_queries: int = 0,
                     max_docs: int = 0) -> BrightTask:
    """One task's queries, documents, gold qrels and excluded ids from a Hub-layout folder.

    ``max_docs`` > 0 keeps the first N documents plus every gold document (dry runs); ``max_queries`` the first N
    examples. A gold or excluded id that is not a document, or an excluded id that is also gold, raises."""
    if exclusion not in EXCLUSION:
        raise ValueError(f"BRIGHT exclusion {exclusion!r}: expected one of {list(EXCLUSION)}")
    folder = Path(folder)
    ex_files, doc_files = task_files(folder, "examples", task), task_files(folder, "documents", task)
    if not ex_files or not doc_files:
        raise FileNotFoundError(f"{folder}: no {_task_globs('examples' if not ex_files else 'documents', task)}")
    queries, qrels, excluded, reasoning = [], {}, {}, {}
    for path in ex_files:
        for row, rec in _rows(path, ["id", "query", "gold_ids", "excluded_ids", "reasoning"]):
            qid, text = rec["id"], rec["query"]
            if not isinstance(qid, (str, int)) or str(qid) == "":
                raise DataFormatError(path, None, f"row {row}: column 'id' is {qid!r}")
            qid = str(qid)
            if qid in qrels:
                raise DataFormatError(path, None, f"row {row}: duplicate id {qid!r}")
            if not isinstance(text, str) or not text.strip():
                raise DataFormatError(path, None, f"row {row}: column 'query' must be non-empty text, got {text!r}")
            gold = _ids(rec["gold_ids"], path, row, "gold_ids")
            if not gold:
                raise DataFormatError(path, None, f"row {row}: column 'gold_ids' is empty (query {qid!r})")
            excl = {d for d in _ids(rec["excluded_ids"], path, row, "excluded_ids") if d != _NA}
            both = excl & set(gold)
            if both:
                raise DataFormatError(path, None, f"row {row}: excluded_ids {sorted(both)} are also gold_ids")
            queries.append(Query(qid, text))
            qrels[qid] = {d: 1 for d in gold}
            excluded[qid] = frozenset(excl)
            reasoning[qid] = rec["reasoning"] if isinstance(rec["reasoning"], str) else ""
            if max_queries and len(queries) >= max_queries:
                break
        if max_queries and len(queries) >= max_queries:
            break
    needed = {d for docs in qrels.values() for d in docs}
    docids, texts, seen = [], [], set()
    for path in doc_files:
        for row, rec in _rows(path, ["id", "content"]):
            did, content = rec["id"], rec["content"]
            if not isinstance(did, str) or not did:
                raise DataFormatError(path, None, f"row {row}: column 'id' is {did!r}")
            if did in seen:
                raise DataFormatError(path, None, f"row {row}: duplicate document id {did!r}")
            if not isinstance(content, str):
                raise DataFormatError(path, None, f"row {row}: column 'content' is {type(content).__name__}, not text")
            seen.add(did)
            if max_docs and len(docids) >= max_docs and did not in needed:
                continue
            docids.append(did)
            texts.append(content)
    known = set(docids)
    for qid in qrels:
        lost = [d for d in qrels[qid] if d not in known]
        if lost:
            raise DataFormatError(doc_files[0], None,
                                  f"{task}: gold ids of query {qid!r} are not documents: {lost[:3]}")
        if not max_docs:
            absent = sorted(excluded[qid] - known)
            if absent:
                raise DataFormatError(doc_files[0], None,
                                      f"{task}: excluded ids of query {qid!r} are not documents: {absent[:3]}")
    return BrightTask(task, queries, docids, texts, Qrels(qrels), excluded, reasoning,
                      exclusion)  # type: ignore[arg-type]


def load_bright(tasks: Sequence[str] = TASKS, *, root: str | Path | None = None, exclusion: str = "official",
                max_queries: int = 0, max_docs: int = 0, revision: str | None = None) -> dict[str, BrightTask]:
    """Every task of ``tasks`` (default the 12), ``task -> BrightTask``."""
    folder = bright_folder(tasks, root=root, revision=revision)
    return {t: load_bright_task(folder, t, exclusion=exclusion, max_queries=max_queries, max_docs=max_docs)
            for t in tasks}


def drop_excluded(run: Run, task: BrightTask, depth: int | None = None) -> Run:
    """``run`` without each query's :meth:`BrightTask.excluded_for` documents (ranks renumbered from 1), cut to
    ``depth``. Rank the corpus to ``depth + max excluded`` first so that ``depth`` documents remain (official)."""
    out = Run(run.name)
    for ranking in run:
        drop = task.excluded_for(ranking.query.qid)
        kept = [c for c in ranking.candidates if c.docid not in drop][:depth]
        out.add(Ranking(ranking.query, [replace(c, rank=r + 1) for r, c in enumerate(kept)]))
    return out
