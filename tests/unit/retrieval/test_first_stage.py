"""Dense first stage over a streamed corpus (lab.retrieval.first_stage): faiss top-k == exact search top-k."""

from __future__ import annotations

import numpy as np
import pytest

from lab.records import Query
from lab.retrieval import Encoder
from lab.retrieval.first_stage import DenseSettings, StreamedIndex, build_index, passage_text, retrieve
from tests.conftest import one_torch_thread

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def contriever_like():
    """Random-init BERT, mean pooling, no L2 norm (Contriever's BEIR settings), short max length for speed."""
    return Encoder.from_ref("random:bert-tiny", max_length=32, normalize=False)


@pytest.fixture(scope="module")
def corpus_and_queries(mirror):
    from lab.data.trecdl import load_dataset

    ds = load_dataset("trec-dl-2019", first_stages=["bm25"], max_queries=8)
    docs = {}
    for r in ds.runs["bm25"]:
        for c in r.candidates[:25]:
            docs.setdefault(c.docid, c.text)
    # MS MARCO holds near-duplicate passages: the docid in the title / text keeps 32-token prefixes distinct (no ties)
    corpus = [(d, f"title {d}", t) if i % 2 else (d, "", f"{d} {t}") for i, (d, t) in enumerate(sorted(docs.items()))]
    return corpus, ds.queries


def test_streamed_faiss_topk_equals_exact_search(contriever_like, corpus_and_queries):
    corpus, queries = corpus_and_queries
    settings = DenseSettings(chunk=17, batch_size=8, depth=10, skip_self=False)
    index = build_index(contriever_like, iter(corpus), settings, progress=False)
    assert len(index) == len(corpus) > 150
    run = retrieve(contriever_like, index, queries, settings, name="contriever", progress=False)
    p = contriever_like.encode([passage_text(t, x) for _, t, x in corpus], progress=False)     # [N, D]
    q = contriever_like.encode([x.text for x in queries], progress=False)                      # [Q, D]
    assert not np.allclose(np.linalg.norm(p, axis=1), 1.0)        # unnormalised: dot product, not cosine
    exact = q @ p.T                                                # [Q, N]
    for qi, query in enumerate(queries):
        order = np.argsort(-exact[qi], kind="stable")[:10]
        got = run[query.qid].candidates
        assert [c.docid for c in got] == [corpus[j][0] for j in order]
        np.testing.assert_allclose([c.score for c in got], exact[qi, order], rtol=1e-4, atol=1e-4)
        assert [c.rank for c in got] == list(range(1, 11))


def test_corpus_is_consumed_chunk_by_chunk(contriever_like, corpus_and_queries, monkeypatch):
    corpus, _ = corpus_and_queries
    consumed, at_add = [0], []

    def stream():
        for rec in corpus[:40]:
            consumed[0] += 1
            yield rec

    real_add = StreamedIndex.add

    def spy(self, docids, emb):
        at_add.append((len(docids), consumed[0]))
        real_add(self, docids, emb)

    monkeypatch.setattr(StreamedIndex, "add", spy)
    build_index(contriever_like, stream(), DenseSettings(chunk=16), progress=False)
    assert at_add == [(16, 16), (16, 32), (8, 40)]     # never more than one chunk of texts read ahead


def test_self_hits_are_dropped_as_beir_does(contriever_like):
    corpus = [("q1", "", "how long do fleas live"), ("d1", "", "fleas live up to a year"),
              ("d2", "", "a cat"), ("d3", "Dogs", "they bark")]
    index = build_index(contriever_like, corpus, DenseSettings(chunk=2), progress=False)
    queries = [Query("q1", "how long do fleas live")]
    keep = retrieve(contriever_like, index, queries, DenseSettings(depth=4, skip_self=False), progress=False)
    drop = retrieve(contriever_like, index, queries, DenseSettings(depth=3, skip_self=True), progress=False)
    assert keep["q1"].candidates[0].docid == "q1"                  # identical text: the top hit
    assert [c.docid for c in drop["q1"].candidates] == [c.docid for c in keep["q1"].candidates[1:]]   # depth kept
    assert [c.rank for c in drop["q1"].candidates] == [1, 2, 3] and passage_text("Dogs", "they bark") == "Dogs they bark"
    with pytest.raises(ValueError, match="empty"):
        build_index(contriever_like, [], progress=False)
