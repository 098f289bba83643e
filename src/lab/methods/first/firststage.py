"""FIRST's BEIR first stage (paper §4: Contriever top 100): dense retrieval materialised as the TREC runs that
``first.rerank.beir_runs`` names, so ``first_rerank`` reranks runs this repo produced.

``python -m lab.methods.first.firststage --profile paper`` writes one ``<beir_runs with {name}>`` file per
``first.rerank.beir`` set (tag ``first.rerank.beir_first_stage``), skipping sets whose file exists unless
``--force``. The corpus is streamed (:func:`lab.data.beir.iter_beir_corpus` ->
:func:`lab.retrieval.first_stage.build_index`), so 5-9M-passage sets never sit in memory as text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab import config as lab_config
from lab.methods.first.config import FirstConfig

__all__ = ["run_path", "dense_settings", "load_encoder", "beir_dense_run", "materialise_beir_runs", "main"]


def run_path(cfg: FirstConfig, name: str) -> Path:
    if not cfg.rerank.beir_runs:
        raise ValueError("first.rerank.beir_runs is empty: no file pattern to write the BEIR first-stage runs to")
    return Path(cfg.rerank.beir_runs.format(name=Path(name).name))


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


def beir_dense_run(cfg: FirstConfig, name: str, encoder, *, progress: bool = True):
    """The dense top ``first.dense.depth`` of one BEIR set (test split; dev for MS MARCO, as the reranker)."""
    from lab.data.beir import beir_files, iter_beir_corpus, judged_queries
    from lab.retrieval.first_stage import build_index, retrieve

    files = beir_files(name, split="dev" if Path(name).name == "msmarco" else "test")
    queries, _ = judged_queries(files)
    settings = dense_settings(cfg)
    index = build_index(encoder, iter_beir_corpus(files.corpus), settings, progress=progress)
    return retrieve(encoder, index, queries, settings, name=cfg.rerank.beir_first_stage, progress=progress)


def materialise_beir_runs(cfg: FirstConfig, *, force: bool = False, progress: bool = True, encoder=None) -> dict:
    """Write every missing ``first.rerank.beir`` run; returns ``{set: {"path", "queries", "written"}}``."""
    from lab.data.formats import write_trec_run

    out, todo = {}, []
    for name in cfg.rerank.beir:
        path = run_path(cfg, name)
        if path.is_file() and not force:
            out[Path(name).name] = {"path": str(path), "written": False}
        else:
            todo.append((name, path))
    if todo:
        encoder = encoder or load_encoder(cfg)
    for name, path in todo:
        run = beir_dense_run(cfg, name, encoder, progress=progress)
        write_trec_run(run, path, tag=cfg.rerank.beir_first_stage)
        out[Path(name).name] = {"path": str(path), "queries": len(run), "written": True}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.methods.first.firststage", description=__doc__)
    p.add_argument("--profile", default=None, help="params.yaml profile (default: the file's)")
    p.add_argument("--params", default=None, help="params.yaml path")
    p.add_argument("--force", action="store_true", help="rewrite runs that exist")
    args = p.parse_args(argv)
    cfg = lab_config.load("first", args.profile, args.params)
    from lab.methods.first.common import setup_torch

    setup_torch(cfg, int(lab_config.read_params(args.params).get("seed", 0)))
    print(json.dumps(materialise_beir_runs(cfg, force=args.force), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
