"""Listwise LLM reranking: FIRST single-token scoring, the generation baseline, and sliding windows.

FIRST (Reddy et al., EMNLP 2024, arXiv 2406.15657) ranks a window of passages from ONE forward pass:
the prompt ends with ``[`` (after the chat template's generation prompt) and the passages are sorted by
the next-token logits of their identifiers (A, B, ...). The official code reads vLLM's top-k logprobs;
here the identifier logits are gathered from the full vocabulary, so every passage always gets a score.
The generation baseline (RankZephyr style) greedily decodes ``[B] > [A] > ...`` and parses it.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lab.records import Ranking, Run
from lab.rerank.prompts import ListwisePrompt, load_prompt

# (queries, passage lists) -> one local order per window (indices into that window, best first)
WindowScorer = Callable[[Sequence[str], Sequence[Sequence[str]]], list[list[int]]]


# ----------------------------------------------------------------------------------------- windows
def sliding_windows(n: int, window: int = 20, stride: int = 10) -> list[tuple[int, int]]:
    """``(start, end)`` windows over the top ``n``, back to front, ending with the window at 0.

    100/20/10 gives (80,100), (70,90), ..., (0,20): 9 windows. The last window is shorter when
    ``n - window`` is not a multiple of ``stride`` (105 -> ..., (5,25), (0,15)). Unlike the official
    loop (rankllm.py ``sliding_windows``), no extra window follows one that already starts at 0
    (there, 25/20/10 gives (5,25), (0,15) and a redundant (0,5)).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would leave candidates unranked")
    out: list[tuple[int, int]] = []
    end = n
    while end > 0:
        start = max(0, end - window)
        out.append((start, end))
        if start == 0:
            break
        end -= stride
    return out


# ------------------------------------------------------------------------------------------ parsing
def parse_permutation(text: str, num: int, identifiers: Sequence[str] | None = None) -> list[int]:
    """Indices (0-based, best first) from a generated ``[B] > [A] > ...``; always a full permutation.

    Bracketed identifiers are read case-insensitively (``[B]>[A]``, ``[ b ]``, a trailing ``[C`` cut by
    the token limit, and a leading ``B]`` when the ``[`` was in the prompt); without any bracket,
    ``>``-separated bare upper-case identifiers (``B > A``) are used. Unknown or out-of-range identifiers
    are ignored, repeats dropped (first kept), and missing passages appended in input order.
    """
    idents = list(identifiers if identifiers is not None else load_prompt().identifiers)
    if num > len(idents):
        raise ValueError(f"{num} passages but only {len(idents)} identifiers")
    lookup = {c.upper(): i for i, c in enumerate(idents[:num])}
    found = [m.strip().upper() for m in re.findall(r"\[([^\[\]>]*)", text)]
    lead = re.match(r"\s*([^\[\]>\s]+)\s*\]", text)
    if lead:
        found.insert(0, lead.group(1).upper())
    if not found and ">" in text:     # "B > A > C": only whole ">"-separated identifiers count
        found = [t.strip() for t in text.split(">") if t.strip() in idents[:num]]
    order: list[int] = []
    for tok in found:
        i = lookup.get(tok)
        if i is not None and i not in order:
            order.append(i)
    return order + [i for i in range(num) if i not in order]


# ------------------------------------------------------------------------------------------- inputs
def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered chat prompt; special tokens are added unless the template wrote the BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    return list(tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"])


def _system_supported(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError("tokenizer has no chat template; listwise prompts need one")
    return "system" in template      # the official test (rank_listwise_os_llm.py)


def _fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError as e:   # the official code runs ftfy.fix_text on every prompt
        raise ImportError("fix_text=True needs the ftfy package (pip install ftfy)") from e
    return ftfy.fix_text(text)


def render_prompt(
    tokenizer, query: str, passages: Sequence[str], prompt: ListwisePrompt | None = None,
    max_words: int | None = 300, *, with_prefix: bool = True, fix_text: bool = False,
) -> str:
    """Chat-templated prompt text (generation prompt added), plus ``[`` when ``with_prefix``.

    ``fix_text``: ``ftfy.fix_text`` over the whole rendered prompt, as the official code does (create_prompt
    and the training dataset, after the chat template). A prompt holding ``<`` (every chat template's tags)
    is not HTML-unescaped by ftfy; mojibake (``donâ\x80\x99t`` -> ``don't``), curly quotes and NBSPs are fixed:
    40 of 43 DL19 BM25 top-20 smoke prompts (20 words a passage) change.
    """
    prompt = prompt or load_prompt()
    msgs = prompt.messages(query, passages, max_words, _system_supported(tokenizer))
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if with_prefix:
        text += prompt.response_prefix
    return _fix_text(text) if fix_text else text


def generation_context(tokenizer, prompt: ListwisePrompt | None = None) -> str:
    """The text every rendered prompt ends with: the chat template's generation prompt, then the response prefix."""
    prompt = prompt or load_prompt()
    return tokenizer.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False,
                                         add_generation_prompt=True) + prompt.response_prefix


def _prefix_id(tokenizer, prompt: ListwisePrompt) -> int:
    """Id of the response prefix as the prompt tokenises it: after the generation prompt, not as bare text.

    Bare text is wrong for sentencepiece tokenizers (Llama/Mistral/zephyr): ``"["`` alone gets the dummy
    prefix and encodes as ``▁[``, while the prompt's ``"\n["`` ends with the plain ``[`` piece. So the id is
    the one token that the prefix adds to the tokenised generation prompt (for SmolLM2's byte-level BPE
    both ways give the same ``[``).
    """
    ctx = generation_context(tokenizer, prompt)
    base = encode_text(tokenizer, ctx[: len(ctx) - len(prompt.response_prefix)])
    ids = encode_text(tokenizer, ctx)
    if len(ids) != len(base) + 1 or ids[: len(base)] != base:
        raise ValueError(
            f"the response prefix {prompt.response_prefix!r} is not one standalone token after the generation "
            f"prompt (tail {tokenizer.convert_ids_to_tokens(ids[-3:])}): the tokenizer merged it with the "
            "generation prompt, so single-token scoring would read the wrong position")
    return ids[-1]


def build_inputs(
    tokenizer, query: str, passages: Sequence[str], prompt: ListwisePrompt | None = None,
    max_words: int | None = 300, *, max_tokens: int | None = None, with_prefix: bool = True,
    fix_text: bool = False,
) -> list[int]:
    """Prompt token ids; with ``with_prefix`` the last id is the standalone ``[`` token (checked).

    ``max_tokens``: shrink the per-passage word budget until the prompt fits, by
    ``max(1, excess // (4 * num))`` words per round as the official ``create_prompt`` does. As there, the
    budget counts the prompt without the response prefix (single-token mode appends ``[`` afterwards), so
    single-token and generation prompts of a window keep the same words; see :func:`window_token_budget`.
    """
    prompt = prompt or load_prompt()
    words = max_words
    while True:
        ids = encode_text(tokenizer, render_prompt(tokenizer, query, passages, prompt, words,
                                               with_prefix=with_prefix, fix_text=fix_text))
        used = len(ids) - (1 if with_prefix else 0)
        if max_tokens is None or used <= max_tokens:
            break
        if words is None:
            words = max(len(p.split()) for p in passages)
        if words <= 1:
            raise ValueError(f"prompt for {len(passages)} passages needs {used} > {max_tokens} tokens")
        words = max(1, words - max(1, (used - max_tokens) // (4 * len(passages))))
    if with_prefix and ids[-1] != _prefix_id(tokenizer, prompt):
        tail = tokenizer.convert_ids_to_tokens(ids[-3:])
        raise ValueError(
            f"the prompt does not end with the standalone {prompt.response_prefix!r} token (tail {tail}): "
            "the tokenizer merged it with the generation prompt, so single-token scoring would read the "
            "wrong position")
    return ids


def window_token_budget(tokenizer, context_size: int, window: int) -> int | None:
    """Prompt tokens a window may use: ``context_size`` minus the official output estimate (``None`` if 0).

    Official ``create_prompt`` (rank_listwise_os_llm.py) keeps ``num_tokens <= max_tokens() -
    num_output_tokens(rank_end - rank_start)``, with ``context_size`` 4096 in the paper's code
    (``rerank_llm.py --context_size``, commit 537a059; later raised to 32768). That call puts the window size
    in the ``use_alpha`` slot, so the estimate is the token count of ``"[1] > [2] > ... > [window]"`` for the
    configured window (BOS excluded): 90 tokens for 20 with split digits, against 79 for ``[A] > ... > [T]``.
    """
    if context_size <= 0:
        return None
    reserve = len(tokenizer(" > ".join(f"[{i + 1}]" for i in range(window)), add_special_tokens=False)["input_ids"])
    if reserve >= context_size:
        raise ValueError(f"context_size {context_size} leaves no room for a {window}-passage window's output "
                         f"({reserve} tokens)")
    return context_size - reserve


def identifier_token_ids(
    tokenizer, num: int, prompt: ListwisePrompt | None = None, context: str | None = None
) -> list[int]:
    """Token ids of the first ``num`` identifiers as they follow ``context`` (default: :func:`generation_context`,
    the generation prompt + ``[`` that every prompt ends with; pass ``prompt.response_prefix`` for bare text).

    Each ``context + letter`` must tokenise as ``context``'s ids plus exactly one new id (e.g. "[A" ->
    ``[``, ``A``); otherwise the identifier logits are not single next-token logits and we fail loudly.
    The real context matters for sentencepiece tokenizers, where the letter after a bare ``[`` and after
    ``\n[`` may differ; the ids are those of the pieces ``A``, ``B``, ... that the model emits after ``[``
    (the official trainer's ``convert_tokens_to_ids(chr(c))``), not ``▁A``.
    """
    prompt = prompt or load_prompt()
    prompt.check_num(num)
    ctx = generation_context(tokenizer, prompt) if context is None else context
    ctx_ids = list(tokenizer(ctx, add_special_tokens=False)["input_ids"])
    out: list[int] = []
    for ident in prompt.identifiers[:num]:
        ids = list(tokenizer(ctx + ident, add_special_tokens=False)["input_ids"])
        if len(ids) != len(ctx_ids) + 1 or ids[: len(ctx_ids)] != ctx_ids:
            raise ValueError(
                f"tokenizer does not encode {prompt.response_prefix!r} + {ident!r} as separate tokens "
                f"(got {tokenizer.convert_ids_to_tokens(ids[-3:])}); single-token ranking needs each "
                "identifier to be exactly one token after the prefix")
        out.append(ids[-1])
    if len(set(out)) != len(out):
        raise ValueError(f"identifiers share token ids: {out}")
    return out


@dataclass
class WindowBatch:
    """Left-padded prompts of several windows; row b has ``nums[b]`` passages."""

    input_ids: Tensor        # [B, L] long, left-padded
    attention_mask: Tensor   # [B, L] long, 0 on padding
    nums: list[int]
    identifier_ids: Tensor   # [max(nums)] long, vocabulary ids of A, B, ...


def collate_windows(seqs: Sequence[Sequence[int]], nums: Sequence[int], identifier_ids: Sequence[int],
                    pad_id: int) -> WindowBatch:
    """Left-pad so that the last column is every row's last real token (the ``[``)."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)     # [B, L]
    mask = torch.zeros((len(seqs), length), dtype=torch.long)            # [B, L]
    for b, s in enumerate(seqs):
        ids[b, length - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[b, length - len(s):] = 1
    return WindowBatch(ids, mask, list(nums), torch.tensor(list(identifier_ids), dtype=torch.long))


def accepts_kwarg(model, name: str) -> bool:
    """Whether the (base) model's ``forward`` takes ``name`` (e.g. ``logits_to_keep``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def pad_token_id(tokenizer) -> int:
    for pid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if pid is not None:
            return int(pid)
    return 0


# ---------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def single_token_scores(model, batch: WindowBatch) -> Tensor:
    """Identifier logits at each row's last position: ``[B, max(nums)]``, ``-inf`` past ``nums[b]``.

    Exactly one ``model(...)`` call for the whole batch; positions count real tokens only
    (``position_ids = cumsum(mask) - 1``), so left padding leaves every row's scores unchanged.
    """
    device = next(model.parameters()).device
    ids = batch.input_ids.to(device)                                   # [B, L]
    mask = batch.attention_mask.to(device)                             # [B, L]
    kwargs: dict = {"input_ids": ids, "attention_mask": mask}
    if accepts_kwarg(model, "position_ids"):
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)    # [B, L]
    if accepts_kwarg(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1                                   # only the last position's logits
    last = model(**kwargs).logits[:, -1, :].float()                    # [B, V]
    scores = last.index_select(-1, batch.identifier_ids.to(device))    # [B, n]
    n = scores.shape[-1]
    keep = torch.arange(n, device=device)[None, :] < torch.tensor(batch.nums, device=device)[:, None]  # [B, n]
    return scores.masked_fill(~keep, float("-inf")).cpu()


def order_from_scores(scores: Tensor, num: int) -> list[int]:
    """Descending order of the first ``num`` scores; ties keep input order."""
    return torch.sort(scores[:num], descending=True, stable=True).indices.tolist()


@torch.no_grad()
def generate_permutation(model, tokenizer, batch: WindowBatch, max_new_tokens: int) -> list[str]:
    """Greedy decoding of every row (left-padded batch); returns only the new text per row."""
    device = next(model.parameters()).device
    out = model.generate(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad_token_id(tokenizer),
    )                                                                  # [B, L + new]
    new = out[:, batch.input_ids.shape[1]:]                            # [B, new]
    return tokenizer.batch_decode(new, skip_special_tokens=True)


def permutation_tokens(tokenizer, num: int, prompt: ListwisePrompt | None = None) -> int:
    """Token budget for a full ``[A] > [B] > ...`` of ``num`` identifiers, plus end-of-turn slack."""
    prompt = prompt or load_prompt()
    return len(tokenizer(prompt.ranking_text(range(num)), add_special_tokens=False)["input_ids"]) + 2


class _LLMScorer:
    """``engine``: what runs the model (:mod:`lab.rerank.engines`); default the HF model itself."""

    def __init__(self, model, tokenizer, prompt: ListwisePrompt | None = None, max_words: int | None = 300,
                 max_tokens: int | None = None, fix_text: bool = False, engine=None):
        from lab.rerank.engines import HFEngine

        self.model, self.tokenizer = model, tokenizer
        self.engine = engine if engine is not None else HFEngine(model, tokenizer)
        self.prompt = prompt or load_prompt()
        self.max_words, self.max_tokens, self.fix_text = max_words, max_tokens, fix_text

    def _identifier_ids(self) -> list[int]:
        """Identifier ids checked in the real context: generation prompt + ``[`` (not just a bare ``[``)."""
        return identifier_token_ids(self.tokenizer, self.prompt.max_passages, self.prompt)

    def _inputs(self, queries, windows, with_prefix: bool) -> list[list[int]]:
        return [build_inputs(self.tokenizer, q, w, self.prompt, self.max_words, max_tokens=self.max_tokens,
                             with_prefix=with_prefix, fix_text=self.fix_text) for q, w in zip(queries, windows)]


class SingleTokenScorer(_LLMScorer):
    """FIRST: one forward per batch of windows, order = identifier logits after ``[``, descending."""

    name = "first"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.identifier_ids = self._identifier_ids()
        self.last_scores: Tensor | None = None

    def __call__(self, queries: Sequence[str], windows: Sequence[Sequence[str]]) -> list[list[int]]:
        nums = [len(w) for w in windows]
        for n in nums:
            self.prompt.check_num(n)
        self.last_scores = self.engine.identifier_scores(                # [B, max(nums)]
            self._inputs(queries, windows, True), nums, self.identifier_ids[: max(nums)])
        return [order_from_scores(self.last_scores[b], n) for b, n in enumerate(nums)]


class GenerationScorer(_LLMScorer):
    """Generation baseline: greedy ``[B] > [A] > ...`` from the prompt (no ``[`` appended), parsed."""

    name = "gen"

    def __init__(self, *args, max_new_tokens: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_new_tokens = max_new_tokens
        self.last_texts: list[str] = []

    def __call__(self, queries: Sequence[str], windows: Sequence[Sequence[str]]) -> list[list[int]]:
        nums = [len(w) for w in windows]
        budget = self.max_new_tokens or permutation_tokens(self.tokenizer, max(nums), self.prompt)
        self.last_texts = self.engine.generate(self._inputs(queries, windows, False), budget)
        return [parse_permutation(t, n, self.prompt.identifiers) for t, n in zip(self.last_texts, nums)]


# ----------------------------------------------------------------------------------------- rerank
def _text(ranking: Ranking, j: int) -> str:
    cand = ranking.candidates[j]
    if cand.text is None:
        raise ValueError(f"query {ranking.query.qid}: candidate {cand.docid} has no text to rerank")
    return cand.text


def rerank(run: Run, scorer: WindowScorer, window: int = 20, stride: int = 10, depth: int = 100,
           progress: bool = True, batch_size: int = 1, name: str | None = None) -> Run:
    """Sliding-window listwise reranking of the top ``depth`` of every ranking.

    Windows go back to front (:func:`sliding_windows`), each reordering its slice of the current order,
    so strong passages bubble to the top. ``batch_size`` queries advance together: their k-th windows go
    to the scorer as one batch (one forward for :class:`SingleTokenScorer`). Candidates below ``depth``
    keep their order; scores are ``len - position`` (:meth:`Ranking.reranked`).
    """
    rankings = list(run)
    plans = [sliding_windows(min(depth, len(r)), window, stride) for r in rankings]
    out = Run(name or run.name)
    bar = tqdm(total=sum(len(p) for p in plans), disable=not progress, desc=f"rerank {run.name}", unit="win")
    for lo in range(0, len(rankings), max(1, batch_size)):
        chunk, chunk_plans = rankings[lo: lo + batch_size], plans[lo: lo + batch_size]
        orders = [list(range(len(r))) for r in chunk]
        for k in range(max((len(p) for p in chunk_plans), default=0)):
            jobs = [(q, p[k]) for q, p in enumerate(chunk_plans) if k < len(p)]
            real = [(q, (s, e)) for q, (s, e) in jobs if e - s > 1]      # a 1-passage window is a no-op
            if real:
                local = scorer([chunk[q].query.text for q, _ in real],
                               [[_text(chunk[q], j) for j in orders[q][s:e]] for q, (s, e) in real])
                for (q, (s, e)), perm in zip(real, local):
                    if sorted(perm) != list(range(e - s)):
                        raise ValueError(f"scorer returned {perm}, not a permutation of {e - s}")
                    seg = orders[q][s:e]
                    orders[q][s:e] = [seg[i] for i in perm]
            bar.update(len(jobs))
        for r, order in zip(chunk, orders):
            out.add(r.reranked(order))
    bar.close()
    return out
