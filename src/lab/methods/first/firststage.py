"""FIRST's BEIR first stage (paper §4: Contriever top 100): dense retrieval materialised as TREC runs, so
``first_rerank`` reranks runs this repo produced.

Stage ``first_firststage`` (notebook ``notebooks/first/00-first-firststage.py``) calls :func:`stage_runs`: one
``<out_dir>/runs/<set>.trec`` per ``first.rerank.beir`` set (tag ``first.rerank.beir_first_stage``) and
``runs/manifest.json``; the paper profile's ``first.rerank.beir_runs`` points at those files. The corpus is
streamed (:func:`lab.data.beir.iter_beir_corpus` -> :func:`lab.retrieval.first_stage.build_index`), so
5-9M-passage sets never sit in memory as text. ``python -m lab.methods.first.firststage --profile paper`` is the
same outside DVC.

A set's run is reused from the stage's previous outputs when its fingerprint (encoder weights, dense settings,
set, split, tag) and file hash match: encoding MS MARCO's 8.8M passages takes hours on a GPU, and adding one BEIR
set to ``first.rerank.beir`` must not redo the other ten.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from lab import config as lab_config
from lab.methods.first.config import FirstConfig

__all__ = ["RUNS", "MANIFEST", "split_of", "dense_settings", "load_encoder", "run_fingerprint", "beir_dense_run",
           "stage_runs", "evaluate_runs", "main"]

RUNS = "runs"                    # <out_dir>/runs/<set>.trec
MANIFEST = "manifest.json"       # <out_dir>/runs/manifest.json: {set: {file, source, queries, fingerprint, ...}}
FORMAT = 1                       # bump when what a run holds changes for the same settings


def split_of(name: str) -> str:
    """BEIR's evaluation split: test, dev for MS MARCO (as the reranker reads it)."""
    return "dev" if Path(name).name == "msmarco" else "test"


def dense_settings(cfg: FirstConfig):
    from lab.retrieval.first_stage import DenseSettings

    d = cfg.dense
    return DenseSettings(max_length=d.max_length, batch_size=d.batch_size, chunk=d.chunk, depth=d.depth,
                         skip_self=d.skip_self)


def load_encoder(cfg: FirstConfig, device: str | None = None):
    """``first.dense.encoder`` as a mean-pooling, unnormalised :class:`~lab.retrieval.dense.Encoder` (Contriever)."""
    import torch

    from lab.retrieval.dense import Encoder

    if not cfg.dense.encoder:
        raise ValueError("first.dense.encoder is empty: set a model ref (paper: hf:facebook/contriever-msmarco)")
    enc = Encoder.from_ref(cfg.dense.encoder, max_length=cfg.dense.max_length, normalize=False)
    return enc.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def run_fingerprint(cfg: FirstConfig, name: str) -> str:
    """sha256 of what a set's run depends on: the encoder's ref and weights, the dense settings, set, split, tag."""
    from lab.retrieval.dense import model_fingerprint

    if not cfg.dense.encoder:
        raise ValueError("first.dense.encoder is empty: set a model ref (paper: hf:facebook/contriever-msmarco)")
    spec = {"format": FORMAT, "set": str(name), "split": split_of(name), "tag": cfg.rerank.beir_first_stage,
            "encoder": model_fingerprint(cfg.dense.encoder), "settings": asdict(dense_settings(cfg))}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def beir_dense_run(cfg: FirstConfig, name: str, encoder, *, progress: bool = True):
    """The dense top ``first.dense.depth`` of one BEIR set's judged queries."""
    from lab.data.beir import beir_files, iter_beir_corpus, judged_queries
    from lab.retrieval.first_stage import build_index, retrieve

    files = beir_files(name, split=split_of(name))
    queries, _ = judged_queries(files)
    settings = dense_settings(cfg)
    index = build_index(encoder, iter_beir_corpus(files.corpus), settings, progress=progress)
    return retrieve(encoder, index, queries, settings, name=cfg.rerank.beir_first_stage, progress=progress)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest(folder: Path | None) -> dict:
    path = folder / RUNS / MANIFEST if folder is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def stage_runs(cfg: FirstConfig, out_dir: str | Path, *, previous: str | Path | None = None, progress: bool = True,
               encoder=None) -> dict[str, dict]:
    """Write ``<out_dir>/runs/<set>.trec`` for every ``first.rerank.beir`` set and ``runs/manifest.json``.

    ``previous``: the stage's last output folder; a set whose run there has this run's fingerprint and file hash
    is copied instead of recomputed. No BEIR set (smoke, tiny): an empty manifest, no encoder loaded. Returns the
    manifest ``{set: {file, source, queries, fingerprint, sha256, seconds, reused}}``.
    """
    from lab.data.formats import write_trec_run
    from lab.paths import write_json

    keys = [Path(n).name for n in cfg.rerank.beir]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"first.rerank.beir: sets {dup} share a name, so their runs would share a file")
    runs_dir = Path(out_dir) / RUNS
    runs_dir.mkdir(parents=True, exist_ok=True)
    prev_dir = Path(previous) if previous is not None else None
    old, manifest = _manifest(prev_dir), {}
    for name, key in zip(cfg.rerank.beir, keys):
        fingerprint, path = run_fingerprint(cfg, name), runs_dir / f"{key}.trec"
        before = old.get(key, {})
        src = prev_dir / RUNS / f"{key}.trec" if prev_dir is not None else None
        if before.get("fingerprint") == fingerprint and src is not None and src.is_file() \
                and _sha256(src) == before.get("sha256"):
            if src.resolve() != path.resolve():
                shutil.copyfile(src, path)
            manifest[key] = {**before, "reused": True}
            continue
        encoder = encoder if encoder is not None else load_encoder(cfg)
        t0 = time.perf_counter()
        run = beir_dense_run(cfg, name, encoder, progress=progress)
        write_trec_run(run, path, tag=cfg.rerank.beir_first_stage)
        manifest[key] = {"file": path.name, "source": str(name), "queries": len(run), "fingerprint": fingerprint,
                         "sha256": _sha256(path), "seconds": round(time.perf_counter() - t0, 1), "reused": False}
    write_json(runs_dir / MANIFEST, manifest)
    return manifest


def evaluate_runs(cfg: FirstConfig, runs_dir: str | Path):
    """``(summary, per_query)`` of every run in ``runs_dir`` against its set's qrels (``first.dense.measures``):
    the dense first stage the reranker starts from, and in R@100 the ceiling of what reranking the top 100 reaches."""
    import pandas as pd

    from lab.data.beir import beir_files, judged_queries
    from lab.data.formats import read_trec_run
    from lab.eval.metrics import evaluate

    manifest = json.loads((Path(runs_dir) / MANIFEST).read_text())
    rows, per_query = [], []
    for key, entry in manifest.items():
        queries, qrels = judged_queries(beir_files(entry["source"], split=split_of(entry["source"])))
        run = read_trec_run(Path(runs_dir) / entry["file"], cfg.rerank.beir_first_stage, queries)
        res = evaluate(run, qrels, cfg.dense.measures)
        rows += [{"dataset": key, "measure": m, "mean": v, "n": len(res.qids)} for m, v in res.means.items()]
        per_query.append(res.per_query.assign(dataset=key, run=key))
    cols = ["dataset", "run", "qid", "measure", "value"]
    return (pd.DataFrame(rows, columns=["dataset", "measure", "mean", "n"]),
            pd.concat(per_query, ignore_index=True)[cols] if per_query else pd.DataFrame(columns=cols))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.methods.first.firststage", description=__doc__)
    p.add_argument("--profile", default=None, help="params.yaml profile (default: the file's)")
    p.add_argument("--params", default=None, help="params.yaml path")
    p.add_argument("--out", default="outputs/first_firststage", help="writes OUT/runs/<set>.trec + manifest.json")
    p.add_argument("--force", action="store_true", help="recompute runs whose fingerprint matches")
    args = p.parse_args(argv)
    cfg = lab_config.load("first", args.profile, args.params)
    from lab.methods.first.common import setup_torch

    setup_torch(cfg, int(lab_config.read_params(args.params).get("seed", 0)))
    print(json.dumps(stage_runs(cfg, args.out, previous=None if args.force else args.out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
