"""The FIRST paper's training data: ``rryisthebest/rank_zephyr_training_data_alpha`` as :class:`RankExample`s.

The RankZephyr training set (RankGPT-4 reorderings of ada2 top-20 windows for ~5k MS MARCO training
queries, Pradeep et al. 2023) converted by the FIRST authors to alphabetic identifiers. Schema (ShareGPT
style, one JSON object per row, as the official loader ``scripts/utils/dataset.py`` reads it)::

    {"id": ..., "conversations": [
        {"from": "system", "value": "You are RankLLM, ..."},
        {"from": "human",  "value": "I will provide you with 20 passages, ... [A] text\\n[B] text\\n...
                                     Search Query: <query>.\\nRank the 20 passages above ..."},
        {"from": "gpt",    "value": "[C] > [A] > [B] > ..."}]}

The official trainer uses ``conversations[0..2]["value"]`` by position; so do we, checking the ``from``
roles when present. The query and passages are parsed back out of the user message (the prompt is
re-rendered from ``lab/rerank/prompts/first_alpha_v1.yaml``, whose text is the same) and the target
permutation from the assistant message. A target that repeats or omits identifiers is completed the way
:func:`lab.rerank.listwise.parse_permutation` does (missing passages appended in input order) and counted
as ``repaired``; a row that cannot be parsed is skipped and counted.

Local ``.jsonl``, ``.jsonl.gz``, ``.json`` (a list of rows) and ``.parquet`` files are read directly. A Hub id
(``rryisthebest/rank_zephyr_training_data_alpha``, ``hf:`` prefix optional) needs no ``datasets`` package:
the split's files are found, in this order, in the data mirror's ``hf-datasets/<owner>/<name>/`` folder
(``LAB_DATA_MIRROR``, laid out like the Hub repo), then through ``huggingface_hub.snapshot_download`` of
only the data files (``LAB_OFFLINE=1``: the local HF cache only), first at ``revision`` (default main),
then - when the repo holds no such files there - at the Hub's parquet-converter branch
``refs/convert/parquet`` (``default/<split>/*.parquet``). Parquet is read with pyarrow, batch by batch.
Which files the Hub repo holds was not checked online from here, hence the search order: ``data/<split>-*
.parquet`` (``push_to_hub``), ``<split>-*.parquet``, ``default/<split>/*.parquet``, then JSON lines / JSON.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from lab.rerank.train import RankExample

__all__ = ["RankZephyrData", "parse_row", "load_rank_zephyr", "read_rows"]

ROLES = ("system", "human", "gpt")
_QUERY = re.compile(r"Search Query: (?P<query>.*?)\.\nRank the (?P<num>\d+) passages above", re.S)
_PASSAGE = re.compile(r"^\[(?P<ident>[A-Z])\] ?(?P<text>.*)$")
_TARGET = re.compile(r"\[([A-Z])\]")


@dataclass
class RankZephyrData:
    examples: list[RankExample] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)     # row ids (row number when the row has none)
    skipped: list[str] = field(default_factory=list)  # "id: reason"
    repaired: int = 0                                  # targets completed to a full permutation


class RowError(ValueError):
    pass


def parse_row(row: dict) -> tuple[RankExample, bool]:
    """``(example, repaired)`` from one row; raises :class:`RowError` naming what is wrong."""
    conv = row.get("conversations")
    if not isinstance(conv, list) or len(conv) < 3:
        raise RowError("expected 'conversations' with system, human and gpt turns")
    for turn, role in zip(conv, ROLES):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RowError("every turn needs a string 'value'")
        if "from" in turn and turn["from"] != role:
            raise RowError(f"turn roles {[t.get('from') for t in conv[:3]]}, expected {list(ROLES)}")
    user, target = conv[1]["value"], conv[2]["value"]
    m = _QUERY.search(user)
    if not m:
        raise RowError("no 'Search Query: ... Rank the N passages above' in the user message")
    num, query = int(m["num"]), m["query"]
    passages: list[str] = []
    for line in user[: m.start()].split("\n"):
        p = _PASSAGE.match(line)
        if p:
            if p["ident"] != chr(ord("A") + len(passages)):
                raise RowError(f"passage identifier {p['ident']!r} out of order")
            passages.append(p["text"])
    if len(passages) != num or num < 2:
        raise RowError(f"{len(passages)} passages parsed, the prompt says {num}")
    order: list[int] = []
    for ident in _TARGET.findall(target):
        i = ord(ident) - ord("A")
        if i < num and i not in order:
            order.append(i)
    if not order:
        raise RowError(f"no identifiers in the target {target[:40]!r}")
    repaired = len(order) != num or len(_TARGET.findall(target)) != num
    order += [i for i in range(num) if i not in order]
    ranks = [0] * num
    for pos, i in enumerate(order):
        ranks[i] = pos + 1
    return RankExample(query, passages, ranks), repaired


def _parquet_rows(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:              # not parquet, truncated footer
        raise ValueError(f"{path}: not a readable parquet file: {e}") from None
    names = set(pf.schema_arrow.names)
    if "conversations" not in names:
        raise ValueError(f"{path}: no 'conversations' column (columns: {sorted(names)})")
    for batch in pf.iter_batches(batch_size=256, columns=[c for c in ("id", "conversations") if c in names]):
        yield from batch.to_pylist()


def read_rows(path: str | os.PathLike) -> Iterator[dict]:
    """Rows of a local ``.jsonl``/``.jsonl.gz`` (one object per line), ``.json`` (a list) or ``.parquet`` file."""
    path = Path(path)
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of rows")
        yield from rows
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{no}: not valid JSON: {e}") from None


# ------------------------------------------------------------------------------------------------ the Hub
PARQUET_BRANCH = "refs/convert/parquet"    # the Hub's parquet-converter branch: default/<split>/NNNN.parquet


def _split_patterns(split: str) -> list[str]:
    return [f"data/{split}-*.parquet", f"{split}-*.parquet", f"default/{split}/*.parquet",
            f"{split}*.jsonl", f"{split}*.jsonl.gz", f"{split}*.json", f"data/{split}*.jsonl", f"data/{split}*.json",
            "*.jsonl", "*.jsonl.gz"]


def split_files(folder: Path, split: str) -> list[Path]:
    """The split's data files in a folder laid out like the Hub repo: the first pattern that matches wins."""
    for pattern in _split_patterns(split):
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if files:
            return files
    return []


def hub_files(dataset_id: str, split: str = "train", revision: str | None = None) -> list[Path]:
    """Data files of ``split`` of a Hub dataset: the mirror folder, else the Hub (see the module docstring)."""
    from lab.data.sources import hub_dataset_folder

    repo = dataset_id.removeprefix("hf:")
    folder = hub_dataset_folder(repo, patterns=_split_patterns(split), has_files=lambda f: bool(split_files(f, split)),
                                what=f"training data {repo!r} ({split})",
                                revisions=[revision] if revision is not None else [None, PARQUET_BRANCH])
    return split_files(folder, split)


def _hub_rows(dataset_id: str, split: str, revision: str | None) -> Iterable[dict]:
    for path in hub_files(dataset_id, split, revision):
        yield from read_rows(path)


def load_rank_zephyr(source: str | os.PathLike, *, max_examples: int = 0, split: str = "train",
                     revision: str | None = None) -> RankZephyrData:
    """Parse every row of ``source`` (a local file, else a Hub dataset id); ``max_examples`` > 0 keeps the first N."""
    local = Path(source)
    rows: Any = read_rows(local) if local.is_file() else _hub_rows(str(source), split, revision)
    out = RankZephyrData()
    for no, row in enumerate(rows):
        if max_examples and len(out.examples) >= max_examples:
            break
        rid = str(row.get("id", no)) if isinstance(row, dict) else str(no)
        try:
            ex, repaired = parse_row(row)
        except RowError as e:
            out.skipped.append(f"{rid}: {e}")
            continue
        out.examples.append(ex)
        out.ids.append(rid)
        out.repaired += repaired
    if not out.examples:
        raise ValueError(f"{source}: no usable rows ({len(out.skipped)} skipped, e.g. {out.skipped[:2]})")
    return out
