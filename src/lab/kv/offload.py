"""Elastic loading *(our design of the paper's mechanism)*: the full KV stays in host memory (pinned on a CUDA
machine); a device-side buffer of ``S`` slots per layer holds the selected rows, and each step copies only the rows
that entered the set into the slots of the rows that left it (SpeContext abstract: up to 90% less transfer).
Copies go on a side CUDA stream (``non_blocking``) so they can overlap the previous layer's compute; on CPU the
same code runs synchronously, which is what the tests pin. Attention is invariant to the order of its keys (no
mask in decoding), so slots need not be sorted: :attr:`slots` maps each slot to its token (the float sums do
depend on the order: 2.4e-7 max logit difference vs the sorted gather on the tiny test Llama; bitwise equal while
the set only grows, i.e. budget >= context, since slots then fill in token order).

* :class:`ElasticKV`: one layer's buffers with their own diff (standalone);
* :func:`slot_plan` + :class:`ElasticCache`: the decode path (``lab.kv.selective.SelectiveKV(elastic=True)``): one
  plan per step for all layers, copies from the target's cache, or from :func:`host_cache` (full KV in host
  memory, pinned on CUDA) with asynchronous per-layer prefetch;
* :func:`placement` / :func:`place_cache`: :mod:`lab.kv.memory`'s GPU-vs-CPU decision for a model and a prefill.
"""

from __future__ import annotations

import torch


class ElasticKV:
    """Device buffers ``(B, KVH, S, D)`` for K and V of one layer, refilled from host tensors row by row."""

    def __init__(self, batch: int, kv_heads: int, slots: int, head_dim: int, dtype, device):
        self.device = torch.device(device)
        self.k = torch.zeros(batch, kv_heads, slots, head_dim, dtype=dtype, device=self.device)
        self.v = torch.zeros_like(self.k)
        self.slots = torch.full((batch, slots), -1, dtype=torch.long)      # token held by each slot (-1: empty)
        self.copied = 0                                                     # rows moved host -> device, total
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def load(self, host_k: torch.Tensor, host_v: torch.Tensor, selected: torch.Tensor) -> int:
        """Make the buffer hold exactly the tokens ``selected`` (B, S') with S' <= S; ``host_k``/``host_v``
        ``(B, KVH, L, D)`` in host memory. Returns the rows copied this call."""
        moved = 0
        for b in range(selected.shape[0]):
            want = selected[b].cpu()
            have = self.slots[b]
            keep = torch.isin(have, want)                                   # (S,) slots whose token stays
            new = want[~torch.isin(want, have)]                             # tokens to copy in
            free = (~keep).nonzero().flatten()[: len(new)]                  # slots to overwrite
            if len(new):
                ctx = torch.cuda.stream(self.stream) if self.stream is not None else _null()
                with ctx:
                    rows_k = host_k[b][:, new]                              # (KVH, n, D)
                    rows_v = host_v[b][:, new]
                    self.k[b][:, free.to(self.device)] = rows_k.to(self.device, non_blocking=True)
                    self.v[b][:, free.to(self.device)] = rows_v.to(self.device, non_blocking=True)
            have[free] = new
            have[(~keep).nonzero().flatten()[len(new):]] = -1               # a smaller set empties the rest
            moved += len(new)
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        self.copied += moved
        return moved

    def view(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(k, v, valid)``: the buffers and a (B, S) mask of filled slots."""
        return self.k, self.v, self.slots >= 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------------------ the decode path
class SlotPlan:
    """One step's copy list, shared by every layer (SpeContext's one set serves them all): flat ``batch``,
    ``slot`` and ``token`` indices (N,) of the rows that entered the set, and ``tokens`` (B, S) = the token each of
    the first ``S`` slots holds afterwards."""

    def __init__(self, batch, slot, token, tokens):
        self.batch, self.slot, self.token, self.tokens = batch, slot, token, tokens
        self.reload = False                  # set by ElasticCache: the whole set regathered in token order

    @property
    def rows(self) -> int:
        return int(self.token.numel())


def slot_plan(slots: torch.Tensor, filled: int, selected: torch.Tensor) -> SlotPlan:
    """Diff the set ``slots[:, :filled]`` (B, C) held in the buffers against ``selected`` (B, S): the rows that
    entered go to the slots freed by the rows that left, then to slots ``filled..S-1`` while the set grows
    (``length <= budget``: every token is selected). A set smaller than ``filled`` (a new prompt) reloads from
    slot 0. ``slots`` is updated in place (CPU, long)."""
    sel = selected.cpu()
    n = sel.shape[1]
    if n > slots.shape[1]:
        raise ValueError(f"selected {n} rows but the buffers hold {slots.shape[1]} slots")
    if n < filled:                                          # shrinking set: start over
        slots[:, :filled] = -1
        filled = 0
    bs, ss, ts = [], [], []
    for b in range(sel.shape[0]):
        want, have = sel[b], slots[b, :filled]
        keep = torch.isin(have, want)                                               # (filled,)
        new = want[~torch.isin(want, have)]                                         # (n_new,)
        free = torch.cat([(~keep).nonzero().flatten(), torch.arange(filled, n)])    # (n_new,) slots to fill
        if len(free) != len(new):                                                   # duplicates in ``selected``
            raise ValueError(f"batch row {b}: selected indices must be distinct")
        slots[b, free] = new
        bs.append(torch.full_like(new, b))
        ss.append(free)
        ts.append(new)
    return SlotPlan(torch.cat(bs), torch.cat(ss), torch.cat(ts), slots[:, :n].clone())


def _flat(batch, heads: int, length: int, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Offsets (N * KVH,) of rows ``(batch[i], h, index[i])`` in a (B, KVH, length, D) tensor viewed as rows."""
    h = torch.arange(heads, device=rows.device)
    return ((batch.to(rows.device)[:, None] * heads + h[None]) * length + index.to(rows.device)[:, None]).flatten()


class ElasticCache:
    """Per layer, persistent K/V buffers (B, KVH, budget, D) of the selected rows, refilled each decoding step with
    only the rows that entered the set (:func:`slot_plan`, computed once per step by :meth:`begin`). This replaces
    gathering all ``budget`` rows in every layer (26% of a SmolLM2 step at 8k context, batch 8, B = 1024 on CPU;
    docs/measurements.md). Rows come from the target's full cache (``key``/``value`` handed to attention) or, when
    ``host`` is a :func:`host_cache`, from its (pinned) host store: on CUDA those copies run on a side stream with
    ``non_blocking`` while the previous layer computes, an event per layer orders them before attention reads.

    ``copied``: rows moved in total (summed over layers; a row is a KVH x D vector of K and one of V);
    ``gathered``: what gathering the whole set in every layer would have moved (B x S per layer per step).
    """

    def __init__(self, layers: int, capacity: int, host=None, reload_above: float | None = None):
        self.layers, self.capacity, self.host = layers, capacity, host
        # *(our design)* a step whose changed fraction exceeds ``reload_above`` regathers the whole set in token
        # order (one index_select straight into the buffer) instead of scattering the changed rows: on CPU a
        # scatter costs a gather and a copy, so it only pays below ~40% changed (30 SmolLM2 layers, 8k x 8,
        # B = 1024, 1 thread: 5% -> 21 ms vs 66 ms gather, 40% -> 97 vs 71 ms, 100% -> 173 vs 79 ms). From host
        # memory every row moved is a transfer, so the default there is never (1.0).
        self.reload_above = (1.0 if host is not None else 0.4) if reload_above is None else reload_above
        self.reloads = 0                                        # steps that regathered the whole set
        self.k: list[torch.Tensor | None] = [None] * layers
        self.v: list[torch.Tensor | None] = [None] * layers
        self.slots: torch.Tensor | None = None                  # (B, C) token per slot, -1 empty
        self.filled = 0
        self.plan: SlotPlan | None = None
        self.copied = self.gathered = 0
        self._cuda = host is not None and host.device.type == "cuda"
        self.stream = torch.cuda.Stream(host.device) if self._cuda else None
        self._events: list = [None] * layers                  # prefetch done, not yet waited by attention
        self._staged: list = [None] * layers                  # prefetch done (guards the staging buffer's reuse)
        self._offsets = None                                   # this step's flat copy offsets (same every layer)
        self._staging: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * layers

    def begin(self, selected: torch.Tensor) -> SlotPlan:
        """Plan this step's copies for the set ``selected`` (B, S); with a host store, start layer 0's prefetch."""
        if self.slots is None or self.slots.shape[0] != selected.shape[0]:
            self.slots = torch.full((selected.shape[0], self.capacity), -1, dtype=torch.long)
            self.filled = 0
        self.plan = slot_plan(self.slots, self.filled, selected)
        n, sel = selected.shape[1], selected.cpu()
        self.plan.reload = self.plan.rows > self.reload_above * sel.numel() and self.filled == n
        if self.plan.reload:                                    # the whole set, in token order (= the gather)
            self.slots[:, :n] = sel
            b = sel.shape[0]
            self.plan = SlotPlan(torch.arange(b).repeat_interleave(n), torch.arange(n).repeat(b), sel.flatten(),
                                 sel.clone())
            self.plan.reload = True
            self.reloads += 1
        self._offsets = None
        self.filled = n
        self._tokens_dev = None
        if self.host is not None:
            if self.stream is not None:                         # buffers were read by last step's kernels
                self.stream.wait_stream(torch.cuda.current_stream(self.host.device))
            self._prefetch(0)
        return self.plan

    def _alloc(self, layer: int, like: torch.Tensor, heads: int, dim: int, device) -> None:
        # ``empty``: no kernel that a side-stream copy could race; slots past ``filled`` are never read
        if self.k[layer] is None or self.k[layer].shape[0] != self.slots.shape[0]:
            shape = (self.slots.shape[0], heads, self.capacity, dim)
            self.k[layer] = torch.empty(shape, dtype=like.dtype, device=device)
            self.v[layer] = torch.empty_like(self.k[layer])
            if self.stream is not None:                      # written on the side stream, read on the default one
                self.k[layer].record_stream(self.stream)
                self.v[layer].record_stream(self.stream)

    def _copy(self, layer: int, src_k, src_v, length: int) -> None:
        """Buffer slots of every plan row <- ``src`` (B, KVH, length, D), same device. Every layer has the same
        shapes, so the flat offsets are computed once per step (first layer) and reused."""
        p, buf = self.plan, self.k[layer]
        b, h, c, d = buf.shape
        key = (length, h, c, buf.device)
        if self._offsets is None or self._offsets[0] != key:
            self._offsets = (key, _flat(p.batch, h, c, buf, p.slot), _flat(p.batch, h, length, src_k, p.token))
        _, dst, src = self._offsets                                                       # (N * KVH,) each
        self.k[layer].view(-1, d).index_copy_(0, dst, src_k.reshape(-1, d).index_select(0, src))
        self.v[layer].view(-1, d).index_copy_(0, dst, src_v.reshape(-1, d).index_select(0, src))

    def _prefetch(self, layer: int) -> None:
        """Host rows of layer ``layer`` older than the current token: gathered on the host into pinned staging,
        then ``non_blocking`` to the device buffers on the side stream; an event marks them done."""
        if layer >= self.layers or self.plan is None:
            return
        hl = self.host.layers[layer]
        if hl.keys is None:
            return
        p = self.plan
        old = (p.token < hl.length).nonzero().flatten()                      # rows the host store already holds
        kh, vh = hl.store_k, hl.store_v                                      # (B, KVH, cap, D) host
        self._alloc(layer, kh, kh.shape[1], kh.shape[3], self.host.device)
        if not len(old):
            return
        if hl.event is not None:                                             # last step's D2H row copy landed
            hl.event.synchronize()
        d, h, cap = kh.shape[3], kh.shape[1], kh.shape[2]
        src = _flat(p.batch[old], h, cap, kh, p.token[old])                  # (n * KVH,) host offsets
        buf = self.k[layer]
        dst = _flat(p.batch[old], h, buf.shape[2], kh, p.slot[old])           # computed on the host
        if self._staged[layer] is not None:                                  # last step's copy out of staging
            self._staged[layer].synchronize()
        stage = self._staging[layer]
        if stage is None or stage[0].shape[0] < len(src):
            size = buf.shape[0] * h * self.capacity
            stage = tuple(torch.empty(size, d, dtype=kh.dtype, pin_memory=self._cuda) for _ in range(2))
            self._staging[layer] = stage
        sk, sv = stage[0][:len(src)], stage[1][:len(src)]
        torch.index_select(kh.view(-1, d), 0, src, out=sk)                   # host gather (CPU)
        torch.index_select(vh.view(-1, d), 0, src, out=sv)
        ctx = torch.cuda.stream(self.stream) if self.stream is not None else _null()
        with ctx:
            dst = dst.to(buf.device, non_blocking=self._cuda)
            self.k[layer].view(-1, d).index_copy_(0, dst, sk.to(buf.device, non_blocking=self._cuda))
            self.v[layer].view(-1, d).index_copy_(0, dst, sv.to(buf.device, non_blocking=self._cuda))
            if self.stream is not None:
                self._events[layer] = self._staged[layer] = torch.cuda.Event()
                self._events[layer].record(self.stream)

    def layer_kv(self, layer: int, key: torch.Tensor, value: torch.Tensor):
        """The buffers of ``layer`` holding this step's set: ``(k, v, tokens)`` with k/v (B, KVH, S, D) in slot order
        and ``tokens`` (B, S) the token of each slot (for a mask). ``key``/``value`` (B, KVH, L, D): the full cache
        after this step's update (host views when a host store is used)."""
        p, n = self.plan, self.filled
        if self.host is None:
            self._alloc(layer, key, key.shape[1], key.shape[3], key.device)
            if p.reload and n == self.capacity:                 # one pass, straight into the buffers
                b, h, length, d = key.shape
                off = ((torch.arange(b, device=key.device)[:, None, None] * h
                        + torch.arange(h, device=key.device)[None, :, None]) * length
                       + self._tokens(key.device)[:, None, :]).flatten()                 # (B * KVH * S,)
                torch.index_select(key.reshape(-1, d), 0, off, out=self.k[layer].view(-1, d))
                torch.index_select(value.reshape(-1, d), 0, off, out=self.v[layer].view(-1, d))
            else:
                self._copy(layer, key, value, key.shape[2])
        else:
            hl = self.host.layers[layer]
            ev = self._events[layer]
            if ev is not None:
                torch.cuda.current_stream(self.host.device).wait_event(ev)     # prefetched rows before attention
                self._events[layer] = None
            self._prefetch(layer + 1)                                           # overlaps this layer's compute
            cur = (p.token >= hl.length - hl.last_k.shape[2]).nonzero().flatten()   # rows written this step
            if len(cur):
                start = hl.length - hl.last_k.shape[2]
                self._copy_current(layer, hl.last_k, hl.last_v, start, cur)
        self.copied += p.rows
        self.gathered += p.tokens.numel()
        return self.k[layer][:, :, :n], self.v[layer][:, :, :n], self._tokens(self.k[layer].device)

    def _tokens(self, device) -> torch.Tensor:
        """This step's (B, S) token per slot on ``device`` (moved once per step)."""
        if self._tokens_dev is None or self._tokens_dev.device != torch.device(device):
            self._tokens_dev = self.plan.tokens.to(device)
        return self._tokens_dev

    def _copy_current(self, layer, last_k, last_v, start: int, rows: torch.Tensor) -> None:
        p, buf = self.plan, self.k[layer]
        b, h, c, d = buf.shape
        dst = _flat(p.batch[rows], h, c, buf, p.slot[rows])
        src = _flat(p.batch[rows], h, last_k.shape[2], last_k, p.token[rows] - start)
        buf.view(-1, d).index_copy_(0, dst, last_k.reshape(-1, d).index_select(0, src))
        self.v[layer].view(-1, d).index_copy_(0, dst, last_v.reshape(-1, d).index_select(0, src))


# ------------------------------------------------------------------------------------------ host KV store
def _host_layer_class():
    from transformers.cache_utils import DynamicLayer

    class HostLayer(DynamicLayer):
        """The full K/V of one layer in preallocated host memory (pinned when the model runs on CUDA); ``update``
        writes the step's rows there (``non_blocking`` from the GPU, an event marks completion) and keeps them on
        the device as ``last_k``/``last_v`` (attention takes the current token from there, not from the host)."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int, device):
            super().__init__()
            b, h, n, d = keys.shape
            pin = torch.device(device).type == "cuda"
            self.store_k = torch.empty(b, h, capacity, d, dtype=keys.dtype, pin_memory=pin)
            self.store_v = torch.empty(b, h, capacity, d, dtype=keys.dtype, pin_memory=pin)
            self.store_k[:, :, :n].copy_(keys)                   # straight from the device: no pageable copy
            self.store_v[:, :, :n].copy_(values)
            self.length, self.device, self.event = n, torch.device(device), None
            self.last_k, self.last_v = keys[:, :, -1:].clone(), values[:, :, -1:].clone()   # no view: frees the prefill
            self.is_initialized = True
            self.keys, self.values = self.store_k[:, :, :n], self.store_v[:, :, :n]

        def update(self, key_states, value_states, *args, **kwargs):
            t = key_states.shape[2]
            if self.length + t > self.store_k.shape[2]:
                raise RuntimeError(f"host KV store full ({self.store_k.shape[2]} tokens): raise its capacity")
            cuda = key_states.device.type == "cuda"
            self.store_k[:, :, self.length:self.length + t].copy_(key_states, non_blocking=cuda)
            self.store_v[:, :, self.length:self.length + t].copy_(value_states, non_blocking=cuda)
            if cuda:
                self.event = torch.cuda.Event()
                self.event.record()
            self.length += t
            self.last_k, self.last_v = key_states, value_states
            self.keys, self.values = self.store_k[:, :, :self.length], self.store_v[:, :, :self.length]
            return self.keys, self.values

    return HostLayer


def host_cache(cache, extra: int, device=None):
    """A :class:`transformers.Cache` holding ``cache``'s full KV (e.g. a GPU prefill) in host memory, room for
    ``extra`` more tokens; pinned on CUDA. Decode through it only with an elastic selective controller (the
    attention function never reads host tensors directly)."""
    from transformers.cache_utils import Cache

    layer_cls = _host_layer_class()
    layers = []
    for layer in cache.layers:
        dev = device or layer.keys.device
        layers.append(layer_cls(layer.keys, layer.values, layer.keys.shape[2] + extra, dev))
    out = Cache(layers=layers)
    out.device = torch.device(device or cache.layers[0].keys.device)
    return out




# ------------------------------------------------------------------------------------------ placement
def placement(model, tokens: int, batch: int, budget: int, *, dlm_bytes: int = 0, gpu_bytes: int | None = None,
              headroom: float = 0.9, workspace_bytes: int = 0):
    """:func:`lab.kv.memory.place` for ``model`` (its config and parameter bytes) at ``tokens`` per sequence.
    ``gpu_bytes``: default the CUDA device's total memory; without CUDA (and no ``gpu_bytes``) the only device holds
    the KV (``kv_on_gpu`` True: nothing to offload to)."""
    from lab.kv import memory

    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    dtype_bytes = next(model.parameters()).element_size()
    if gpu_bytes is None:
        gpu_bytes = (torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available()
                     else 1 << 62)
    return memory.place(tokens, batch=batch, layers=c.num_hidden_layers, kv_heads=c.num_key_value_heads,
                        head_dim=head_dim, dtype_bytes=dtype_bytes, weight_bytes=weights, dlm_bytes=dlm_bytes,
                        budget=budget, gpu_bytes=gpu_bytes, headroom=headroom, workspace_bytes=workspace_bytes)


def place_cache(model, cache, extra: int, budget: int, **kwargs):
    """The memory model's decision applied to a prefilled ``cache`` (B, KVH, L, D per layer): ``(cache, None, p)``
    when the full KV stays on the device, else ``(None, host_cache(cache, extra), p)`` (then decode with
    ``host=``). ``kwargs``: :func:`placement`'s."""
    keys = cache.layers[0].keys
    p = placement(model, keys.shape[2] + extra, keys.shape[0], budget, **kwargs)
    if p.kv_on_gpu:
        return cache, None, p
    return None, host_cache(cache, extra, device=keys.device), p
