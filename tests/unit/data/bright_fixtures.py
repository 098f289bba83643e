"""A tiny BRIGHT in the Hub's layout: two tasks, examples + documents parquet, leetcode with an excluded id."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = "xlangai/BRIGHT"
EXAMPLES = {
    "biology": [
        {"id": "0", "query": "why do moths fly to lamps", "reasoning": "phototaxis", "gold_ids": ["moth/a.txt"],
         "gold_ids_long": ["moth.txt"], "excluded_ids": ["N/A"]},
        {"id": "1", "query": "how do bees see", "reasoning": "ultraviolet", "gold_ids": ["bee/a.txt", "bee/b.txt"],
         "gold_ids_long": ["bee.txt"], "excluded_ids": ["N/A"]},
    ],
    "leetcode": [
        {"id": "two-sum", "query": "find two numbers adding to target", "reasoning": "hash map",
         "gold_ids": ["leetcode/hash.txt"], "gold_ids_long": ["N/A"], "excluded_ids": ["leetcode/two-sum.txt"]},
    ],
}
DOCUMENTS = {
    "biology": [("moth/a.txt", "moths orient by light"), ("bee/a.txt", "bees see ultraviolet"),
                ("bee/b.txt", "compound eyes of bees"), ("fish/a.txt", "fish gills")],
    "leetcode": [("leetcode/two-sum.txt", "the two-sum problem itself"), ("leetcode/hash.txt", "hash map lookup"),
                 ("leetcode/sort.txt", "sorting arrays")],
}


def write_task(root: Path, task: str, *, converter: bool = False, examples=None, documents=None) -> Path:
    """``root/xlangai/BRIGHT/{examples,documents}/<task>-00000-of-00001.parquet`` (``converter``: ``<task>/0000``)."""
    folder = root / REPO
    for config, rows in (("examples", examples or EXAMPLES[task]),
                         ("documents", documents or [{"id": i, "content": c} for i, c in DOCUMENTS[task]])):
        path = folder / config / (f"{task}/0000.parquet" if converter else f"{task}-00000-of-00001.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
    return folder


def write_bright(root: Path, converter: bool = False) -> Path:
    for task in EXAMPLES:
        folder = write_task(root, task, converter=converter)
    return folder
