"""Dense first stage over a streamed corpus: encode chunk by chunk into a faiss index, search, TREC runs.

FIRST (Reddy et al., EMNLP 2024) reranks Contriever's top 100 on BEIR; the official repo ships precomputed
Contriever embeddings (README "1. Retrieval") and searches them with tevatron's faiss retriever. Here the
same retrieval runs from the text, with the settings of Contriever's own BEIR evaluation
(facebookresearch/contriever ``src/beir_utils.py`` + ``eval_beir.py``): mean pooling, **no** L2
normalisation (``norm_query = norm_doc = False``), dot-product score, ``maxlength`` 512 for queries and
passages, passage text ``title + " " + text`` (a space, unlike the reranker's ``". "``), and BEIR's exact
search, which drops a document whose id equals the query id (:attr:`DenseSettings.skip_self`).

The corpus arrives as an iterator of ``(docid, title, text)`` (e.g. :func:`lab.data.beir.iter_beir_corpus`)
and is encoded ``chunk`` passages at a time, each chunk added to the index and dropped: a 5-9M-passage
BEIR corpus is never one Python list or dict of texts. The index stores the vectors (exact
``IndexFlatIP``: 8.8M x 768 float32 = 27 GB for MS MARCO); only the docid list grows with the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from lab.records import Candidate, Query, Ranking, Run

__all__ = ["DenseSettings", "StreamedIndex", "passage_text", "build_index", "retrieve"]


@dataclass(frozen=True)
class DenseSettings:
    max_length: int = 512          # contriever beir_utils DenseEncoderModel(maxlength=512), queries and passages
    batch_size: int = 128          # contriever evaluate_model(batch_size=128)
    chunk: int = 65536             # passages encoded and indexed at a time (bounds the texts held in memory)
    depth: int = 100               # FIRST reranks the top 100
    skip_self: bool = True         # BEIR DenseRetrievalExactSearch: a hit whose docid == qid is dropped
    query_batch: int = 4096        # queries per faiss search call


def passage_text(title: str, text: str) -> str:
    """Contriever's passage string: ``title + " " + text``, the text alone without a title."""
    return f"{title} {text}" if title else text


class StreamedIndex:
    """An exact inner-product faiss index filled chunk by chunk; row ``i`` is ``docids[i]``."""

    def __init__(self, dim: int):
        import faiss

        self.dim = int(dim)
        self.index = faiss.IndexFlatIP(self.dim)
        self.docids: list[str] = []

    def __len__(self) -> int:
        return len(self.docids)

    def add(self, docids: Sequence[str], embeddings: np.ndarray) -> None:
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)            # [n, D]
        if emb.ndim != 2 or emb.shape != (len(docids), self.dim):
            raise ValueError(f"{len(docids)} docids but embeddings of shape {emb.shape} (index dim {self.dim})")
        self.index.add(emb)
        self.docids.extend(str(d) for d in docids)

    def search(self, q_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [Q, k], rows [Q, k])`` best first; rows are -1 where the index holds fewer than ``k``."""
        q = np.ascontiguousarray(q_emb, dtype=np.float32)                   # [Q, D]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query embeddings of shape {q.shape}, index dim {self.dim}")
        return self.index.search(q, k)                                      # [Q, k], [Q, k]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def build_index(encoder, corpus: Iterable[tuple[str, str, str]], settings: DenseSettings = DenseSettings(),
                *, total: int | None = None, progress: bool = True) -> StreamedIndex:
    """Encode ``(docid, title, text)`` records ``settings.chunk`` at a time into a :class:`StreamedIndex`.

    ``encoder``: a :class:`lab.retrieval.dense.Encoder` (its ``max_length`` / ``normalize`` apply; for
    Contriever build it with ``normalize=False, max_length=512``). ``total``: corpus size for the bar.
    """
    if settings.chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {settings.chunk}")
    index = StreamedIndex(encoder.dim)
    bar = tqdm(total=total, desc="index passages", unit="psg", disable=not progress)
    for chunk in _chunks(corpus, settings.chunk):
        texts = [passage_text(title, text) for _, title, text in chunk]
        index.add([d for d, _, _ in chunk], encoder.encode(texts, batch_size=settings.batch_size, progress=False))
        bar.update(len(chunk))
    bar.close()
    if not len(index):
        raise ValueError("the corpus is empty: nothing to index")
    return index


def retrieve(encoder, index: StreamedIndex, queries: Sequence[Query], settings: DenseSettings = DenseSettings(),
             *, name: str = "dense", progress: bool = True) -> Run:
    """Top ``settings.depth`` per query (score = inner product) as a :class:`Run`, in query order."""
    k = min(settings.depth + (1 if settings.skip_self else 0), len(index))   # one spare for a dropped self-hit
    run = Run(name)
    for lo in tqdm(range(0, len(queries), settings.query_batch), desc="search", unit="batch",
                   disable=not progress):
        part = list(queries[lo: lo + settings.query_batch])
        q = encoder.encode([x.text for x in part], batch_size=settings.batch_size, progress=False)   # [Q, D]
        scores, rows = index.search(q, k)                                                            # [Q, k]
        for query, s_row, r_row in zip(part, scores, rows):
            hits = [(index.docids[r], float(s)) for s, r in zip(s_row, r_row) if r >= 0]
            if settings.skip_self:
                hits = [h for h in hits if h[0] != query.qid]
            run.add(Ranking(query, [Candidate(d, s, rank=i + 1) for i, (d, s) in enumerate(hits[: settings.depth])]))
    return run
