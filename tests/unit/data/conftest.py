"""Real data via the mirror: ``LAB_DATA_MIRROR`` if set, else ``../shared/data`` beside the repo root.

Every test here runs offline (``LAB_OFFLINE=1``) with a private ``LAB_CACHE``, so nothing reaches the
network or the user's cache unless a test sets that up on purpose (the loopback download tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.paths import repo_root


def _mirror() -> Path | None:
    env = os.environ.get("LAB_DATA_MIRROR")
    path = Path(env) if env else repo_root(Path(__file__).parent).parent / "shared" / "data"
    return path if (path / "trec-dl" / "qrels.dl19-passage.txt").is_file() else None


MIRROR = _mirror()


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Path:
    """The mirror root, with the environment pointing at it for the whole session."""
    if MIRROR is None:
        pytest.skip("no data mirror: set LAB_DATA_MIRROR or provide ../shared/data beside the repo")
    mp = pytest.MonkeyPatch()
    mp.setenv("LAB_DATA_MIRROR", str(MIRROR))
    mp.setenv("LAB_OFFLINE", "1")
    mp.setenv("LAB_CACHE", str(tmp_path_factory.mktemp("lab-cache")))
    yield MIRROR
    mp.undo()


@pytest.fixture(scope="session")
def dl19(mirror):
    from lab.data.trecdl import load_dataset

    return load_dataset("trec-dl-2019")


@pytest.fixture(scope="session")
def dl20(mirror):
    from lab.data.trecdl import load_dataset

    return load_dataset("trec-dl-2020")
