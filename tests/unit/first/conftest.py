"""Fixtures for the FIRST method tests: fake materialised TREC DL data, the tiny profile, tiny random models.

The models are the seeded random-init ``random:llama-tiny`` / ``random:mistral-tiny`` from ``lab.models``
(built once into the user cache, SmolLM2's tokenizer); the data are a few synthetic queries in the layout
the ``data`` stage writes, so nothing here needs the mirror.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import lab.config
from tests.conftest import TOPICS, one_torch_thread, write_fake_trec

REPO = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"


_one_torch_thread = pytest.fixture(scope="package", autouse=True)(one_torch_thread)


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("first-data")
    write_fake_trec(root, "trec-dl-2019", 19000, TOPICS[:4], TOPICS)
    write_fake_trec(root, "trec-dl-2020", 20000, TOPICS[4:8], TOPICS)
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
