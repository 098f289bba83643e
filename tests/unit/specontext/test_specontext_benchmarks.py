"""SpeContext's paper-profile data: LongBench/RULER rows read from a folder laid out like the Hub repos (fixture
parquet files), a clear error when neither the mirror nor the Hub has them, the benchmarks' own scoring rules, and
the decode loop scoring every method against full KV."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import lab.config
from lab.methods.specontext import benchmarks as B, config as C

REPO = Path(__file__).resolve().parents[3]


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


RULER_ROWS = [{"context": f"haystack {i} ... magic number {i}23 ...", "question": "What is the magic number?",
               "answer_prefix": "Answer:", "answer": [f"{i}23", f"{i}45"], "max_new_tokens": 12,
               "task": "niah_multivalue"} for i in range(3)]


def test_rows_load_from_a_hub_shaped_folder(tmp_path):
    _parquet(tmp_path / "simonjegou/ruler/4096/test-00000-of-00001.parquet", RULER_ROWS)
    _parquet(tmp_path / "Xnhyacinth/LongBench/hotpotqa/test-00000-of-00001.parquet",
             [{"context": "Paris is in France.", "question": "Where is Paris?", "answer": "France"}])
    rows = B.load("ruler/4096", root=tmp_path)
    assert [r.answers for r in rows] == [("023", "045"), ("123", "145"), ("223", "245")]
    assert rows[1] == B.LongSample("ruler/4096", 1, "niah_multivalue", RULER_ROWS[1]["context"],
                                   "What is the magic number?", "Answer:", ("123", "145"), 12)
    assert len(B.load("ruler/4096", 2, root=tmp_path)) == 2
    lb = B.load("longbench/hotpotqa", root=tmp_path)
    assert lb == [B.LongSample("longbench/hotpotqa", 0, "hotpotqa", "Paris is in France.", "Where is Paris?", "",
                               ("France",), 0)]


def test_missing_column_and_unreachable_hub_are_named(tmp_path, monkeypatch):
    _parquet(tmp_path / "simonjegou/ruler/8192/test-00000-of-00001.parquet", [{"context": "x", "question": "y"}])
    with pytest.raises(ValueError, match=r"test-00000-of-00001.parquet: no column 'answer'"):
        B.load("ruler/8192", root=tmp_path)
    from lab.data import sources

    def unreachable(repo, patterns, revision, local):
        raise ConnectionError(f"huggingface.co unreachable ({repo}@{revision})")

    monkeypatch.setattr(sources, "hf_snapshot", unreachable)
    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path / "empty-mirror"))
    with pytest.raises(sources.DataUnavailableError) as err:
        B.load("ruler/4096")
    msg = str(err.value)
    assert msg.startswith("SpeContext benchmark ruler/4096 (specontext.bench.sets, simonjegou/ruler folder 4096)")
    assert "ConnectionError: huggingface.co unreachable (simonjegou/ruler@None)" in msg
    assert "refs/convert/parquet" in msg and "hf-datasets/simonjegou/ruler/" in msg
    with pytest.raises(ValueError, match="not <source>/<subset>"):
        B.load("infinitebench/kv")


def test_scoring_follows_ruler_and_longbench():
    assert B.string_match_all("The numbers are 123 and 456.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert B.string_match_all("ANSWER: Apple", ["apple"]) == 1.0
    assert B.qa_f1("The Eiffel Tower!", ["eiffel tower"]) == 1.0               # articles and punctuation dropped
    assert B.qa_f1("tower in Paris", ["Eiffel Tower", "Paris"]) == pytest.approx(0.5)   # best: P 1/3, R 1 -> 0.5
    assert B.qa_f1("tower in Paris", ["Eiffel Tower"]) == pytest.approx(0.4)            # P 1/3, R 1/2
    assert B.qa_f1("", ["x"]) == 0.0


class ByteTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text.encode())}

    def decode(self, ids):
        return bytes(i % 256 for i in ids).decode(errors="replace")


def test_long_contexts_lose_their_middle_and_every_method_is_decoded(tmp_path):
    from lab.kv import baselines
    from tests.unit.kv.conftest import tiny_llama

    tok = ByteTokenizer()
    s = B.LongSample("ruler/4096", 0, "niah", "A" * 40 + "B" * 60, "Q?", "A:", ("AB",), 3)
    ctx, q = B.prompt_ids(tok, s, 30)
    assert q == list(b" Q? A:") and len(ctx) == 24 and ctx == list(b"A" * 12 + b"B" * 12)
    cfg = lab.config.load("specontext", "tiny", REPO / "params.yaml")
    cfg = dataclasses.replace(cfg, bench=dataclasses.replace(cfg.bench, max_context=64, answer_tokens=2))
    rows = B.benchmark_eval(tiny_llama(), tok, [s], {"streamingllm": baselines.StreamingLLM()}, [80, 8], cfg,
                            progress=False)
    assert [(r["method"], r["budget"]) for r in rows] == [("full", 0), ("streamingllm", 80), ("streamingllm", 8)]
    assert rows[1]["answer"] == rows[0]["answer"] and rows[0]["context"] == 64 - len(q)   # budget >= context
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)


def test_bench_sets_are_checked_and_the_dry_run_has_none(monkeypatch):
    with pytest.raises(ValueError, match=r"specontext.bench.sets: \['kvpress/x'\]"):
        C.SpecConfig(bench=C.SpecBench(sets=("kvpress/x",)))
    paper = lab.config.load("specontext", "paper", REPO / "params.yaml", dry_run=False)
    assert paper.model_role == "specontext_llm" and paper.bench.sets and paper.bench.max_context == 32768
    assert lab.config.load("models", "paper", REPO / "params.yaml", dry_run=False).refs["specontext_llm"] == \
        "hf:meta-llama/Llama-3.1-8B-Instruct"
    dry = lab.config.load("specontext", "paper", REPO / "params.yaml", dry_run=True)
    assert dry.bench.sets == () and dry.dlm.layers == (0, 1) and dry.model_role == "specontext_llm"
    assert lab.config.load("models", "paper", REPO / "params.yaml", dry_run=True).refs["specontext_llm"] == \
        "random:llama-tiny"
    from lab import preflight

    monkeypatch.delenv(preflight.ENV_DRY_RUN, raising=False)
    assert preflight.missing("specontext_report", gpu=lambda: "a CUDA GPU (x)", hub=lambda: "hub (y)") == []
    assert preflight.missing("specontext_eval", gpu=lambda: "a CUDA GPU (x)", hub=lambda: None) == ["a CUDA GPU (x)"]
