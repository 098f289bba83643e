"""Encoder, projector, embedding cache, faiss index and page rendering (random:bert-tiny, tiny data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.data.pages import Page, render_page, render_pages, wrap_text, _font
from lab.records import Query
from lab.retrieval import DenseIndex, EmbeddingCache, Encoder, Projector, bytes_per_page
from lab.retrieval.teachers import TextTeacher, encode_cached


@pytest.fixture(scope="module")
def student():
    return Encoder.from_ref("random:bert-tiny", out_dim=48, projector_hidden=32, max_length=16, seed=0)


def test_projector_shapes():
    assert Projector(64, 2048, 768)(torch.zeros(3, 64)).shape == (3, 2048)
    lin = Projector(64, 96, 0)
    assert lin(torch.zeros(2, 64)).shape == (2, 96) and len(lin.net) == 1


def test_student_output_is_teacher_width_and_unit_norm(student):
    emb = student.encode(["what is a lobster roll", "b", "a much longer query about anthropology"], progress=False)
    assert emb.shape == (3, 48) and student.dim == 48
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_encode_is_order_preserving_and_deterministic(student):
    texts = ["zebra crossing rules", "a", "how long to boil an egg", "tax"]
    a = student.encode(texts, batch_size=2, progress=False)
    b = student.encode(texts[::-1], batch_size=3, progress=False)[::-1]
    assert np.allclose(a, b, atol=1e-5)
    assert student.encode([], progress=False).shape == (0, 48)


def test_mean_pooling_ignores_padding(student):
    short = student.encode(["hello world"], progress=False)
    padded = student.encode(["hello world", "a much much much longer text that forces padding"], progress=False)[0]
    assert np.allclose(short[0], padded, atol=1e-5)


def test_save_load_roundtrip_all_and_projector(student, tmp_path):
    texts = ["one query", "another query"]
    want = student.encode(texts, progress=False)
    for parts in ("all", "projector"):
        path = student.save(tmp_path / f"{parts}.safetensors", parts=parts)
        assert np.allclose(Encoder.load(path).encode(texts, progress=False), want, atol=1e-6)
    assert (tmp_path / "projector.safetensors").stat().st_size < (tmp_path / "all.safetensors").stat().st_size


def test_embedding_cache_reuses_instead_of_recomputing(tmp_path):
    cache = EmbeddingCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return np.ones((2, 3))

    key = EmbeddingCache.key("m", ["a", "b"], "inst")
    assert cache.get_or_compute(key, compute).shape == (2, 3)
    assert cache.get_or_compute(key, compute).dtype == np.float32
    assert len(calls) == 1 and cache.computed["default"] == 1 and cache.hits["default"] == 1
    assert EmbeddingCache(tmp_path).get_or_compute(key, compute).shape == (2, 3) and len(calls) == 1  # new process
    # every part of the key matters
    assert len({key, EmbeddingCache.key("m", ["a", "b"], ""), EmbeddingCache.key("m2", ["a", "b"], "inst"),
                EmbeddingCache.key("m", ["ab"], "inst"), EmbeddingCache.key("m", ["a", "b"], "inst", {"len": 8})}) == 5


def test_teacher_embeddings_cached_across_teacher_instances(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    pages = [Page("d1", "the lobster roll"), Page("d2", "anthropology of islands")]
    t1 = TextTeacher("random:bert-tiny", page_max_length=16)
    first = encode_cached(t1, "pages", pages, cache, progress=False)
    t2 = TextTeacher("random:bert-tiny", page_max_length=16)
    monkeypatch.setattr(t2, "encode_pages", lambda *a, **k: pytest.fail("recomputed cached page embeddings"))
    assert np.array_equal(encode_cached(t2, "pages", pages, cache, progress=False), first)
    assert cache.computed["pages"] == 1 and cache.hits["pages"] == 1
    t3 = TextTeacher("random:bert-tiny", page_max_length=8)          # other truncation: other key
    encode_cached(t3, "pages", pages, cache, progress=False)
    assert cache.computed["pages"] == 2


def test_dense_index_search_returns_run_in_score_order():
    docs = np.eye(4, dtype=np.float32)
    index = DenseIndex(["a", "b", "c", "d"], docs)
    q = np.array([[0.1, 0.9, 0.3, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    run = index.search(q, 3, queries=[Query("1", "x"), Query("2", "y")], name="t")
    assert [c.docid for c in run["1"].candidates] == ["b", "c", "a"]
    assert [c.rank for c in run["1"].candidates] == [1, 2, 3]
    assert run["2"].candidates[0].docid == "a" and run["2"].candidates[0].score == pytest.approx(1.0)
    assert len(index.search(q, 10, queries=[Query("1", "x"), Query("2", "y")])["1"]) == 4  # capped at pool size
    assert index.nbytes() == 4 * 4 * 2 and bytes_per_page(2048) == 4096
    with pytest.raises(ValueError):
        DenseIndex(["a", "a"], np.zeros((2, 3)))


def test_render_page_is_deterministic_and_wraps(tmp_path):
    text = "Ecological anthropology attempts to understand the relative influence of environment " * 4
    a, b = render_page(text, 200, 240, 10), render_page(text, 200, 240, 10)
    assert a.size == (200, 240) and a.tobytes() == b.tobytes()
    assert np.asarray(a).min() < 64                                   # something was drawn (antialiased)
    lines = wrap_text(text, _font(10), 180)
    assert len(lines) > 3 and all(_font(10).getlength(line) <= 180 for line in lines)
    assert wrap_text("x" * 400, _font(10), 50)[0] and max(_font(10).getlength(s) for s in wrap_text("x" * 400, _font(10), 50)) <= 50
    pages = render_pages([("d1", text), ("d2", "short")], tmp_path, width=200, height=240, font_size=10, progress=False)
    again = render_pages([("d1", text)], tmp_path, width=200, height=240, font_size=10, progress=False)
    assert pages[0].image == again[0].image and pages[0].image.read_bytes() == again[0].image.read_bytes()
    assert pages[1].load_image().size == (200, 240)
