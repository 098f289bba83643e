"""NanoVDR (Liu, Zhang & Xiao, arXiv 2603.12824): wiring of the three stages.

1. :mod:`~lab.methods.nanovdr.index` (``build_index``): render each pool passage as a page image, let the
   frozen teacher embed every page once (the index) and every training / validation / test query once (the
   targets), cached on disk; also the teacher's top-K pages of the *training* pool per training query (for
   the document-aware baselines).
2. :mod:`~lab.methods.nanovdr.distill` (``distill``): train one student under one objective
   (:mod:`lab.losses.distill`) on query text only; best epoch by validation loss; saved as safetensors; resumable.
3. :mod:`~lab.methods.nanovdr.evaluate` (``evaluate``): student vs teacher vs BM25 over the same test page pool
   (nDCG@10 / nDCG@5, retention = student / teacher, paired test against the teacher).

Paper profile: ``cfg.benchmarks`` (ViDoRe v1/v2/v3 sets) adds a teacher page index per set to step 1
and ``evaluate_benchmarks`` (NDCG@5, retention as the paper defines it), in :mod:`~lab.methods.nanovdr.vidore`;
with no benchmarks (smoke, tiny) nothing changes. :mod:`~lab.methods.nanovdr.config` is the ``nanovdr``
params schema. Imports go one way: evaluate, distill -> index -> vidore -> layers (and every module -> config).

Data split (smoke): test = ``eval_dataset`` (DL19) queries over its page pool; training queries = the
unlabelled MS MARCO dev-subset (after a held-out validation slice) + ``train_dataset`` (DL20) queries;
the document-aware objectives see the DL20 page pool's teacher embeddings, never the test pool.
No DL19 query ever enters training (checked). ``cfg`` is the ``nanovdr`` section (NanoVDRConfig).

This package imports none of its modules: importing it is cheap.
"""
