"""Data layer: one reader/writer per file format, named public files with verified sources, and loaders.

- :mod:`lab.data.formats`: TREC topics/qrels/runs, rank_llm JSON, candidates JSONL (all I/O goes here);
- :mod:`lab.data.sources`: mirror -> verified cache -> verified download for every registered file;
- :mod:`lab.data.trecdl`: TREC DL 2019/2020 with the six first-stage runs, query pools, BEIR topics,
  and the DVC ``data`` stage (:func:`materialise` / :func:`load_materialised`);
- :mod:`lab.data.beir`: BEIR-format corpora from a folder or the Hugging Face Hub;
- :mod:`lab.data.vidore`: ViDoRe v1/v2/v3 page-image benchmarks (parquet) from a folder, the mirror or the Hub;
- :mod:`lab.data.laser_training` / :mod:`lab.data.bright`: LaSER's training rows and BRIGHT's 12 tasks (excluded
  ids, mteb-1.x-compat), Hub dataset repos found by :func:`lab.data.sources.hub_dataset_folder` (one resolver).
"""

from lab.data.formats import (
    DataFormatError, read_candidates_jsonl, read_qrels, read_rank_llm_json, read_topics, read_trec_run,
    write_candidates_jsonl, write_qrels, write_topics, write_trec_run,
)
from lab.data.sources import DataIntegrityError, DataUnavailableError, resolve
from lab.data.trecdl import (
    TrecDataset, load_beir_topics_qrels, load_dataset, load_materialised, load_query_pool, materialise,
)

__all__ = [
    "DataFormatError", "DataIntegrityError", "DataUnavailableError", "TrecDataset", "load_beir_topics_qrels",
    "load_dataset", "load_materialised", "load_query_pool", "materialise", "read_candidates_jsonl",
    "read_qrels", "read_rank_llm_json", "read_topics", "read_trec_run", "resolve", "write_candidates_jsonl",
    "write_qrels", "write_topics", "write_trec_run",
]
