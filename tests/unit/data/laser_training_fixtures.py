"""LaSER-Training rows in the layouts the Hub repo may hold (datasets.save_to_disk Arrow stream, parquet, jsonl)."""

from __future__ import annotations

import json

import pyarrow as pa

ROWS = [
    {"query": "why do moths fly to lamps", "reasoning_query": "Moths navigate by the moon.\n\nA lamp is closer.",
     "prompt": "Given a post, retrieve relevant passages that help answer the post.",
     "positive_passages": ["Phototaxis: moths keep a light at a fixed angle.", "Transverse orientation."],
     "negative_passages": ["Moth larvae eat wool.", "Butterflies fly by day."]},
    {"query": "sum of two primes", "reasoning_query": "ok", "prompt": "",
     "positive_passages": ["Goldbach's conjecture."], "negative_passages": []},
]


def write_arrow(path, rows):
    """What datasets.save_to_disk writes: an Arrow IPC *stream* per shard plus dataset_info.json / state.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (path.parent / "state.json").write_text(json.dumps({"_data_files": [{"filename": path.name}]}))
    return path
