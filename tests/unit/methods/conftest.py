"""Tiny fake TREC-like data and the ``nanovdr`` schema for the NanoVDR tests.

The schema is ``lab.methods.nanovdr.config``'s ``nanovdr`` section; the tiny values come from ``params.yaml``'s
``nanovdr`` section with its ``tiny`` profile.
Models are ``random:bert-tiny`` built into a private ``LAB_CACHE``; nothing touches the user's cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import lab.config
from lab.data.formats import write_topics
from lab.records import Query
from tests.conftest import write_fake_trec

REPO = Path(__file__).resolve().parents[3]
PARAMS = REPO / "params.yaml"

TOPICS = ["lobster", "volcano", "tax", "guitar", "anthropology", "insulin", "bridge", "coffee", "satellite",
          "tennis", "glacier", "mortgage"]


def nanovdr_schema():
    return lab.config.schema("nanovdr")


def tiny_config(**overrides):
    raw = yaml.safe_load(PARAMS.read_text())["nanovdr"]
    values = lab.config.resolve_profile(raw, "tiny", "params.yaml: nanovdr")
    values.update(overrides)
    return lab.config.build(nanovdr_schema(), values, "params.yaml: nanovdr")


@pytest.fixture(scope="session")
def make_cfg():
    """``make_cfg(**overrides)`` -> the tiny profile's NanoVDRConfig with overrides."""
    return tiny_config


@pytest.fixture(scope="session")
def lab_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("LAB_CACHE", str(tmp_path_factory.mktemp("lab-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name, qid0, topics in (("trec-dl-2019", 19000, TOPICS[:5]), ("trec-dl-2020", 20000, TOPICS[5:10])):
        write_fake_trec(root, name, qid0, topics, TOPICS, query="what is the {topic} about {i}", fillers=7,
                        relevant_first=True)
    pool = [Query(str(900 + i), f"{TOPICS[i % len(TOPICS)]} question number {i}") for i in range(80)]
    write_topics(pool, root / "pools" / "msmarco-passage-dev-subset.tsv")
    return root


@pytest.fixture(scope="session")
def tiny_index(fake_data, lab_cache, tmp_path_factory):
    """The tiny profile's index built once per session: (cfg, index_dir, build summary)."""
    from lab.methods.nanovdr import index as nanovdr_index
    from lab.retrieval.dense import EmbeddingCache

    index_dir = tmp_path_factory.mktemp("index")
    cfg = tiny_config(data_dir=str(fake_data), index_dir=str(index_dir))
    summary = nanovdr_index.build_index(cfg, index_dir, seed=0, cache=EmbeddingCache(index_dir.parent / "emb-cache"),
                                        progress=False)
    return cfg, index_dir, summary
