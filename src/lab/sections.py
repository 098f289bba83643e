"""Schemas of the core ``params.yaml`` sections (frozen dataclasses; no ML imports).

Core = the sections every paper shares: ``tracking``, ``data``, ``models``, ``firststage``, ``report``
(:data:`CORE`).
A paper's own section lives beside its wiring, in ``lab/methods/<paper>/config.py`` (``SECTION``, ``SCHEMA``);
:mod:`lab.config` finds both. This module imports nothing of ``lab`` (``lab.config`` imports it, one way).

Defaults here document intent; ``params.yaml`` must still spell every value it relies on,
because DVC tracks that file, not these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

FIRST_STAGES = ("bm25", "bm25rm3", "tasb", "ada2", "splade_pp_ed", "repllama")


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "lab"            # MLflow experiment every stage run lands in
    artifacts_dir: str = "mlartifacts"  # explicit artifact root beside mlflow.db (repo-relative)


@dataclass(frozen=True)
class DataConfig:
    datasets: tuple[str, ...] = ("trec-dl-2019", "trec-dl-2020")
    first_stages: tuple[str, ...] = FIRST_STAGES
    depth: int = 100                  # candidates kept per query (the runs hold 100)
    max_queries: int = 0              # 0 = every judged query; tiny keeps a few
    query_pools: tuple[str, ...] = ("msmarco-passage-dev-subset",)  # unlabelled training queries
    beir: tuple[str, ...] = ()        # BEIR sets (paper profile: from the Hugging Face Hub)
    out_dir: str = "data"


@dataclass(frozen=True)
class ModelsConfig:
    # role -> model reference (packaged name, hf:org/name, random:<arch>-<size>, or a local path)
    refs: Mapping[str, str] = field(default_factory=dict)
    out_dir: str = "models"


@dataclass(frozen=True)
class FirstStageConfig:
    datasets: tuple[str, ...] = ("trec-dl-2019", "trec-dl-2020")
    runs: tuple[str, ...] = FIRST_STAGES
    baseline: str = "bm25"             # every run is tested against this one, per query
    # metrics.json key -> ir-measures measure (binary measures at rel >= 2: TREC DL passage convention)
    measures: Mapping[str, str] = field(default_factory=dict)
    test: Literal["ttest", "permutation"] = "ttest"
    alpha: float = 0.05


@dataclass(frozen=True)
class ReportConfig:
    # experiments/<paper>/expected.yaml, in the report's order (each paper's claims, tables and figures)
    papers: tuple[str, ...] = ("foundation", "first", "nanovdr")
    title: str = "Did it reproduce?"


# section name -> schema of the sections every paper shares (method sections: lab/methods/<paper>/config.py)
CORE: dict[str, type] = {"tracking": TrackingConfig, "data": DataConfig, "models": ModelsConfig,
                         "firststage": FirstStageConfig, "report": ReportConfig}
