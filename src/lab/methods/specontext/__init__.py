"""SpeContext (arXiv 2512.00722, ASPLOS 2026): a distilled LM's retrieval head picks, once per decoding step, the KV
entries every layer of the target attends to. No public code exists: this is the first open implementation, and
every choice the abstract does not fix is marked *(our design)* and is a ``specontext`` parameter.

``config`` (schema), ``dlm`` (the layer-reduced DLM, distilled through :func:`lab.train.fit`), ``heads`` (head
ranking, pruning), ``evaluate`` (fidelity and needles vs the baselines of :mod:`lab.kv.baselines`), ``needles``
(passkey and RULER-style tasks on real passages). Importing this package imports none of them.
"""
