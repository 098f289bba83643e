"""BRIGHT reader on Hub-layout fixtures: tasks, gold qrels, excluded ids (official) vs mteb-1.x-compat, a ranking
with an excluded document removed, both file layouts, the mirror, and errors naming the file and the row."""

from __future__ import annotations

import pytest

from lab.data import bright as B
from lab.data import sources
from lab.data.formats import DataFormatError
from lab.data.sources import DataUnavailableError
from lab.eval.metrics import evaluate
from lab.records import Candidate, Ranking, Run
from tests.unit.data.bright_fixtures import EXAMPLES, write_bright, write_task

TWO = ("biology", "leetcode")


def test_tasks_queries_documents_and_gold_qrels(tmp_path):
    write_bright(tmp_path)
    tasks = B.load_bright(TWO, root=tmp_path)
    bio, lc = tasks["biology"], tasks["leetcode"]
    assert [q.qid for q in bio.queries] == ["0", "1"] and bio.queries[1].text == "how do bees see"
    assert bio.docids == ["moth/a.txt", "bee/a.txt", "bee/b.txt", "fish/a.txt"]
    assert bio.texts[0] == "moths orient by light"
    assert dict(bio.qrels["1"]) == {"bee/a.txt": 1, "bee/b.txt": 1} and bio.reasoning["0"] == "phototaxis"
    assert bio.excluded == {"0": frozenset(), "1": frozenset()}            # "N/A" is BRIGHT's placeholder
    assert lc.excluded_for("two-sum") == {"leetcode/two-sum.txt"} and lc.n_excluded == 1
    compat = lc.with_exclusion("mteb-1.x-compat")
    assert compat.excluded_for("two-sum") == frozenset() and compat.excluded == lc.excluded   # read, not applied
    assert len(B.TASKS) == 12 and set(TWO) <= set(B.TASKS)


def test_excluded_ids_leave_the_ranking_official_but_not_under_mteb_compat(tmp_path):
    write_bright(tmp_path)
    lc = B.load_bright(("leetcode",), root=tmp_path)["leetcode"]
    # a retriever that ranks the query's own source problem first, the gold document second
    run = Run("dense")
    run.add(Ranking(lc.queries[0], [Candidate("leetcode/two-sum.txt", 0.9, 1), Candidate("leetcode/hash.txt", 0.8, 2),
                                    Candidate("leetcode/sort.txt", 0.1, 3)]))
    official = B.drop_excluded(run, lc, depth=2)
    assert [(c.docid, c.rank) for c in official["two-sum"].candidates] == [("leetcode/hash.txt", 1),
                                                                           ("leetcode/sort.txt", 2)]
    compat = B.drop_excluded(run, lc.with_exclusion("mteb-1.x-compat"), depth=2)
    assert [c.docid for c in compat["two-sum"].candidates] == ["leetcode/two-sum.txt", "leetcode/hash.txt"]
    m = {"ndcg_10": "nDCG@10"}
    assert evaluate(official, lc.qrels, m).means["ndcg_10"] == pytest.approx(1.0)
    assert evaluate(compat, lc.qrels, m).means["ndcg_10"] == pytest.approx(0.6309, abs=1e-4)   # 1 / log2(3)


def test_converter_layout_mirror_hub_and_unavailable(tmp_path, monkeypatch):
    write_bright(tmp_path / "mirror" / "hf-datasets", converter=True)
    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("LAB_OFFLINE", "1")
    monkeypatch.setattr(sources, "hf_snapshot", lambda *a: pytest.fail("the mirror must be used first"))
    assert [q.qid for q in B.load_bright(TWO)["leetcode"].queries] == ["two-sum"]
    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path / "empty"))
    seen = []

    def miss(repo, patterns, revision, local_only):
        seen.append((repo, revision, patterns[:2]))
        raise FileNotFoundError("not in the local cache")

    monkeypatch.setattr(sources, "hf_snapshot", miss)
    with pytest.raises(DataUnavailableError, match=r"BRIGHT \(biology\) is not available.*xlangai/BRIGHT@main "
                                                   r"\(local cache only.*refs/convert/parquet"):
        B.load_bright(("biology",))
    assert seen[0] == ("xlangai/BRIGHT", None, ["examples/biology-*.parquet", "examples/biology/*.parquet"])
    with pytest.raises(ValueError, match="unknown BRIGHT tasks"):
        B.load_bright(("chemistry",))


def test_bad_data_names_the_file_and_row(tmp_path):
    bad = [dict(EXAMPLES["leetcode"][0], excluded_ids=["leetcode/hash.txt"])]
    folder = write_task(tmp_path, "leetcode", examples=bad)
    with pytest.raises(DataFormatError, match=r"examples/leetcode-00000-of-00001.parquet: row 0: excluded_ids "
                                              r"\['leetcode/hash.txt'\] are also gold_ids"):
        B.load_bright_task(folder, "leetcode")
    write_task(tmp_path, "leetcode", examples=[dict(EXAMPLES["leetcode"][0], gold_ids=["leetcode/missing.txt"])])
    with pytest.raises(DataFormatError, match=r"leetcode: gold ids of query 'two-sum' are not documents"):
        B.load_bright_task(folder, "leetcode")
    write_task(tmp_path, "leetcode", examples=[{k: v for k, v in EXAMPLES["leetcode"][0].items() if k != "gold_ids"}])
    with pytest.raises(DataFormatError, match=r"examples/leetcode-00000-of-00001.parquet: no column 'gold_ids'"):
        B.load_bright_task(folder, "leetcode")
    with pytest.raises(FileNotFoundError, match=r"no \['examples/pony-\*.parquet'"):
        B.load_bright_task(folder, "pony")
