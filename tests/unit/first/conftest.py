"""Fixtures for the FIRST method tests: fake materialised TREC DL data, the tiny profile, tiny random models.

The models are the seeded random-init ``random:llama-tiny`` / ``random:mistral-tiny`` from ``lab.models``
(built once into the user cache, SmolLM2's tokenizer); the data are a few synthetic queries in the layout
the ``data`` stage writes, so nothing here needs the mirror.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import lab.config
from lab.data.formats import write_candidates_jsonl, write_qrels, write_topics
from lab.records import Candidate, Qrels, Query, Ranking, Run

REPO = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"
TOPICS = ["lobster", "volcano", "tax", "guitar", "insulin", "bridge", "coffee", "glacier", "tennis", "mortgage"]


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one process-wide state: each test that builds an Accelerator starts and ends clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    torch.set_num_threads(1)


def _doc(topic: str, i: int) -> str:
    return f"{topic} passage {i}: facts about the {topic}, how the {topic} works and why it matters."


def _dataset(root: Path, name: str, qid0: int, topics: list[str]) -> None:
    queries = [Query(str(qid0 + i), f"what is the {t}") for i, t in enumerate(topics)]
    qrels, runs = {}, {"bm25": Run("bm25"), "splade_pp_ed": Run("splade_pp_ed")}
    for q, t in zip(queries, topics):
        others = [o for o in TOPICS if o != t]
        hits = [(f"{o}-0", _doc(o, 0)) for o in others[:5]] + [(f"{t}-{k}", _doc(t, k)) for k in range(3)]
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
def fake_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("first-data")
    _dataset(root, "trec-dl-2019", 19000, TOPICS[:4])
    _dataset(root, "trec-dl-2020", 20000, TOPICS[4:8])
    return root


def load_cfg(profile: str = "tiny", **overrides):
    """The repo's ``first`` section for ``profile``; ``train=``/``optim=``/``rerank=`` take dicts of overrides."""
    cfg = lab.config.load("first", profile, REPO / "params.yaml")
    for part in ("train", "optim", "rerank"):
        if part in overrides:
            cfg = replace(cfg, **{part: replace(getattr(cfg, part), **overrides.pop(part))})
    return replace(cfg, **overrides)


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    from lab.models import resolve

    return resolve("random:llama-tiny")


@pytest.fixture(scope="session")
def tiny_mistral() -> Path:
    from lab.models import resolve

    return resolve("random:mistral-tiny")
