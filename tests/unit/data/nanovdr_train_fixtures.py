"""Tiny NanoVDR-Train-shaped parquet files (the Hub's layout: <config>/<split>-NNNNN-of-NNNNN.parquet), written
per test with pyarrow: queries in several languages and sources, each with a small PNG page."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

ROWS = [  # (query_id, query, language, source)
    ("q0", "what is the revenue in 2023", "en", "colpali_train_set"),
    ("q1", "which table lists the tax rates", "en", "visrag_synthetic"),
    ("q2", "wie hoch ist der umsatz", "de", "colpali_train_set"),
    ("q3", "quel est le taux", "fr", "visrag_indomain"),
    ("q4", "wo steht die tabelle", "de", "vdr_multilingual"),
    ("q5", "   ", "en", "vdr_multilingual"),                       # empty after strip: dropped
    ("q6", "was zeigt die grafik", "de", "visrag_synthetic"),
]
VAL = [("v0", "how many pages does the report have", "en", "colpali_train_set"),
       ("v1", "welche farbe hat das logo", "de", "visrag_synthetic")]


def png(width: int, height: int, shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (shade, shade, shade)).save(buf, format="PNG")
    return buf.getvalue()


def write_split(folder: Path, split: str, rows, *, text_column: str = "query") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "data" / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "query_id": [r[0] for r in rows], text_column: [r[1] for r in rows], "language": [r[2] for r in rows],
        "source": [r[3] for r in rows],
        "image": [{"bytes": png(20 + i, 30 + i, 10 * i), "path": f"{r[0]}.png"} for i, r in enumerate(rows)]})
    pq.write_table(table, path, row_group_size=3)          # several row groups: lazy page reads seek the right one
    return path


def write_dataset(root: Path, repo: str = "nanovdr/NanoVDR-Train") -> Path:
    folder = root / repo
    write_split(folder, "train", ROWS)
    write_split(folder, "validation", VAL)
    return folder
