"""Query rewriting by an LLM: greedy reasoning text per query (LaSER's explicit-view input and its
rewrite-then-retrieve baseline). The prompt is data (:class:`lab.retrieval.laser_prompts.LaserPrompt`)."""

from __future__ import annotations

from typing import Sequence

import torch

from lab.retrieval.laser_prompts import LaserPrompt

__all__ = ["reasoning_messages", "generate_reasoning"]


def reasoning_messages(prompt: LaserPrompt, query: str) -> list[dict]:
    return [{"role": "system", "content": prompt.reasoning_system},
            {"role": "user", "content": prompt.reasoning_user.format(query=query)}]


@torch.no_grad()
def generate_reasoning(model, tok, prompt: LaserPrompt, queries: Sequence[str], *, max_new_tokens: int,
                       batch_size: int = 8, progress: bool = True) -> list[dict]:
    """Greedy generation (left-padded batches, order kept): ``[{"text", "new_tokens"}]`` per query."""
    from tqdm.auto import tqdm

    side = tok.padding_side
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[dict] = []
    try:
        for lo in tqdm(range(0, len(queries), batch_size), desc="reasoning", disable=not progress, leave=False):
            texts = [tok.apply_chat_template(reasoning_messages(prompt, q), tokenize=False,
                                             add_generation_prompt=True) for q in queries[lo: lo + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                 eos_token_id=tok.eos_token_id)                     # (b, T + new)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                ids = [int(t) for t in row if int(t) not in (pad, tok.eos_token_id)]
                out.append({"text": tok.decode(ids, skip_special_tokens=True).strip(), "new_tokens": len(ids)})
    finally:
        tok.padding_side = side
    return out
