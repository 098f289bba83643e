"""SpeContext's distilled LM (DLM) and its retrieval head (arXiv 2512.00722: "a lightweight retrieval head built
from the DLM's head-level attention weights"). Everything below beyond that sentence is *(our design)*:

* :func:`build_dlm`: a layer-reduced copy of the target (same tokenizer): decoder layers ``layers`` of the target,
  its embedding, final norm and LM head; the embedding frozen and shared (SmolLM2 ties it with the LM head).
* :func:`rank_heads`: each DLM head scored by how much of the target's layer- and head-averaged attention mass its
  own top-``budget`` set captures on calibration rows, sinks and the recent window excluded from both.
* :class:`RetrievalHead`: the DLM pruned to what the kept heads need: the embedding, the full DLM layers below the
  highest kept head's layer, and at that layer only the input norm and the kept heads' Q/K rows. Heads are
  combined by max over their softmax rows; its scores equal the DLM heads' own (tested, allclose).
* :class:`HeadSelector`: the global selector: once per decoding step, one incremental step of the head on the
  token the target is about to process, scores over every earlier token (generated ones too), then
  :func:`lab.kv.policy.compose`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lab.kv import policy, stats


def build_dlm(target, layers: list[int] | tuple[int, ...], freeze_embedding: bool = True):
    """A copy of ``target`` (a ``*ForCausalLM``) keeping decoder ``layers`` (target indices, ascending)."""
    n = target.config.num_hidden_layers
    if not layers or sorted(set(layers)) != list(layers) or layers[0] < 0 or layers[-1] >= n:
        raise ValueError(f"dlm layers must be ascending distinct indices in 0..{n - 1}, got {list(layers)}")
    dlm = copy.deepcopy(target)
    dlm.model.layers = nn.ModuleList([dlm.model.layers[i] for i in layers])
    for j, layer in enumerate(dlm.model.layers):
        layer.self_attn.layer_idx = j
    dlm.config.num_hidden_layers = len(layers)
    if getattr(dlm.config, "layer_types", None):
        dlm.config.layer_types = [dlm.config.layer_types[i] for i in layers]
    dlm.config.lab_dlm_layers = list(layers)
    dlm.model.embed_tokens.weight.requires_grad_(not freeze_embedding)
    return dlm


def trainable_state(dlm) -> dict[str, torch.Tensor]:
    """What distillation changes (the embedding excluded when frozen): saved by the dlm stage."""
    return {k: v for k, v in dlm.state_dict().items() if "embed_tokens" not in k and "lm_head" not in k}


def param_counts(module: nn.Module, embedding: nn.Module | None) -> dict[str, int]:
    """Parameters of ``module`` with and without ``embedding`` (tied LM heads counted once)."""
    seen = {id(p): p for p in module.parameters()}
    total = sum(p.numel() for p in seen.values())
    emb = sum(p.numel() for p in embedding.parameters() if id(p) in seen) if embedding is not None else 0
    return {"with_embedding": total, "without_embedding": total - emb}


# ----------------------------------------------------------------------------------------------- head ranking
def capture_rows(model, input_ids: torch.Tensor, rows: torch.Tensor, per_head: bool) -> torch.Tensor:
    """Softmax rows of query positions ``rows`` (R,) at every layer: ``(layers, B, H, R, L)`` if ``per_head``, else
    the layer- and head-mean ``(B, R, L)``. One prefill; rows computed blockwise (:mod:`lab.kv.stats`)."""
    from lab.kv import selective

    out: list[torch.Tensor] = []

    def hook(layer, query, key, scaling):
        p = stats.attention_probs(query[:, :, rows], key, scaling, positions=rows)   # (B, H, R, L)
        out.append(p if per_head else p.mean(1))

    selective.prefill(model, input_ids, hook=hook)
    return torch.stack(out) if per_head else torch.stack(out).mean(0)


def middle_mask(rows: torch.Tensor, length: int, sinks: int, window: int) -> torch.Tensor:
    """``(R, L)`` True where key ``j`` is neither a sink nor in row ``r``'s recent window nor in its future."""
    j = torch.arange(length)[None, :]
    return (j >= sinks) & (j <= rows[:, None] - window)


def head_capture(head_probs: torch.Tensor, target_probs: torch.Tensor, rows: torch.Tensor, budget: int, sinks: int,
                 window: int) -> torch.Tensor:
    """Per head, the mean over rows (and batch) of the target mass its top-(budget - sinks - window) middle keys
    capture, over the target's whole middle mass. ``head_probs`` (..., B, H, R, L), ``target_probs`` (B, R, L);
    returns (..., H)."""
    mask = middle_mask(rows, target_probs.shape[-1], sinks, window)                  # (R, L)
    k = max(1, budget - sinks - window)
    scored = head_probs.masked_fill(~mask, float("-inf"))                             # (..., B, H, R, L)
    top = scored.topk(min(k, scored.shape[-1]), dim=-1).indices                       # (..., B, H, R, k)
    tgt = (target_probs * mask).unsqueeze(-3).expand(*head_probs.shape)               # (..., B, H, R, L)
    got = tgt.gather(-1, top).sum(-1)                                                 # (..., B, H, R)
    total = (target_probs * mask).sum(-1).clamp_min(1e-12).unsqueeze(-3)              # (B, 1, R)
    return (got / total).mean(dim=(-1, -3))                                           # (..., H)


def rank_heads(dlm, target, texts_ids: list[torch.Tensor], rows: int, budget: int, sinks: int, window: int):
    """``(layers, heads)`` capture scores of every DLM head, averaged over calibration sequences ``texts_ids``
    (each (1, L)), using their last ``rows`` positions as queries."""
    total = None
    for ids in texts_ids:
        r = torch.arange(ids.shape[1] - rows, ids.shape[1])
        tgt = capture_rows(target, ids, r, per_head=False)                           # (1, R, L)
        dl = capture_rows(dlm, ids, r, per_head=True)                                # (layers, 1, H, R, L)
        s = head_capture(dl, tgt, r, budget, sinks, window)                          # (layers, H)
        total = s if total is None else total + s
    return total / len(texts_ids)


def best_heads(scores: torch.Tensor, n: int) -> list[tuple[int, int]]:
    """The ``n`` best ``(layer, head)`` pairs of ``scores`` (layers, H), best first."""
    flat = scores.flatten().topk(n).indices.tolist()
    return [(i // scores.shape[1], i % scores.shape[1]) for i in flat]


# ----------------------------------------------------------------------------------------------- growing buffers
def append_rows(buf: torch.Tensor | None, length: int, rows: torch.Tensor, dim: int) -> torch.Tensor:
    """``rows`` written after the first ``length`` entries of ``buf`` along ``dim``, in place while its capacity
    lasts, else into a new buffer with twice the room (amortised O(1) per row). Returns the buffer.

    Why: appending by ``torch.cat`` allocates the whole cache again each decoding step; at 8k x batch 8 one of
    the head's layers is 2 x 50 MB, above glibc's 32 MB mmap threshold, so every step mapped fresh pages and
    faulted them in: SpeContext decoded at ~1.05x full KV in bench/specontext_throughput.py, ~1.75x with
    ``MALLOC_MMAP_THRESHOLD_`` raised (2026-12-02, 2 cores)."""
    need = length + rows.shape[dim]
    if buf is None or buf.shape[dim] < need:
        shape = list(rows.shape)
        shape[dim] = max(need, 2 * (buf.shape[dim] if buf is not None else 0), 64)
        grown = rows.new_empty(shape)
        if buf is not None and length:
            grown.narrow(dim, 0, length).copy_(buf.narrow(dim, 0, length))
        buf = grown
    buf.narrow(dim, length, rows.shape[dim]).copy_(rows)
    return buf


def growing_cache(config):
    """A ``DynamicCache`` whose layers append into growing buffers (:func:`append_rows`) instead of ``torch.cat``;
    ``keys`` / ``values`` are views of the filled part, so attention sees exactly what ``DynamicCache`` returns."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._kbuf = self._vbuf = None
            n = self.keys.shape[-2] if self.keys.numel() else 0
            self._kbuf = append_rows(self._kbuf, n, key_states, -2)
            self._vbuf = append_rows(self._vbuf, n, value_states, -2)
            self.keys = self._kbuf[..., : n + key_states.shape[-2], :]                      # (B, KVH, L, D) view
            self.values = self._vbuf[..., : n + key_states.shape[-2], :]
            return self.keys, self.values

    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache


# ----------------------------------------------------------------------------------------------- pruned head
class RetrievalHead(nn.Module):
    """The DLM pruned to ``heads`` [(dlm_layer, query_head)]: embedding, DLM layers below the top kept layer, and
    per kept layer the input norm + that head's Q rows and its KV head's K rows. Scores are the max over heads of
    each head's softmax row of the current query over every cached key (B, L)."""

    def __init__(self, dlm, heads: list[tuple[int, int]]):
        super().__init__()
        cfg = dlm.config
        self.heads = sorted(heads)
        self.top = max(layer for layer, _ in self.heads)
        self.embed = dlm.model.embed_tokens
        self.rotary = dlm.model.rotary_emb
        self.body = nn.ModuleList(dlm.model.layers[: self.top])
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.groups = cfg.num_attention_heads // cfg.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.config = copy.deepcopy(cfg)
        self.config.num_hidden_layers = self.top
        self.norms = nn.ModuleDict()
        self.q = nn.ParameterDict()
        self.k = nn.ParameterDict()
        d = self.head_dim
        for layer, head in self.heads:
            attn = dlm.model.layers[layer].self_attn
            if attn.q_proj.bias is not None:
                raise NotImplementedError("attention biases (Qwen2) are not pruned yet")
            kv = head // self.groups
            self.norms[str(layer)] = dlm.model.layers[layer].input_layernorm
            self.q[f"{layer}_{head}"] = nn.Parameter(attn.q_proj.weight[head * d:(head + 1) * d].detach().clone())
            self.k[f"{layer}_{head}"] = nn.Parameter(attn.k_proj.weight[kv * d:(kv + 1) * d].detach().clone())
        self.reset()

    def reset(self) -> None:
        self.cache = None
        self.length = 0
        # head -> RoPE'd keys (B, >= L, D); the first ``length`` rows are filled (:func:`append_rows`)
        self.key_buffers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Append ``input_ids`` (B, T) and return the scores of its last token over every token so far (B, L)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        if self.cache is None:
            self.cache = growing_cache(self.config)
        start = self.length
        pos = (torch.arange(input_ids.shape[1]) + start)[None].to(input_ids.device)          # (1, T)
        self.length += input_ids.shape[1]
        h = self.embed(input_ids)                                                           # (B, T, E)
        cos, sin = self.rotary(h, position_ids=pos)
        states: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.body):
            if str(i) in self.norms:
                states[i] = h
            h = layer(h, attention_mask=None, position_ids=pos, cache=self.cache, use_cache=True,
                      position_embeddings=(cos, sin))
        states[self.top] = h
        rows = []
        for layer, head in self.heads:
            x = self.norms[str(layer)](states[layer])                                       # (B, T, E)
            q = (x @ self.q[f"{layer}_{head}"].T)[:, None]                                  # (B, 1, T, D)
            k = (x @ self.k[f"{layer}_{head}"].T)[:, None]                                  # (B, 1, T, D)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            name = f"{layer}_{head}"
            self.key_buffers[name] = append_rows(self.key_buffers.get(name), start, k[:, 0], 1)
            keys = self.key_buffers[name][:, : self.length]                                 # (B, L, D)
            logits = (q[:, 0, -1:] @ keys.transpose(1, 2))[:, 0].float() * self.scaling     # (B, L)
            rows.append(logits.softmax(-1))
        return torch.stack(rows).amax(0)                                                    # (B, L)


class HeadSelector:
    """SpeContext's selector: the retrieval head's scores, one call per decoding step, one set for all layers."""

    per_layer = False

    def __init__(self, head: RetrievalHead, name: str = "specontext"):
        self.head, self.name = head, name

    def __deepcopy__(self, memo):
        """A copy with its own caches and shared weights (one copy per method run; weights are read-only)."""
        head = copy.copy(self.head)
        head.cache = copy.deepcopy(self.head.cache, memo)          # buffers are written in place: own copies
        head.key_buffers = {n: b.clone() for n, b in self.head.key_buffers.items()}
        return HeadSelector(head, self.name)

    def prefill(self, prompt_ids: torch.Tensor) -> None:
        """Run the head over the prompt (its own small cache)."""
        self.head.reset()
        self.head(prompt_ids)

    def select(self, ctx) -> torch.Tensor:
        scores = self.head(ctx["input_ids"])                                                # (B, L)
        if scores.shape[1] != ctx["length"]:
            raise RuntimeError(f"retrieval head saw {scores.shape[1]} tokens, the target {ctx['length']}")
        return policy.compose(scores, ctx["length"], ctx["budget"], ctx["sinks"], ctx["window"])
