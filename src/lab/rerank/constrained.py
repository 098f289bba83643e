"""Constrained greedy decoding of a listwise permutation, sharing FIRST's single forward pass.

Free greedy generation (:class:`~lab.rerank.listwise.GenerationScorer`, the paper's baseline) only yields a
ranking when the model writes ``[B] > [A] > ...`` by itself. Zephyr-7B fine-tuned on RankZephyr data does;
SmolLM2-135M does not: in the smoke run it copied passage text after ``[A]`` in 43 of 43 BM25 windows, so the
"generation" run silently equalled the first-stage order and the single-vs-generation comparison measured
nothing. Here the grammar is enforced instead of hoped for: after ``[`` the model may only emit an unused
identifier of the window; the separator tokens (``] > [``) are fed, not sampled. Each step is still the
model's own greedy choice, conditioned on everything it ranked before, which is exactly what generation adds
over FIRST's single step.

Step 0 reads the identifier logits at the ``[`` that ends the prompt: the same position, the same forward pass
as FIRST's single-token scorer. So one decode yields both orders (``first_step`` is the single-token order),
and the remaining ``n - 1`` steps reuse the prompt's KV cache, feeding 4 tokens each (identifier + 3
separator tokens for SmolLM2's BPE), instead of ~80 one-token generation steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from lab.rerank.listwise import (
    WindowBatch, _LLMScorer, accepts_kwarg, collate_windows, order_from_scores, pad_token_id,
)
from lab.rerank.prompts import ListwisePrompt

__all__ = ["ConstrainedDecode", "separator_token_ids", "constrained_decode", "ConstrainedScorer"]


def separator_token_ids(tokenizer, prompt: ListwisePrompt, identifier_ids: Sequence[int]) -> list[int]:
    """Tokens between two identifiers in ``[A] > [B]`` (``]``, `` >``, `` [`` for SmolLM2), checked for every pair.

    The target text that training teaches (``prompt.ranking_text``) must tokenise as ``[`` id sep id sep ...
    for *every* identifier, or feeding ``id + sep`` would show the model a sequence it never sees in training.
    """
    idents = prompt.identifiers[: len(identifier_ids)]
    ids = list(tokenizer(prompt.ranking_text([0, 1] if len(idents) > 1 else [0]), add_special_tokens=False)["input_ids"])
    prefix = list(tokenizer(prompt.response_prefix, add_special_tokens=False)["input_ids"])
    if len(idents) < 2:
        return []
    try:
        a = ids.index(identifier_ids[0], len(prefix))
        b = ids.index(identifier_ids[1], a + 1)
    except ValueError as e:
        raise ValueError(f"{prompt.ranking_text([0, 1])!r} tokenises as {tokenizer.convert_ids_to_tokens(ids)}: "
                         "identifiers are not the tokens that follow the prefix") from e
    sep = ids[a + 1: b]
    for i in range(len(idents)):
        j = (i + 1) % len(idents)
        want = prefix + [identifier_ids[i]] + sep + [identifier_ids[j]]
        got = list(tokenizer(prompt.ranking_text([i, j]), add_special_tokens=False)["input_ids"])[: len(want)]
        if got != want:
            raise ValueError(f"{prompt.ranking_text([i, j])!r} tokenises as {tokenizer.convert_ids_to_tokens(got)}, "
                             f"not [prefix, {idents[i]}, separator, {idents[j]}]: constrained decoding would feed "
                             "token sequences that training never produces")
    return sep


@dataclass
class ConstrainedDecode:
    first_step: Tensor            # [B, n] identifier logits at the prompt's "[" (= FIRST's single-token scores)
    orders: list[list[int]]       # per row: the constrained greedy permutation (indices, best first)
    forwards: int                 # model calls made (1 prefill + n - 1 cached steps)


def _cache(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


@torch.no_grad()
def constrained_decode(model, batch: WindowBatch, separator_ids: Sequence[int]) -> ConstrainedDecode:
    """Greedy permutation decoding under the ``[X] > [Y] > ...`` grammar; rows of a batch advance together.

    Left padding is handled with explicit ``position_ids`` (real tokens only), as in
    :func:`~lab.rerank.listwise.single_token_scores`; each step appends ``1 + len(separator_ids)`` tokens to
    every row, so the attention mask only ever grows by ones on the right.
    """
    device = next(model.parameters()).device
    ids = batch.input_ids.to(device)                                    # [B, L]
    mask = batch.attention_mask.to(device)                              # [B, L]
    ident = batch.identifier_ids.to(device)                             # [n]
    sep = torch.tensor(list(separator_ids), dtype=torch.long, device=device)   # [S]
    B, n = ids.shape[0], ident.shape[0]
    nums = torch.tensor(batch.nums, device=device)                      # [B]
    valid = torch.arange(n, device=device)[None, :] < nums[:, None]     # [B, n]
    extra = {"logits_to_keep": 1} if accepts_kwarg(model, "logits_to_keep") else {}
    use_pos = accepts_kwarg(model, "position_ids")
    cache_kw = "cache" if accepts_kwarg(model, "cache") else "past_key_values"   # transformers >= 5.2x renamed it

    pos = (mask.cumsum(-1) - 1).clamp(min=0)                            # [B, L]
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, **({"position_ids": pos} if use_pos else {}),
                **extra)
    scores = out.logits[:, -1, :].float().index_select(-1, ident)       # [B, n]
    first = scores.masked_fill(~valid, float("-inf")).cpu()
    past, nxt, forwards = _cache(out), pos[:, -1] + 1, 1                # nxt: [B] next position id
    used = torch.zeros(B, n, dtype=torch.bool, device=device)           # [B, n]
    picks = []
    for t in range(n):
        pick = scores.masked_fill(used | ~valid, float("-inf")).argmax(-1)   # [B]; finished rows: ignored
        picks.append(pick)
        used[torch.arange(B, device=device), pick] = True
        if t == n - 1:
            break
        step = torch.cat([ident[pick][:, None], sep[None, :].expand(B, -1)], dim=1)    # [B, 1 + S]
        mask = torch.cat([mask, torch.ones_like(step)], dim=1)                          # [B, L + ...]
        step_pos = nxt[:, None] + torch.arange(step.shape[1], device=device)[None, :]   # [B, 1 + S]
        nxt = nxt + step.shape[1]
        out = model(input_ids=step, attention_mask=mask, use_cache=True, **{cache_kw: past},
                    **({"position_ids": step_pos} if use_pos else {}), **extra)
        past, forwards = _cache(out), forwards + 1
        scores = out.logits[:, -1, :].float().index_select(-1, ident)   # [B, n]
    chosen = torch.stack(picks, dim=1).cpu()                             # [B, n]
    orders = [chosen[b, : batch.nums[b]].tolist() for b in range(B)]
    return ConstrainedDecode(first, orders, forwards)


class ConstrainedScorer(_LLMScorer):
    """Window scorer for constrained generation; also keeps each window's single-token order.

    ``memo`` maps ``(query, passages)`` to ``(single order, generated order)``: when every query is one window
    (smoke: top 20, window 20), a single-token run over the same windows reads its orders from here
    (:meth:`single_view`) instead of repeating the forward pass.
    """

    name = "gen-constrained"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.engine.name != "hf":       # the decode below drives the HF model's KV cache step by step
            raise ValueError(f"constrained generation runs on the HF engine only, not {self.engine.name!r}; "
                             "use first.rerank.generation: free with vLLM")
        self.identifier_ids = self._identifier_ids()
        self.separator_ids = separator_token_ids(self.tokenizer, self.prompt, self.identifier_ids)
        self.memo: dict[tuple, tuple[list[int], list[int]]] = {}
        self.last_texts: list[str] = []
        self.forwards = 0

    def _decode(self, queries, windows) -> None:
        todo = [(q, w) for q, w in zip(queries, windows) if (q, tuple(w)) not in self.memo]
        if not todo:
            return
        nums = [len(w) for _, w in todo]
        for n in nums:
            self.prompt.check_num(n)
        batch = collate_windows(self._inputs([q for q, _ in todo], [w for _, w in todo], True), nums,
                                self.identifier_ids[: max(nums)], pad_token_id(self.tokenizer))
        res = constrained_decode(self.model, batch, self.separator_ids)
        self.forwards += res.forwards
        for b, (q, w) in enumerate(todo):
            self.memo[(q, tuple(w))] = (order_from_scores(res.first_step[b], nums[b]), res.orders[b])

    def __call__(self, queries: Sequence[str], windows: Sequence[Sequence[str]]) -> list[list[int]]:
        self._decode(queries, windows)
        orders = [self.memo[(q, tuple(w))][1] for q, w in zip(queries, windows)]
        self.last_texts = [self.prompt.ranking_text(o) for o in orders]
        return orders

    def single_view(self):
        """A window scorer returning the single-token orders of windows this scorer decoded (else decodes them)."""
        def score(queries: Sequence[str], windows: Sequence[Sequence[str]]) -> list[list[int]]:
            self._decode(queries, windows)
            return [self.memo[(q, tuple(w))][0] for q, w in zip(queries, windows)]
        return score
