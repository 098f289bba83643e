"""Baseline KV selectors at equal budget ``B``, each after its paper; deviations needed to fit one framework (per
step selection over a full KV, one set shared by a layer's KV heads) are marked *(our design)*.

Global selectors (``per_layer = False``) return one ``(B, S)`` set per step for every layer; per-layer selectors
answer inside each layer from its query and keys (:mod:`lab.kv.selective`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.kv import policy, stats


class StreamingLLM:
    """StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks", ICLR 2024, §3.2):
    the first ``sinks`` tokens (4 in the paper) + the most recent ``B - sinks``."""

    name, per_layer = "streamingllm", False

    def select(self, ctx) -> torch.Tensor:
        b = ctx["input_ids"].shape[0]
        s = policy.compose(None, ctx["length"], ctx["budget"], ctx["sinks"], ctx["budget"] - ctx["sinks"])
        return s.expand(b, -1).to(ctx["input_ids"].device)


class RandomSelector:
    """Random control: sinks + window + uniformly random middle tokens, redrawn each step from ``seed``."""

    name, per_layer = "random", False

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)

    def select(self, ctx) -> torch.Tensor:
        b = ctx["input_ids"].shape[0]
        scores = torch.rand(b, ctx["length"], generator=self.gen)                   # (B, L)
        return policy.compose(scores, ctx["length"], ctx["budget"], ctx["sinks"], ctx["window"])


class GlobalOracle:
    """Upper bound of one shared set: the target's own attention of the current query, averaged over layers and
    heads (a full-KV look-ahead pass, then the selective pass), top-B with the same sinks + window scaffold."""

    name, per_layer, needs_full_pass = "oracle_global", False, True

    def select(self, ctx) -> torch.Tensor:
        return policy.compose(ctx["full_probs"], ctx["length"], ctx["budget"], ctx["sinks"], ctx["window"])


class LayerOracle:
    """Upper bound of layer-wise retrieval: each layer's own attention of the current query (head-summed) top-B."""

    name, per_layer = "oracle_layer", True

    def select_layer(self, layer, query, key, scaling, ctl) -> torch.Tensor:
        p = stats.attention_probs(query, key, scaling)[:, :, 0].sum(1)              # (B, L)
        return policy.compose(p, key.shape[2], ctl.budget, ctl.sinks, ctl.window)


class GemFilterLike:
    """GemFilter-like (Shi et al., "Discovering the Gems in Early Layers", arXiv 2409.17422, §3): an early layer's
    attention of the last query picks the tokens. *(our design, decoding variant)*: layers ``<= filter_layer``
    attend in full, that layer's head-summed row (top-B with the scaffold) serves every later layer this step."""

    name, per_layer = "gemfilter", True

    def __init__(self, filter_layer: int):
        self.filter_layer = filter_layer
        self._set = None

    def select_layer(self, layer, query, key, scaling, ctl):
        if layer < self.filter_layer:
            return None
        if layer == self.filter_layer:
            p = stats.attention_probs(query, key, scaling)[:, :, 0].sum(1)          # (B, L)
            self._set = policy.compose(p, key.shape[2], ctl.budget, ctl.sinks, ctl.window)
            return None
        return self._set


class Quest:
    """Quest (Tang et al., "Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference", ICML 2024,
    §3.2-3.3): keys in pages of ``page`` tokens (16); per page and channel the min and max key; a query's upper
    bound on a page's logit is ``sum_d max(q_d * min_d, q_d * max_d)``; the top ``B // page`` pages are read. The
    current (last, partial) page is always read; the first ``dense_layers`` layers attend in full (Quest §4.1:
    not applied to the first two layers). *(our design)*: one page set per layer, heads combined by max."""

    name, per_layer = "quest", True

    def __init__(self, page: int = 16, dense_layers: int = 2):
        self.page, self.dense_layers = page, dense_layers
        # layer -> (first key row, kmin, kmax (B, KVH, P, D)) of the complete pages: their rows never change, so a
        # step only reduces the pages completed since (Quest keeps this metadata beside the KV cache). Recomputing
        # every page each step cost ~0.5 s per step at 8k on 2 cores, ~4x a full-KV step.
        self._pages: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _reduce(self, key: torch.Tensor, start: int, stop: int, pad_to: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-page min and max ``(B, KVH, P, D)`` of key rows ``[start, stop)`` padded to ``pad_to`` rows."""
        b, kvh, _, d = key.shape
        k = key[:, :, start:stop].float()                                           # (B, KVH, n, D)
        pad = pad_to - (stop - start)
        kmax = F.pad(k, (0, 0, 0, pad), value=float("-inf")).view(b, kvh, -1, self.page, d).amax(3)
        kmin = F.pad(k, (0, 0, 0, pad), value=float("inf")).view(b, kvh, -1, self.page, d).amin(3)
        return kmin, kmax

    def page_bounds(self, query: torch.Tensor, key: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Upper bounds ``(B, H, P)`` for ``query`` (B, H, 1, D) over ``key`` (B, KVH, L, D); with ``layer`` the
        complete pages' min/max are kept for the next step (same values as recomputing them: min/max commute with
        the GQA expansion and the fp32 cast)."""
        length, page = key.shape[2], self.page
        complete = length // page
        kept = self._pages.get(layer) if layer is not None else None
        if kept is not None and (kept[1].shape[2] > complete or not torch.equal(kept[0], key[:, :, 0])):
            kept = None                                                            # another sequence
        if kept is None:
            b, kvh, _, d = key.shape
            kmin = kmax = torch.empty(b, kvh, 0, d, device=key.device)                # (B, KVH, 0, D)
        else:
            kmin, kmax = kept[1], kept[2]
        done = kmin.shape[2]
        if done < complete:                                                        # pages completed since
            nmin, nmax = self._reduce(key, done * page, complete * page, (complete - done) * page)
            kmin, kmax = torch.cat([kmin, nmin], dim=2), torch.cat([kmax, nmax], dim=2)
        if layer is not None:
            first = kept[0] if kept is not None else key[:, :, 0].clone()              # (B, KVH, D)
            self._pages[layer] = (first, kmin, kmax)
        if complete * page < length:                                               # the current, partial page
            tmin, tmax = self._reduce(key, complete * page, length, page)
            kmin, kmax = torch.cat([kmin, tmin], dim=2), torch.cat([kmax, tmax], dim=2)
        heads = query.shape[1]
        kmin, kmax = stats.expand_kv(kmin, heads), stats.expand_kv(kmax, heads)    # (B, H, P, D)
        q = query.float()                                                          # (B, H, 1, D)
        return torch.maximum(q * kmin, q * kmax).sum(-1)                          # (B, H, P)

    def select_layer(self, layer, query, key, scaling, ctl):
        length = key.shape[2]
        if layer < self.dense_layers or length <= ctl.budget:
            return None if layer < self.dense_layers else torch.arange(length).expand(key.shape[0], length)
        bound = self.page_bounds(query, key, layer).amax(1)                       # (B, P)
        n = max(1, ctl.budget // self.page)
        bound[:, -1] = float("inf")                                               # the current page
        top = bound.topk(min(n, bound.shape[1]), dim=-1).indices                  # (B, n)
        tok = (top[:, :, None] * self.page + torch.arange(self.page)).flatten(1)  # (B, n * page)
        # the current (last) page may be partial; every row holds it, so every row drops the same number of rows
        tok = tok[tok < length].view(tok.shape[0], -1)                           # no duplicated rows
        return tok.sort(dim=-1).values


class H2O:
    """H2O (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs", NeurIPS 2023,
    §4 Algorithm 1): keep ``B - window`` heavy hitters by accumulated attention + the ``window`` most recent
    tokens; each step the token leaving the window competes and the lowest accumulated score is evicted for good.
    Scores start from the prompt's column sums (prefill) and grow by the attention each kept token receives.
    *(our design)*: one set per layer (scores summed over heads); no sinks (H2O has none)."""

    name, per_layer = "h2o", True

    def __init__(self, window: int):
        self.window = window
        self.acc: dict[int, torch.Tensor] = {}                                   # layer -> (B, L) scores
        self.kept: dict[int, torch.Tensor] = {}                                  # layer -> (B, heavy) indices

    def prefill_hook(self, layer, query, key, scaling) -> None:
        self.acc[layer] = stats.column_mass(query, key, scaling)                  # (B, L)

    def bind(self, ctl) -> None:
        ctl.observer = self.observe

    def select_layer(self, layer, query, key, scaling, ctl):
        length = key.shape[2]
        acc = self.acc[layer]
        if acc.shape[1] < length:                                                 # rows for new tokens
            acc = self.acc[layer] = F.pad(acc, (0, length - acc.shape[1]))
        if length <= ctl.budget:
            return torch.arange(length).expand(key.shape[0], length)
        window = min(self.window, ctl.budget)
        heavy = ctl.budget - window
        if layer not in self.kept:                                                # first step: top of the prompt
            self.kept[layer] = acc[:, :length - window].topk(heavy, dim=-1).indices.sort(-1).values
        else:
            self.kept[layer] = evict(self.kept[layer], length - window - 1, acc, heavy)
        recent = torch.arange(length - window, length).expand(key.shape[0], window)
        return torch.cat([self.kept[layer], recent], dim=-1)

    def observe(self, layer, probs, idx) -> None:
        """``probs`` (B, H, S): attention over the attended rows ``idx`` (B, S); H2O accumulates it."""
        self.acc[layer].scatter_add_(1, idx, probs.sum(1))


def evict(kept: torch.Tensor, newcomer: int, acc: torch.Tensor, heavy: int) -> torch.Tensor:
    """H2O's greedy step: ``kept`` (B, heavy) plus ``newcomer`` (the token leaving the recent window), then drop the
    lowest accumulated score ``acc`` (B, L) to keep ``heavy``; sorted."""
    if newcomer < 0 or heavy == 0:
        return kept
    cand = torch.cat([kept, torch.full((kept.shape[0], 1), newcomer, dtype=kept.dtype)], dim=-1)   # (B, heavy+1)
    keep = acc.gather(1, cand).topk(heavy, dim=-1).indices                       # (B, heavy)
    return cand.gather(1, keep).sort(-1).values


class SnapKV:
    """SnapKV (Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation", NeurIPS 2024, §4.2-4.3):
    the last ``obs_window`` prompt queries vote for prefix keys (attention summed over the window), votes are
    pooled with ``kernel`` (1D pooling keeps neighbours of a hit, "clustering"), the top prefix keys are kept once
    after prefill. *(our design)*: one set per layer (votes summed over heads); the budget stays ``B`` during
    decoding by a sliding recent window of ``window`` tokens instead of appending every generated token."""

    name, per_layer = "snapkv", True

    def __init__(self, obs_window: int = 32, kernel: int = 5, pooling: str = "avg", window: int = 64):
        self.obs_window, self.kernel, self.pooling, self.window = obs_window, kernel, pooling, window
        self.votes: dict[int, torch.Tensor] = {}
        self.prompt_len = 0

    def prefill_hook(self, layer, query, key, scaling) -> None:
        q_len = query.shape[2]
        rows = torch.arange(max(0, q_len - self.obs_window), q_len)
        self.prompt_len = key.shape[2]
        self.votes[layer] = self.pool(stats.column_mass(query, key, scaling, rows=rows))   # (B, L)

    def pool(self, votes: torch.Tensor) -> torch.Tensor:
        """``votes`` (B, L) pooled along L with ``kernel`` (stride 1, same length)."""
        pool = F.avg_pool1d if self.pooling == "avg" else F.max_pool1d
        return pool(votes[:, None], self.kernel, stride=1, padding=self.kernel // 2)[:, 0]   # (B, L)

    def select_layer(self, layer, query, key, scaling, ctl):
        length = key.shape[2]
        if length <= ctl.budget:
            return torch.arange(length).expand(key.shape[0], length)
        window = min(self.window, ctl.budget)
        prefix_end = max(0, min(self.prompt_len - self.obs_window, length - window))
        votes = self.votes[layer][:, :prefix_end]
        top = votes.topk(min(ctl.budget - window, prefix_end), dim=-1).indices     # (B, B - w)
        recent = torch.arange(length - window, length).expand(key.shape[0], window)
        return torch.cat([top.sort(-1).values, recent], dim=-1)


def combined_prefill_hook(selectors):
    """One prefill hook calling every selector's ``prefill_hook`` (the prompt is prefilled once for all)."""
    hooks = [s.prefill_hook for s in selectors if hasattr(s, "prefill_hook")]

    def hook(layer, query, key, scaling):
        for h in hooks:
            h(layer, query, key, scaling)

    return hook
