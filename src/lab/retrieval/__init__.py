"""Dense retrieval: text encoders and projectors (:mod:`~lab.retrieval.dense`), frozen teachers
(:mod:`~lab.retrieval.teachers`), exact faiss search returning :class:`~lab.records.Run`
(:mod:`~lab.retrieval.index`), a streamed-corpus dense first stage writing runs (:mod:`~lab.retrieval.first_stage`),
and the embedding-distillation pieces for lab.train (:mod:`~lab.retrieval.distill`).

Importing this package loads torch; faiss and transformers load when first used.
"""

from lab.retrieval.dense import EmbeddingCache, Encoder, Projector, mean_pool
from lab.retrieval.index import DenseIndex, bytes_per_page

__all__ = ["DenseIndex", "EmbeddingCache", "Encoder", "Projector", "bytes_per_page", "mean_pool"]
