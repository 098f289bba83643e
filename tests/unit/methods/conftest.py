"""Tiny fake TREC-like data and the ``nanovdr`` schema for the NanoVDR tests.

The schema is ``lab.sections``' ``nanovdr`` section; the tiny values come from ``params.yaml``'s
``nanovdr`` section with its ``tiny`` profile.
Models are ``random:bert-tiny`` built into a private ``LAB_CACHE``; nothing touches the user's cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import lab.config
import lab.sections
from lab.data.formats import write_candidates_jsonl, write_qrels, write_topics
from lab.records import Candidate, Qrels, Query, Ranking, Run

REPO = Path(__file__).resolve().parents[3]
PARAMS = REPO / "params.yaml"

TOPICS = ["lobster", "volcano", "tax", "guitar", "anthropology", "insulin", "bridge", "coffee", "satellite",
          "tennis", "glacier", "mortgage"]


def nanovdr_schema():
    return lab.config.SECTIONS["nanovdr"]


def tiny_config(**overrides):
    raw = yaml.safe_load(PARAMS.read_text())["nanovdr"]
    values = lab.config.resolve_profile(raw, "tiny", "params.yaml: nanovdr")
    values.update(overrides)
    return lab.config.build(nanovdr_schema(), values, "params.yaml: nanovdr")


def _doc(topic: str, i: int) -> str:
    return f"{topic} passage {i}: facts about the {topic}, how the {topic} works and why {topic} matters."


def _dataset(root: Path, name: str, qid0: int, topics: list[str]) -> None:
    queries = [Query(str(qid0 + i), f"what is the {t} about {i}") for i, t in enumerate(topics)]
    qrels, runs = {}, {"bm25": Run("bm25"), "splade_pp_ed": Run("splade_pp_ed")}
    for q, t in zip(queries, topics):
        others = [o for o in TOPICS if o != t]
        hits = [(f"{t}-{k}", _doc(t, k)) for k in range(3)] + [(f"{o}-0", _doc(o, 0)) for o in others[:7]]
        qrels[q.qid] = {f"{t}-0": 3, f"{t}-1": 2, f"{t}-2": 1, f"{others[0]}-0": 0}
        for shift, run in enumerate(runs.values()):
            order = hits[shift:] + hits[:shift]
            run.add(Ranking(q, [Candidate(d, 10.0 - r, r + 1, text) for r, (d, text) in enumerate(order)]))
    folder = root / name
    write_topics(queries, folder / "queries.tsv")
    write_qrels(Qrels(qrels), folder / "qrels.txt")
    for fs, run in runs.items():
        write_candidates_jsonl(run, folder / "candidates" / f"{fs}.jsonl")


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
    _dataset(root, "trec-dl-2019", 19000, TOPICS[:5])
    _dataset(root, "trec-dl-2020", 20000, TOPICS[5:10])
    pool = [Query(str(900 + i), f"{TOPICS[i % len(TOPICS)]} question number {i}") for i in range(80)]
    write_topics(pool, root / "pools" / "msmarco-passage-dev-subset.tsv")
    return root


@pytest.fixture(scope="session")
def tiny_index(fake_data, lab_cache, tmp_path_factory):
    """The tiny profile's index built once per session: (cfg, index_dir, build summary)."""
    from lab.methods import nanovdr
    from lab.retrieval.dense import EmbeddingCache

    index_dir = tmp_path_factory.mktemp("index")
    cfg = tiny_config(data_dir=str(fake_data), index_dir=str(index_dir))
    summary = nanovdr.build_index(cfg, index_dir, seed=0, cache=EmbeddingCache(index_dir.parent / "emb-cache"),
                                  progress=False)
    return cfg, index_dir, summary
