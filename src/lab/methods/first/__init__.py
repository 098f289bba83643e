"""FIRST (Reddy et al., EMNLP 2024, arXiv 2406.15657): single-token listwise reranking.

``config`` (the ``first`` params schema), ``common`` (torch setup, base model, stopwatch), ``train`` (training
data and wiring; ``python -m lab.methods.first.train train ...``), ``firststage`` (the BEIR dense first stage,
stage first_firststage), ``rerank`` (reranking, latency, evaluation) and ``feedback`` (§5 relevance feedback). This package imports none of them: importing it is cheap.
"""
