"""TREC DL sets as MLflow dataset inputs (lab.tracking's convention: every run lists what it read).

One input per materialised set (``data/<name>/qrels.txt`` + ``queries.tsv``), digest = the first 16 hex digits
of the sha256 over both files (name + bytes), profile = their line counts; source = the folder's file URI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

def _digest(paths: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


_DATASETS: dict[tuple, list] = {}


def trec_datasets(data_dir: str | os.PathLike, names: list[str] | None = None) -> list:
    """MLflow dataset inputs for the materialised TREC DL sets under ``data_dir`` (``<name>/qrels.txt`` +
    ``queries.tsv``); digest: sha256 of both files. Sets not materialised yet are left out."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    data_dir = Path(data_dir)
    found = sorted(p.parent for p in data_dir.glob("*/qrels.txt") if (p.parent / "queries.tsv").is_file())
    out = []
    for folder in found:
        if names is not None and folder.name not in names:
            continue
        files = [folder / "qrels.txt", folder / "queries.tsv"]
        key = (str(folder.resolve()), *(f.stat().st_mtime_ns for f in files), *(f.stat().st_size for f in files))
        if key not in _DATASETS:  # a process logs many children: hash each set once
            qrels = sum(1 for line in files[0].open(encoding="utf-8") if line.strip())
            topics = sum(1 for line in files[1].open(encoding="utf-8") if line.strip())
            _DATASETS[key] = [Dataset(
                name=folder.name, digest=_digest(files), source_type="local",
                source=json.dumps({"uri": folder.resolve().as_uri(), "files": [f.name for f in files]}),
                profile=json.dumps({"qrels": qrels, "topics": topics}))]
        ds = _DATASETS[key][0]
        out.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", "qrels+topics")]))
    return out
