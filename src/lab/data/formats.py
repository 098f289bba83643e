"""The one reader/writer for the TREC and JSONL files the project uses.

Every reader works on bytes split at ``\\n`` (one trailing ``\\r`` dropped) rather than on Python's
text-mode lines: text mode would also break at a lone ``\\r``, and ``str.splitlines`` at U+0085/U+2028,
both of which MS MARCO passages can hold. Text is otherwise kept exactly as in the file (leading and
trailing spaces of a query, and the MS MARCO mojibake such as ``â\\x80\\x99``, survive a round trip).

Qrels and TREC runs follow trec_eval's reading rules: a line whose first non-blank character is ``#``
is a comment (trec_eval 10 skips them in both files; a ``#`` later in a line is data, e.g. a docid
``CR#93E-1860``), and a run line's columns after the sixth are ignored, as trec_eval ignores
everything after ``run_id``.

A malformed line raises :class:`DataFormatError` naming the file, the 1-based line number and the
line, so a bad file is found from the message alone. Writers are atomic (:func:`lab.paths.atomic_path`)
and byte-stable: the same records always give the same bytes, which DVC relies on.

:func:`save_npy` is the atomic writer of the ``.npy`` matrices (embeddings, top-K positions) that stages
write beside those files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from lab.paths import atomic_path
from lab.records import Candidate, Qrels, Query, Ranking, Run

__all__ = [
    "DataFormatError", "read_topics", "write_topics", "read_qrels", "write_qrels", "read_trec_run",
    "write_trec_run", "read_rank_llm_json", "read_candidates_jsonl", "write_candidates_jsonl", "save_npy",
]


class DataFormatError(ValueError):
    """A line (or JSON entry) of a data file does not have the expected shape."""

    def __init__(self, path: str | os.PathLike, line_no: int | None, problem: str, line: str | None = None):
        where = f"{path}:{line_no}" if line_no is not None else f"{path}"
        msg = f"{where}: {problem}"
        if line is not None:
            shown = line if len(line) <= 200 else line[:200] + "..."
            msg += f"\n  line: {shown!r}"
        super().__init__(msg)
        self.path, self.line_no, self.line = str(path), line_no, line


def pick_column(path: str | os.PathLike, names: Iterable[str], wanted: Iterable[str],
                required: bool = True) -> str | None:
    """The first of ``wanted`` among a table's column ``names`` (Hub datasets spell ids ``query-id`` or
    ``query_id``); None if absent and not ``required``, else a DataFormatError naming the file."""
    names, wanted = list(names), list(wanted)
    for w in wanted:
        if w in names:
            return w
    if required:
        raise DataFormatError(path, None, f"no column {' / '.join(map(repr, wanted))} (columns: {names})")
    return None


def _lines(path: str | os.PathLike, comments: bool = False) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line)`` for every non-blank line, line ending (LF or CRLF) removed.

    ``comments``: also skip lines whose first non-blank character is ``#`` (trec_eval's comment lines)."""
    data = Path(path).read_bytes()
    for no, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataFormatError(path, no, f"not valid UTF-8 ({e.reason} at byte {e.start})", repr(raw)) from None
        stripped = line.strip()
        if stripped and not (comments and stripped.startswith("#")):   # blank lines carry nothing
            yield no, line


def _int(path, no, line, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(path, no, f"{what} {value!r} is not an integer", line) from None


def _float(path, no, line, value: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise DataFormatError(path, no, f"{what} {value!r} is not a number", line) from None
    if math.isnan(x):
        raise DataFormatError(path, no, f"{what} is NaN", line)
    return x


def _score_str(x: float) -> str:
    # repr() is the shortest string that reads back to the same double: exact and byte-stable.
    return repr(float(x))


# --------------------------------------------------------------------------------------------- topics

def read_topics(path: str | os.PathLike) -> list[Query]:
    """``qid<TAB>query`` lines (LF or CRLF) in file order. The query is everything after the first tab."""
    out: list[Query] = []
    seen: set[str] = set()
    for no, line in _lines(path):
        if "\t" not in line:
            raise DataFormatError(path, no, "expected 'qid<TAB>query'", line)
        qid, text = line.split("\t", 1)
        if not qid.strip() or qid != qid.strip():
            raise DataFormatError(path, no, "empty or space-padded qid", line)
        if qid in seen:
            raise DataFormatError(path, no, f"duplicate qid {qid!r}", line)
        seen.add(qid)
        out.append(Query(qid, text))
    return out


def write_topics(queries: Iterable[Query], path: str | os.PathLike) -> Path:
    """Write ``qid<TAB>query`` lines with LF endings (a query holding a tab or newline is refused)."""
    lines = []
    for q in queries:
        if any(c in q.text for c in "\n\r") or "\t" in q.qid:
            raise ValueError(f"query {q.qid!r}: a tab in the qid or a line break in the text cannot be written as TSV")
        lines.append(f"{q.qid}\t{q.text}\n")
    return _write(path, "".join(lines))


# ---------------------------------------------------------------------------------------------- qrels

def read_qrels(path: str | os.PathLike) -> Qrels:
    """``qid iter docid grade`` (whitespace-separated, 4 columns); ``#`` comment lines are skipped.

    The second column is ignored as trec_eval ignores it: ``Q0`` (DL19), ``0`` (DL20, BEIR) and
    TREC-COVID's round numbers all occur. A repeated (qid, docid) keeps the last grade.
    """
    judgements: dict[str, dict[str, int]] = {}
    for no, line in _lines(path, comments=True):
        cols = line.split()
        if len(cols) != 4:
            raise DataFormatError(path, no, f"expected 4 columns 'qid 0 docid grade', got {len(cols)}", line)
        qid, _, docid, grade = cols
        judgements.setdefault(qid, {})[docid] = _int(path, no, line, grade, "grade")
    return Qrels(judgements)


def write_qrels(qrels: Qrels, path: str | os.PathLike) -> Path:
    """``qid 0 docid grade`` in the qrels' own order."""
    text = "".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.judgements.items() for d, g in docs.items())
    return _write(path, text)


# ------------------------------------------------------------------------------------------ TREC runs

def read_trec_run(
    path: str | os.PathLike, name: str, topics: Mapping[str, str] | Iterable[Query] | None = None
) -> Run:
    """``qid Q0 docid rank score tag``: the first 6 columns, as trec_eval reads them (any further column is
    ignored, ``#`` comment lines are skipped). Candidates keep file order; text is ``None``.

    ``topics`` (``{qid: text}`` or queries) fills in query texts, which a TREC run does not hold.
    Note that trec_eval ignores the rank column (it sorts by score, then docid descending); the rank is
    kept on each :class:`Candidate` so the stored order can still be studied.
    """
    texts = _topic_texts(topics)
    run = Run(name)
    seen: dict[str, set[str]] = {}
    for no, line in _lines(path, comments=True):
        cols = line.split()
        if len(cols) < 6:
            raise DataFormatError(path, no, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(cols)}", line)
        qid, _, docid, rank, score, _tag = cols[:6]
        cand = Candidate(docid, _float(path, no, line, score, "score"), _int(path, no, line, rank, "rank"))
        if qid not in run:
            run.add(Ranking(Query(qid, texts.get(qid, ""))))
            seen[qid] = set()
        if docid in seen[qid]:
            raise DataFormatError(path, no, f"docid {docid!r} appears twice for query {qid!r}", line)
        seen[qid].add(docid)
        run[qid].candidates.append(cand)
    return run


def write_trec_run(run: Run, path: str | os.PathLike, tag: str | None = None) -> Path:
    """``qid Q0 docid rank score tag``; rank is the 1-based position in each ranking's list."""
    tag = tag or run.name
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag {tag!r} must be non-empty and hold no whitespace")
    lines = [
        f"{r.query.qid} Q0 {c.docid} {i} {_score_str(c.score)} {tag}\n"
        for r in run for i, c in enumerate(r.candidates, start=1)
    ]
    return _write(path, "".join(lines))


# --------------------------------------------------------------------------------- rank_llm JSON runs

def read_rank_llm_json(
    path: str | os.PathLike, name: str, topics: Mapping[str, str] | Iterable[Query] | None = None
) -> Run:
    """rank_llm's candidate file: ``[{"query": str, "hits": [{qid, docid, rank, score, content}]}]``.

    qids are cast to ``str`` (int in most files, str in RepLLaMA's). Hits keep file order, score and rank;
    ``content`` becomes :attr:`Candidate.text`. With ``topics``, every qid must be a topic and its text must
    equal the topic text (a join on the wrong year or a re-encoded file fails here, not in a metric).
    JSON has no useful line numbers, so errors name the entry (and hit) index, 1-based.
    """
    texts = _topic_texts(topics) if topics is not None else None
    try:
        data = json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"not valid JSON: {e.msg}") from None
    if not isinstance(data, list):
        raise DataFormatError(path, None, f"expected a JSON list of queries, got {type(data).__name__}")
    run = Run(name)
    for i, entry in enumerate(data, start=1):
        where = f"entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("query"), str) or not isinstance(entry.get("hits"), list):
            raise DataFormatError(path, None, f"{where}: expected {{'query': str, 'hits': list}}")
        qids = {str(h.get("qid", "")) for h in entry["hits"] if isinstance(h, dict)}
        if len(qids) != 1 or "" in qids:
            raise DataFormatError(path, None, f"{where}: hits must share one non-empty qid, got {sorted(qids)[:3]}")
        qid = qids.pop()
        if texts is not None:
            if qid not in texts:
                raise DataFormatError(path, None, f"{where}: qid {qid!r} is not in the topics")
            if texts[qid] != entry["query"]:
                raise DataFormatError(path, None, f"{where}: query text {entry['query']!r} differs from topic {texts[qid]!r}")
        if qid in run:
            raise DataFormatError(path, None, f"{where}: qid {qid!r} appears twice")
        ranking = Ranking(Query(qid, entry["query"]))
        seen: set[str] = set()
        for j, h in enumerate(entry["hits"], start=1):
            try:
                docid, text = str(h["docid"]), h["content"]
                score, rank = h["score"], h["rank"]
                if not isinstance(score, (int, float)) or isinstance(score, bool) or math.isnan(score):
                    raise ValueError(f"score {score!r} is not a number")
                if not isinstance(rank, int) or isinstance(rank, bool):
                    raise ValueError(f"rank {rank!r} is not an integer")
                if not isinstance(text, str):
                    raise ValueError("content is not a string")
            except (KeyError, ValueError) as e:
                raise DataFormatError(path, None, f"{where}, hit {j}: {e}") from None
            if docid in seen:
                raise DataFormatError(path, None, f"{where}, hit {j}: docid {docid!r} appears twice")
            seen.add(docid)
            ranking.candidates.append(Candidate(docid, float(score), rank, text))
        run.add(ranking)
    return run


# ----------------------------------------------------------------------------------- candidates JSONL

def write_candidates_jsonl(run: Run, path: str | os.PathLike) -> Path:
    """One JSON object per query: ``{"hits": [{docid, rank, score, text}], "qid", "query"}``.

    Sorted keys, ``ensure_ascii=False`` (the mojibake is written as the same UTF-8 it was read as,
    not as escapes) and ``repr`` floats make the bytes a pure function of the run.
    """
    lines = []
    for r in run:
        obj = {
            "qid": r.query.qid,
            "query": r.query.text,
            "hits": [{"docid": c.docid, "rank": c.rank, "score": float(c.score), "text": c.text} for c in r.candidates],
        }
        lines.append(json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")
    return _write(path, "".join(lines))


def read_candidates_jsonl(path: str | os.PathLike, name: str) -> Run:
    """Read what :func:`write_candidates_jsonl` wrote (exact round trip)."""
    run = Run(name)
    for no, line in _lines(path):
        try:
            obj = json.loads(line)
            qid, query = obj["qid"], obj["query"]
            if not isinstance(qid, str) or not qid:
                raise ValueError(f"qid {qid!r} must be a non-empty string")
            cands = [
                Candidate(str(h["docid"]), float(h["score"]), int(h["rank"]), h.get("text")) for h in obj["hits"]
            ]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataFormatError(path, no, f"not a candidates record ({type(e).__name__}: {e})", line) from None
        if qid in run:
            raise DataFormatError(path, no, f"qid {qid!r} appears twice", line)
        run.add(Ranking(Query(qid, query), cands))
    return run


# ---------------------------------------------------------------------------------------------- numpy

def save_npy(path: str | os.PathLike, arr) -> None:
    """``arr`` (a numpy array) as ``.npy`` at ``path``, atomically (parents created)."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


# -------------------------------------------------------------------------------------------- helpers

def _topic_texts(topics: Mapping[str, str] | Iterable[Query] | None) -> dict[str, str]:
    if topics is None:
        return {}
    if isinstance(topics, Mapping):
        return {str(k): v for k, v in topics.items()}
    return {q.qid: q.text for q in topics}


def _write(path: str | os.PathLike, text: str) -> Path:
    # newline="" so that no platform ever turns "\n" into "\r\n": the bytes are the text's UTF-8.
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return Path(path)
