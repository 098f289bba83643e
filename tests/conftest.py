import os
from pathlib import Path

import pytest

from lab.paths import repo_root

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """An isolated folder with params.yaml (a copy of the repo's) as cwd, own MLflow db."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("LAB_MLFLOW_RUN_ID", "LAB_STAGE", "LAB_OUT_DIR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


# --------------------------------------------------------------------------------------------------------
# Real data via the mirror: LAB_DATA_MIRROR if set, else ../shared/data beside the repo root. Tests that use
# these fixtures run offline (LAB_OFFLINE=1) with a private LAB_CACHE, so nothing reaches the network or the
# user's cache unless a test sets that up on purpose (the loopback download tests).
def _mirror() -> Path | None:
    env = os.environ.get("LAB_DATA_MIRROR")
    path = Path(env) if env else repo_root(REPO).parent / "shared" / "data"
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


def one_torch_thread():
    """Tiny models run 10-100x slower with 2 contending intra-op threads; packages opt in with
    ``_one_thread = pytest.fixture(scope="package", autouse=True)(one_torch_thread)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one process-wide state: each test that builds an Accelerator starts and ends clean."""
    import torch
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------------
# Fake materialised TREC DL sets in the layout the `data` stage writes (queries.tsv, qrels.txt,
# candidates/<first stage>.jsonl): one topic per query, three graded relevant passages, off-topic fillers.
TOPICS = ["lobster", "volcano", "tax", "guitar", "insulin", "bridge", "coffee", "glacier", "tennis", "mortgage"]


def fake_doc(topic: str, i: int) -> str:
    return f"{topic} passage {i}: facts about the {topic}, how the {topic} works and why {topic} matters."


def write_fake_trec(root: Path, name: str, qid0: int, topics: list[str], all_topics: list[str], *,
                    query: str = "what is the {topic}", fillers: int = 5, relevant_first: bool = False) -> None:
    """Write ``root/name``: a query per topic, qrels 3/2/1 on its passages and 0 on one filler, and BM25 /
    SPLADE++ED runs holding the same candidates (SPLADE's rotated by one) with passage text."""
    from lab.data.formats import write_candidates_jsonl, write_qrels, write_topics
    from lab.records import Candidate, Qrels, Query, Ranking, Run

    queries = [Query(str(qid0 + i), query.format(topic=t, i=i)) for i, t in enumerate(topics)]
    qrels, runs = {}, {"bm25": Run("bm25"), "splade_pp_ed": Run("splade_pp_ed")}
    for q, t in zip(queries, topics):
        others = [o for o in all_topics if o != t]
        relevant = [(f"{t}-{k}", fake_doc(t, k)) for k in range(3)]
        filler = [(f"{o}-0", fake_doc(o, 0)) for o in others[:fillers]]
        hits = relevant + filler if relevant_first else filler + relevant
        qrels[q.qid] = {f"{t}-0": 3, f"{t}-1": 2, f"{t}-2": 1, f"{others[0]}-0": 0}
        for shift, run in enumerate(runs.values()):
            order = hits[shift:] + hits[:shift]
            run.add(Ranking(q, [Candidate(d, 10.0 - r, r + 1, text) for r, (d, text) in enumerate(order)]))
    folder = root / name
    write_topics(queries, folder / "queries.tsv")
    write_qrels(Qrels(qrels), folder / "qrels.txt")
    for fs, run in runs.items():
        write_candidates_jsonl(run, folder / "candidates" / f"{fs}.jsonl")
