"""Exact inner-product search over page embeddings (faiss ``IndexFlatIP``), results as :class:`Run`.

In NanoVDR the index holds the frozen teacher's page embeddings, computed once; the student's query
vectors are searched against it unchanged (the student lives in the teacher's space). Vectors are
L2-normalised, so inner product = cosine.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lab.records import Candidate, Query, Ranking, Run

__all__ = ["DenseIndex", "bytes_per_page"]


def bytes_per_page(dim: int, dtype: str = "float16") -> int:
    """Index size of one page vector: NanoVDR stores 2048-d fp16 = 4,096 bytes (4 KB) per page."""
    return int(dim) * np.dtype(dtype).itemsize


class DenseIndex:
    """``docids`` with their ``[N, D]`` embeddings in a faiss ``IndexFlatIP`` (exact search)."""

    def __init__(self, docids: Sequence[str], embeddings: np.ndarray):
        import faiss

        emb = np.ascontiguousarray(embeddings, dtype=np.float32)          # [N, D]
        if emb.ndim != 2 or emb.shape[0] != len(docids):
            raise ValueError(f"{len(docids)} docids but embeddings of shape {emb.shape}")
        if len(set(docids)) != len(docids):
            raise ValueError("duplicate docids in the index")
        self.docids = [str(d) for d in docids]
        self.dim = emb.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(emb)

    def __len__(self) -> int:
        return len(self.docids)

    def topk(self, q_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [Q, k], positions [Q, k])``, best first; ``k`` is capped at the index size."""
        q = np.ascontiguousarray(q_emb, dtype=np.float32)                 # [Q, D]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query embeddings of shape {q.shape}, index dim {self.dim}")
        return self.index.search(q, min(k, len(self)))                   # [Q, k], [Q, k]

    def search(self, q_emb: np.ndarray, k: int, *, queries: Sequence[Query], name: str = "dense") -> Run:
        """Top-``k`` pages per query as a :class:`Run` (score = inner product, rank 1-based)."""
        if len(queries) != len(q_emb):
            raise ValueError(f"{len(queries)} queries but {len(q_emb)} query vectors")
        scores, pos = self.topk(q_emb, k)
        run = Run(name)
        for query, s_row, p_row in zip(queries, scores, pos):
            cands = [Candidate(self.docids[p], float(s), rank=r + 1)
                     for r, (s, p) in enumerate(zip(s_row, p_row)) if p >= 0]
            run.add(Ranking(query, cands))
        return run

    def nbytes(self, dtype: str = "float16") -> int:
        return len(self) * bytes_per_page(self.dim, dtype)
