"""Schemas of the ``params.yaml`` sections (frozen dataclasses; no ML imports).

Defaults here document intent; ``params.yaml`` must still spell every value it relies on,
because DVC tracks that file, not these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from lab.config import section

FIRST_STAGES = ("bm25", "bm25rm3", "tasb", "ada2", "splade_pp_ed", "repllama")


@section("tracking")
@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "lab"            # MLflow experiment every stage run lands in
    artifacts_dir: str = "mlartifacts"  # explicit artifact root beside mlflow.db (repo-relative)


@section("data")
@dataclass(frozen=True)
class DataConfig:
    datasets: tuple[str, ...] = ("trec-dl-2019", "trec-dl-2020")
    first_stages: tuple[str, ...] = FIRST_STAGES
    depth: int = 100                  # candidates kept per query (the runs hold 100)
    max_queries: int = 0              # 0 = every judged query; tiny keeps a few
    query_pools: tuple[str, ...] = ("msmarco-passage-dev-subset",)  # unlabelled training queries
    beir: tuple[str, ...] = ()        # BEIR sets (paper profile: from the Hugging Face Hub)
    out_dir: str = "data"


@section("models")
@dataclass(frozen=True)
class ModelsConfig:
    # role -> model reference (packaged name, hf:org/name, random:<arch>-<size>, or a local path)
    refs: Mapping[str, str] = field(default_factory=dict)
    out_dir: str = "models"


@section("firststage")
@dataclass(frozen=True)
class FirstStageConfig:
    datasets: tuple[str, ...] = ("trec-dl-2019", "trec-dl-2020")
    runs: tuple[str, ...] = FIRST_STAGES
    baseline: str = "bm25"             # every run is tested against this one, per query
    # metrics.json key -> ir-measures measure (binary measures at rel >= 2: TREC DL passage convention)
    measures: Mapping[str, str] = field(default_factory=dict)
    test: Literal["ttest", "permutation"] = "ttest"
    alpha: float = 0.05
