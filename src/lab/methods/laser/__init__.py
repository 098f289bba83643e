"""LaSER (Jin et al., SIGIR 2026, arXiv 2603.01425): explicit reasoning internalised into a dense retriever's
latent space.

``config`` (the ``laser`` params schema), ``data`` (reasoning generation, DL20 training examples with the DL19
leak check, the DL19 candidate pool), ``train`` (variants through :func:`lab.train.fit`), ``evaluate`` (dense
retrieval over the pool, the K sweep, rewrite-then-retrieve, paired tests) and ``report`` (Table 5 layout).
This package imports none of them: importing it is cheap.
"""
