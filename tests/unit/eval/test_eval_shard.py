"""lab.eval.shard: inference split by rank and gathered back in order (2 CPU processes under `accelerate launch`),
the identity in one process, and the FIRST / NanoVDR wiring that uses it (single process = the unsharded call;
an emulated 2-rank merge = the single-process result)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab.eval import shard
from lab.records import Candidate, Query, Ranking, Run

SCRIPT = Path(__file__).with_name("shard_tiny.py")
REPO = Path(__file__).resolve().parents[3]


def _clean_env(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)


def test_two_process_accelerate_launch_shards_seven_items_and_gathers_them_in_order(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "ACCELERATE_USE_CPU": "true",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    from lab.train.launch import _free_port

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(SCRIPT), "--out", "two.json"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "two.json").read_text())
    items = [f"q{i}" for i in range(7)]
    assert out["world"] == 2
    # contiguous blocks 4 + 3 (accelerate's split), concatenated in rank order = the original order
    assert out["gathered"] == [[x, 0] for x in items[:4]] + [[x, 1] for x in items[4:]]
    assert out["mapped"] == [x.upper() for x in items] and out["array"] == list(range(7))
    assert out["parts"] == [4, 3] and out["rows"] == [[i, int(i >= 4)] for i in range(7)]


def test_single_process_is_the_identity(monkeypatch):
    _clean_env(monkeypatch)
    items = [f"q{i}" for i in range(7)]
    assert shard.world() == (0, 1) and shard.is_main()
    assert shard.split(items) == items and shard.gather(items) == items
    arr = np.arange(6.0).reshape(3, 2)
    assert shard.gather_parts(arr)[0] is arr and len(shard.gather_parts(arr)) == 1
    assert shard.map_sharded(lambda xs: [x * 2 for x in xs], [1, 2, 3]) == [2, 4, 6]
    with pytest.raises(RuntimeError, match="2 results for 3"):
        shard.map_sharded(lambda xs: xs[:2], [1, 2, 3])
    # accelerate's split rule: the first len % N ranks take one more
    assert [shard.bounds(7, r, 2) for r in range(2)] == [(0, 4), (4, 7)]
    assert [shard.bounds(2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]


class LengthScorer:
    """Deterministic window scorer: longest passage first; records a generated text per window."""

    def __call__(self, queries, windows):
        orders = [sorted(range(len(w)), key=lambda i: (-len(w[i]), i)) for w in windows]
        self.last_texts = [" > ".join(f"[{i + 1}]" for i in o) for o in orders]
        return orders


def _base(n_queries=7, n_docs=6):
    run = Run("bm25")
    for q in range(n_queries):
        cands = [Candidate(f"d{q}-{d}", float(n_docs - d), d + 1, "x" * ((d * 7 + q * 3) % 11 + 1))
                 for d in range(n_docs)]
        run.add(Ranking(Query(str(q), f"query {q}"), cands))
    return run


def _emulate_two_ranks(monkeypatch, second):
    """shard as rank 0 of 2: split gives the first block, gather_parts appends what rank 1 computes."""
    monkeypatch.setattr(shard, "split", lambda items: list(items)[:shard.bounds(len(items), 0, 2)[1]])
    monkeypatch.setattr(shard, "gather_parts", lambda part: [part, second()])


def _ranked(res):
    return {name: [(r.query.qid, [c.docid for c in r.candidates]) for r in cr.run] for name, cr in res.items()}


def test_first_rerank_sharded_equals_unsharded(monkeypatch):
    from lab.methods.first.rerank import _run_sharded
    from lab.rerank.runner import run_scorers

    _clean_env(monkeypatch)
    kw = dict(window=4, stride=2, depth=6, batch_size=2, identifiers=[f"[{i}]" for i in range(1, 21)])
    base = _base()
    full = run_scorers(base, {"bm25/x": LengthScorer()}, **kw)
    one = _run_sharded(base, {"bm25/x": LengthScorer()}, **kw)
    assert _ranked(one) == _ranked(full) and one["bm25/x"].texts == full["bm25/x"].texts
    assert one["bm25/x"].windows == full["bm25/x"].windows
    qids = list(base.rankings)
    rank1 = lambda: run_scorers(base.subset(qids[4:]), {"bm25/x": LengthScorer()}, **kw)   # noqa: E731
    _emulate_two_ranks(monkeypatch, rank1)
    two = _run_sharded(base, {"bm25/x": LengthScorer()}, **kw)
    assert _ranked(two) == _ranked(full)                       # same rankings, in query order
    assert two["bm25/x"].texts == full["bm25/x"].texts and two["bm25/x"].windows == full["bm25/x"].windows
    assert two["bm25/x"].complete == full["bm25/x"].complete


def test_query_encoding_map_array_sharded_equals_unsharded(monkeypatch):
    """NanoVDR's query encoding (evaluate / ViDoRe) goes through shard.map_array."""
    _clean_env(monkeypatch)

    def encode(texts):
        return np.asarray([[len(t), sum(map(ord, t))] for t in texts], np.float32).reshape(-1, 2)   # [n, 2]

    texts = [f"query number {i}" * (i % 3 + 1) for i in range(7)]
    full = encode(texts)
    assert np.array_equal(shard.map_array(encode, texts), full)
    _emulate_two_ranks(monkeypatch, lambda: encode(texts[4:]))
    assert np.array_equal(shard.map_array(encode, texts), full)
