"""Selective KV for decoding: the target keeps its full KV cache; at each decoding step a selector picks which
entries attention reads, and :mod:`lab.kv.selective` gathers them (RoPE was applied when the keys were written, so
gathered keys keep their full-sequence positions).

Modules: ``policy`` (budget composition: sinks + recent window + top scores), ``stats`` (blockwise attention
statistics, never an L x L matrix), ``baselines`` (StreamingLLM, H2O, SnapKV, Quest, random, GemFilter-like,
oracles), ``selective`` (the attention function, the decode loop, fidelity measurements), ``retrieval_head``
(SpeContext's distilled LM and its pruned retrieval head), ``memory`` (the GPU/CPU placement model, pure), ``offload`` (elastic loading: only changed rows copied to the device; the host KV store; placement), ``synthetic``
(random K/V standing in for a prefill, for the benches).
Importing this package is cheap: each module imports torch itself.
"""
