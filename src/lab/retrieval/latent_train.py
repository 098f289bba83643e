"""LaSER training and encoding on :mod:`lab.retrieval.latent` + :mod:`lab.losses.laser` + :func:`lab.train.fit`.

A method supplies :class:`LaserExample` rows (query, reasoning, one positive, one hard negative); :func:`prepare`
tokenises them once, :func:`collator` left-pads a batch, :func:`loss_fn` is the ``loss_fn(model, batch)`` the one
trainer calls. :func:`encode` gives latent-view vectors for retrieval (queries and documents alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lab.losses.laser import laser_objective
from lab.retrieval.laser_prompts import LaserPrompt
from lab.retrieval.latent import explicit_encode, latent_encode, segment_ends, trajectory_states

__all__ = ["LaserExample", "LatentSettings", "wrap", "wrapped_ids", "prepare", "left_pad", "collator", "loss_fn",
           "encode", "reasoning_or_query"]


@dataclass(frozen=True)
class LaserExample:
    query: str
    reasoning: str
    positive: str
    negative: str
    task: str = ""                     # the query instruction ("" = the prompt file's; LaSER-Training rows carry one)


@dataclass(frozen=True)
class LatentSettings:
    """One LaSER configuration: thinking steps and the loss weights (every Table-5 row is a choice of these)."""

    k: int = 3
    explicit: bool = True              # run the explicit view (False: no teacher at all)
    temperature: float = 0.02
    mid_temperature: float = 0.05      # code's latent_temperature (paper: 0.02)
    w_latent: float = 1.0
    w_explicit: float = 1.0
    w_kl: float = 10.0
    w_mid: float = 0.1
    segment_rule: Literal["token", "text"] = "token"
    trajectory: Literal["linspace", "floor"] = "linspace"
    query_max_len: int = 64
    doc_max_len: int = 128
    reasoning_max_len: int = 1024      # code: the explicit input is cut at 1,024 tokens
    min_reasoning_chars: int = 5       # a shorter reasoning is replaced by the query (code)


def reasoning_or_query(reasoning: str, query: str, min_chars: int = 5) -> str:
    return reasoning if len(reasoning.strip()) >= min_chars else query


def wrap(tok, prompt: LaserPrompt, text: str, *, query: bool, task: str | None = None) -> str:
    """Chat template (one user turn, generation prompt) around the query / document text, then the think block."""
    content = prompt.query_text(text, task) if query else prompt.document_text(text)
    return tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                   add_generation_prompt=True) + prompt.think


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


def wrapped_ids(tok, prompt: LaserPrompt, text: str, *, query: bool, max_len: int, task: str | None = None
                ) -> list[int]:
    """Token ids of the wrapped ``text``, at most ``max_len``: the *content* is cut (by tokens), never the chat
    template or the think block the latent view starts from. ``task``: the query instruction (None: the prompt's)."""
    ids = _ids(tok, wrap(tok, prompt, text, query=query, task=task))
    if len(ids) <= max_len:
        return ids
    overhead = len(_ids(tok, wrap(tok, prompt, "", query=query, task=task)))
    if overhead >= max_len:
        raise ValueError(f"max_len {max_len} leaves no room for content: the wrapper alone is {overhead} tokens")
    content = tok(text, add_special_tokens=False)["input_ids"]
    budget = max_len - overhead
    while budget > 0:            # re-tokenising decoded text can merge differently: shrink until it fits
        ids = _ids(tok, wrap(tok, prompt, tok.decode(content[:budget]), query=query, task=task))
        if len(ids) <= max_len:
            return ids
        budget -= 1
    return _ids(tok, wrap(tok, prompt, "", query=query, task=task))


def prepare(tok, examples: Sequence[LaserExample], prompt: LaserPrompt, s: LatentSettings) -> list[dict]:
    """Token ids per example: wrapped query, reasoning (cut to ``reasoning_max_len``), its segment ends, 2 docs."""
    newline = tok.encode("\n\n", add_special_tokens=False)[-1]           # code: encode('\n\n')[-1]
    rows = []
    for ex in examples:
        q = wrapped_ids(tok, prompt, ex.query, query=True, max_len=s.query_max_len, task=ex.task or None)
        r_text = reasoning_or_query(ex.reasoning, ex.query, s.min_reasoning_chars)
        r = tok(r_text, add_special_tokens=False)["input_ids"][: max(1, s.reasoning_max_len - len(q))]
        ends = segment_ends(r, [tok.decode([t]) for t in r], newline_id=newline, rule=s.segment_rule)
        docs = [wrapped_ids(tok, prompt, d, query=False, max_len=s.doc_max_len) for d in (ex.positive, ex.negative)]
        rows.append({"q": q, "r": r, "ends": ends, "docs": docs})
    return rows


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)           # (B, T)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)                 # (B, T)
    for i, x in enumerate(seqs):
        if len(x):
            ids[i, n - len(x):] = torch.tensor(x)
            mask[i, n - len(x):] = 1
    return ids, mask


def collator(pad_id: int) -> Callable[[Sequence[dict]], dict]:
    """Left-padded query, explicit (query + reasoning) and document batches; docs ordered [pos_0, neg_0, pos_1, ...]."""

    def collate(rows: Sequence[dict]) -> dict:
        q_ids, q_mask = left_pad([r["q"] for r in rows], pad_id)
        x_ids, x_mask = left_pad([r["q"] + r["r"] for r in rows], pad_id)
        width = x_ids.shape[1]
        starts = torch.tensor([width - len(r["r"]) for r in rows])      # (B,) first reasoning position
        d_ids, d_mask = left_pad([d for r in rows for d in r["docs"]], pad_id)
        return {"q_ids": q_ids, "q_mask": q_mask, "x_ids": x_ids, "x_mask": x_mask, "starts": starts,
                "ends": [r["ends"] for r in rows], "d_ids": d_ids, "d_mask": d_mask}

    return collate


def loss_fn(s: LatentSettings, eos_id: int) -> Callable:
    """``loss_fn(model, batch) -> {"loss", parts...}`` for :func:`lab.train.fit`. Under several processes every
    vector is gathered with gradients (:func:`lab.train.gather_with_grad`): all processes' documents are in-batch
    negatives (code: ``_dist_gather_tensor``); single process it is the identity."""
    from lab.train.distributed import gather_with_grad as g

    def fn(model, batch: dict) -> dict:
        q = latent_encode(model, batch["q_ids"], batch["q_mask"], s.k)               # (B, D), (B, K, D)
        d = latent_encode(model, batch["d_ids"], batch["d_mask"], s.k)               # (2B, D)
        x = x_states = None
        if s.explicit:
            ex = explicit_encode(model, batch["x_ids"], batch["x_mask"], eos_id)      # (B, D), (B, T, D)
            x = ex.vector
            x_states = trajectory_states(ex.hidden, batch["starts"].tolist(), batch["ends"], s.k, s.trajectory)
        x, x_states = (g(x), g(x_states)) if x is not None else (None, None)
        out = laser_objective(g(q.vector), g(d.vector), q_explicit=x, latent_states=g(q.states),
                              explicit_states=x_states,
                              temperature=s.temperature, mid_temperature=s.mid_temperature, w_latent=s.w_latent,
                              w_explicit=s.w_explicit, w_kl=s.w_kl, w_mid=s.w_mid)
        if q.entropy.numel():
            out["soft_entropy"] = q.entropy.mean().detach()
        return out

    return fn


@torch.no_grad()
def encode(model, tok, prompt: LaserPrompt, texts: Sequence[str], k: int, *, query: bool, max_len: int,
           batch_size: int = 16, progress: bool = True, desc: str = "encode", task: str | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Latent-view vectors (N, D) float32 of ``texts`` wrapped as queries or documents (length-sorted batches,
    original order returned) and the mean soft-token entropy per text (N,), 0 for ``k = 1``. ``task``: the query
    instruction (None: the prompt's)."""
    return encode_ks(model, tok, prompt, texts, [k], query=query, max_len=max_len, batch_size=batch_size,
                     progress=progress, desc=desc, task=task)[k]


@torch.no_grad()
def encode_ks(model, tok, prompt: LaserPrompt, texts: Sequence[str], ks: Sequence[int], *, query: bool,
              max_len: int, batch_size: int = 16, progress: bool = True, desc: str = "encode",
              task: str | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """:func:`encode` at every K in ``ks`` from one pass at ``max(ks)``: step j of the soft-token loop does not
    depend on how many steps follow, so the K-step vector is the mean of the first K states of the longest run
    (bitwise equal to encoding at K alone: tests/unit/retrieval/test_latent_train.py). The smoke K sweep
    (K = 1..5 over a 643-passage pool) then costs one pool pass per model instead of five; the prompt forward
    dominates a pass (~100 tokens against one token per extra step)."""
    from tqdm.auto import tqdm

    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks (thinking steps) must be >= 1, got {ks}")
    tok_ids = [wrapped_ids(tok, prompt, t, query=query, max_len=max_len, task=task) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(tok_ids[i]))
    vecs: dict[int, list] = {k: [None] * len(texts) for k in ks}
    ents = {k: np.zeros(len(texts), dtype=np.float32) for k in ks}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    was = model.training
    model.eval()
    for lo in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[lo: lo + batch_size]
        ids, mask = left_pad([tok_ids[i] for i in idx], pad)
        dev = model.get_input_embeddings().weight.device                 # a GPU in the paper profile
        out = latent_encode(model, ids.to(dev), mask.to(dev), ks[-1])
        for k in ks:
            # the same ops latent_encode(k) runs on a contiguous (B, k, D) stack: identical floats
            vec = F.normalize(out.states[:, :k].contiguous().mean(1), p=2, dim=-1)      # (B, D)
            ent = out.entropy[:, : k - 1].contiguous()                                  # (B, k-1)
            for j, i in enumerate(idx):
                vecs[k][i] = vec[j].float().cpu().numpy()
                ents[k][i] = float(ent[j].mean()) if ent.numel() else 0.0
    model.train(was)
    return {k: (np.stack(vecs[k]).astype(np.float32), ents[k]) for k in ks}
