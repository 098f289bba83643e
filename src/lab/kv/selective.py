"""The selective attention layer for transformers 5.24 and the decoding loop that drives it.

A custom attention function, registered as ``lab_selective`` in transformers' ``AttentionInterface`` (and, for the
masks, ``sdpa``'s mask builder under the same name in ``AttentionMaskInterface``), sits where SDPA would. The
target model's ``DynamicCache`` keeps every token's K/V; each attention layer's keys were rotated by RoPE *before*
``cache.update`` wrote them, so gathering rows ``idx`` hands attention keys at their full-sequence positions and the
query keeps its own (the cache length, not the budget, sets ``cache_position``). Prefill (more than one query)
always attends in full. In decoding the :class:`SelectiveKV` controller supplies the rows:

* a *global* selector (SpeContext, StreamingLLM, random, the global oracle) is asked once per step, before the
  target's forward, and its one set serves every layer and every KV head (GQA);
* a *per-layer* selector (Quest, H2O, SnapKV, GemFilter-like, the per-layer oracle) is asked inside each layer
  with that layer's query and keys; ``None`` from it means "attend in full" at that layer.

``select_calls`` / ``layer_calls`` count both, which is what the tests pin (one global call per step).
With ``measure=True`` each decoding layer also computes the current query's full softmax row to record the
attention mass the selected rows capture, the global oracle's set for recall, and the changed-set fraction.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from lab.kv import policy, stats

NAME = "lab_selective"
_REGISTERED = False


def register() -> str:
    """Register the attention function (idempotent) and return its name."""
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(NAME, _attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
        _REGISTERED = True
    return NAME


def _sdpa(*args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``query`` (B, H, Q, D); ``key``/``value`` (B, KVH, L, D): the full cache after this step's update."""
    ctl: SelectiveKV | None = getattr(module, "_lab_kv", None)
    scaling = module.scaling if scaling is None else scaling
    if ctl is None:
        return _sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    layer = module.layer_idx
    if query.shape[2] > 1:                                    # prefill: full attention, optional statistics
        if ctl.prefill_hook is not None:
            ctl.prefill_hook(layer, query, key, scaling)
        return _sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    idx = ctl.indices_for(layer, query, key, scaling)         # (B, S) or None = full
    if ctl.measure or ctl.record_full:
        full = stats.attention_probs(query, key, scaling)[:, :, 0]              # (B, H, L)
        ctl.record(layer, full, idx)
    if idx is None:
        return _sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if ctl.elastic is not None and not getattr(ctl.selector, "per_layer", False):
        k, v, idx = ctl.elastic.layer_kv(layer, key, value)                      # (B, KVH, S, D), slot order
    else:
        k, v = gather_rows(key, idx), gather_rows(value, idx)                    # (B, KVH, S, D)
    if attention_mask is not None:
        mask_idx = idx[:, None, None, :].expand(*attention_mask.shape[:3], idx.shape[1])
        attention_mask = attention_mask.gather(-1, mask_idx)                      # (B, 1, 1, S)
    if ctl.observer is not None:                                                  # H2O: mass on the attended rows
        ctl.observer(layer, stats.attention_probs(query, k, scaling)[:, :, 0], idx)   # (B, H, S)
    return _sdpa(module, query, k, v, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (B, S) of ``x`` (B, KVH, L, D) -> (B, KVH, S, D), by one ``index_select`` over the flattened
    rows (each a contiguous D-vector): on 2 shared CPU cores 2.4 ms vs 25 ms for ``torch.gather`` with an expanded
    index (SmolLM2 shapes, 8k context, batch 8, 1024 rows; gather dominated the selective step before)."""
    b, h, length, d = x.shape
    off = (torch.arange(b, device=x.device)[:, None, None] * (h * length)
           + torch.arange(h, device=x.device)[None, :, None] * length + idx.to(x.device)[:, None, :])   # (B, KVH, S)
    return x.reshape(b * h * length, d).index_select(0, off.flatten()).view(b, h, idx.shape[1], d)


def attention_modules(model) -> list:
    return [layer.self_attn for layer in model.model.layers]


@dataclass
class StepMetrics:
    """Per decoding step (one row per step, averaged over the batch and over layers)."""

    mass_recall: list[float] = field(default_factory=list)     # attention mass on the attended rows
    oracle_recall: list[float] = field(default_factory=list)   # |S ∩ global-oracle top-B| / |oracle|
    changed: list[float] = field(default_factory=list)         # fraction of S not in the previous step's S
    changed_tokens: list[float] = field(default_factory=list)  # rows (summed over layers) elastic loading copies
    attended: list[float] = field(default_factory=list)        # rows attended per layer (mean)


class SelectiveKV:
    """Controller bound to one target model: which rows each decoding layer attends.

    ``selector``: an object of :mod:`lab.kv.baselines` (or SpeContext's :class:`~lab.kv.retrieval_head.HeadSelector`)
    with ``per_layer`` and ``select(ctx)`` / ``select_layer(layer, query, key, scaling, ctx)``; ``None`` = full KV.

    ``elastic=True`` (global selectors only): each layer keeps a persistent buffer of the selected rows and a step
    copies only the rows that entered the set (:class:`lab.kv.offload.ElasticCache`, planned once per step) instead
    of gathering all of them in every layer; attention then reads its keys in slot order, not sorted (softmax and
    the weighted sum are order-invariant up to float summation order: allclose, not bitwise; tested). ``host``: a
    :func:`lab.kv.offload.host_cache` the full KV lives in (pinned CPU memory on CUDA; implies ``elastic``).
    ``reload_above``: the changed fraction above which a step regathers the whole set (ElasticCache's).
    Default (``elastic=False``): the gather path, unchanged.
    """

    def __init__(self, model, budget: int, sinks: int = 4, window: int = 64, measure: bool = False,
                 elastic: bool = False, host=None, reload_above: float | None = None):
        register()
        self.model, self.budget, self.sinks, self.window, self.measure = model, budget, sinks, window, measure
        self.layers = len(attention_modules(model))
        self.elastic = None
        if elastic or host is not None:
            from lab.kv.offload import ElasticCache

            if host is not None and measure:
                raise ValueError("measure=True reads every key of the full KV: not with the KV in host memory")
            self.elastic = ElasticCache(self.layers, budget, host, reload_above)
        self.selector = None
        self.prefill_hook = None
        self.observer = None
        self.record_full = False
        self.select_calls = self.layer_calls = self.steps = 0
        self._global: torch.Tensor | None = None
        self._prev: list[torch.Tensor | None] = [None] * self.layers
        self._layer_probs: torch.Tensor | None = None          # (B, L) layer-averaged, this step
        self._layer_sets: list[torch.Tensor | None] = [None] * self.layers
        self._mass: list[float] = []
        self.metrics = StepMetrics()
        self.last_full_probs: torch.Tensor | None = None
        model.set_attn_implementation(NAME)
        for m in attention_modules(model):
            m._lab_kv = self

    def detach(self) -> None:
        for m in attention_modules(self.model):
            m._lab_kv = None
        self.model.set_attn_implementation("sdpa")

    # ---------------------------------------------------------------- used by the attention function
    def indices_for(self, layer: int, query, key, scaling):
        sel = self.selector
        if sel is None:
            return None
        if getattr(sel, "per_layer", False):
            self.layer_calls += 1
            return sel.select_layer(layer, query, key, scaling, self)
        return self._global

    def record(self, layer: int, full: torch.Tensor, idx: torch.Tensor | None) -> None:
        """``full`` (B, H, L): this layer's softmax row of the current query over every key."""
        p = full.mean(dim=1)                                                      # (B, L)
        self._layer_probs = p if self._layer_probs is None else self._layer_probs + p
        if not self.measure:
            return
        length = p.shape[1]
        if idx is None:
            idx = torch.arange(length, device=p.device).expand(p.shape[0], length)
        self._layer_sets[layer] = idx
        self._mass.append(float(p.gather(1, idx).sum(-1).mean()))

    # ---------------------------------------------------------------- the decoding step
    def context(self, input_ids: torch.Tensor, length: int) -> dict:
        return {"input_ids": input_ids, "length": length, "step": self.steps, "budget": self.budget,
                "sinks": self.sinks, "window": self.window}

    def step(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        """One decoding step of ``input_ids`` (B, 1) against ``cache``; returns next-token logits (B, V)."""
        length = cache.get_seq_length() + 1                    # keys this step attends (its own included)
        ctx = self.context(input_ids, length)
        sel = self.selector
        self._layer_probs, self._mass = None, []
        self._layer_sets = [None] * self.layers
        if sel is not None and getattr(sel, "needs_full_pass", False):   # global oracle: look, then select
            saved, self.selector, self.record_full, measure = sel, None, True, self.measure
            self.measure = False
            with torch.no_grad():
                self.model(input_ids=input_ids, cache=cache, use_cache=True)
            cache.crop(-1)                                       # drop the look-ahead row
            ctx["full_probs"] = self._layer_probs / self.layers                    # (B, L)
            self.selector, self.record_full, self.measure = saved, False, measure
            self._layer_probs = None
        if self.elastic is not None and (sel is None or getattr(sel, "per_layer", False)
                                         or getattr(sel, "needs_full_pass", False)):
            raise ValueError("elastic loading serves one global set per step: a global selector "
                             f"(not {getattr(sel, 'name', sel)!r})")
        if sel is not None and not getattr(sel, "per_layer", False):
            self.select_calls += 1
            self._global = sel.select(ctx)                                       # (B, S), once per step
            if self.elastic is not None:
                self.elastic.begin(self._global)                                 # one copy plan for every layer
        with torch.no_grad():
            out = self.model(input_ids=input_ids, cache=cache, use_cache=True)
        if self.measure:
            self._finish(length)
        self.steps += 1
        return out.logits[:, -1].float()                                         # (B, V)

    def _finish(self, length: int) -> None:
        avg = self._layer_probs / self.layers                                    # (B, L)
        oracle = policy.compose(avg, length, self.budget, self.sinks, self.window)   # (B, S)
        rec, changed, moved, attended = [], [], 0.0, []
        for layer, idx in enumerate(self._layer_sets):
            rec.append(float(policy.set_recall(idx, oracle).mean()))
            attended.append(idx.shape[1])
            prev = self._prev[layer]
            if prev is not None:
                frac = policy.changed_fraction(prev, idx)                         # (B,)
                changed.append(float(frac.mean()))
                moved += float((frac * idx.shape[1]).mean())
            self._prev[layer] = idx
        m = self.metrics
        m.mass_recall.append(sum(self._mass) / len(self._mass))
        m.oracle_recall.append(sum(rec) / len(rec))
        m.attended.append(sum(attended) / len(attended))
        if changed:
            m.changed.append(sum(changed) / len(changed))
            m.changed_tokens.append(moved)


def prefill(model, input_ids: torch.Tensor, hook=None):
    """Run the prompt ``input_ids`` (B, L) with full KV; ``hook(layer, query, key, scaling)`` sees each layer's
    RoPE'd states (prefill statistics). Returns ``(cache, last_logits (B, V))``."""
    from transformers import DynamicCache

    register()
    cache = DynamicCache(config=model.config)
    mods = attention_modules(model)
    ctl = _HookOnly(hook) if hook is not None else None
    old = model.config._attn_implementation
    if ctl is not None:
        model.set_attn_implementation(NAME)
        for m in mods:
            m._lab_kv = ctl
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, cache=cache, use_cache=True)
    finally:
        if ctl is not None:
            for m in mods:
                m._lab_kv = None
            model.set_attn_implementation(old)
    return cache, out.logits[:, -1].float()


class _HookOnly:
    """A controller that only observes prefill."""

    measure = record_full = False
    observer = None

    def __init__(self, hook):
        self.prefill_hook = hook


def copy_cache(cache):
    """An independent copy of a prefilled cache: each method decodes from the same prefill."""
    return copy.deepcopy(cache)


def decode(model, cache, tokens: torch.Tensor, selector=None, *, budget: int, sinks: int = 4, window: int = 64,
           measure: bool = False, greedy_after: int | None = None, progress: bool = False, desc: str = "decode",
           elastic: bool = False, host=None, reload_above: float | None = None):
    """Feed ``tokens`` (B, T) one at a time (teacher forcing); with ``greedy_after`` = n, feed the first n and then
    ``T - n`` greedy tokens. Returns ``(logits (B, T, V) fp32, fed tokens (B, T), controller)``. ``elastic`` /
    ``host``: see :class:`SelectiveKV` (``host`` replaces ``cache``: pass ``host_cache(cache, T)``)."""
    from tqdm.auto import tqdm

    ctl = SelectiveKV(model, budget, sinks, window, measure, elastic=elastic, host=host, reload_above=reload_above)
    cache = host if host is not None else cache
    ctl.selector = selector
    if selector is not None and hasattr(selector, "bind"):
        selector.bind(ctl)
    fed = tokens.clone()
    out = []
    try:
        for t in tqdm(range(tokens.shape[1]), desc=desc, disable=not progress, leave=False):
            logits = ctl.step(fed[:, t:t + 1], cache)                            # (B, V)
            out.append(logits)
            if greedy_after is not None and t + 1 >= greedy_after and t + 1 < fed.shape[1]:
                fed[:, t + 1] = logits.argmax(-1)
    finally:
        ctl.detach()
    return torch.stack(out, dim=1), fed, ctl
