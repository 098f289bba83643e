"""FIRST's training pieces (Reddy et al., EMNLP 2024): ``L = L_LM + lambda * L_rank``, for :func:`lab.train.fit`.

One forward over prompt + target permutation per batch gives both terms:

* ``L_LM``: token NLL of the target ``[B] > [A] > ...`` + EOS (prompt tokens labelled -100). As in the
  official trainer the target's opening ``[`` is a labelled target token.
* ``L_rank``: a ranking loss on the identifier logits at the ``[`` position, i.e. the position that
  predicts the first identifier - the same logits single-token reranking reads at inference.

Generic: any causal LM + tokenizer (chat template required) + :class:`RankExample` lists. This module supplies
what the one trainer needs - the encoded dataset (:func:`prepare`), the collator (:func:`collate`) and the loss
(:func:`loss_fn`); optimisation, LoRA, checkpoints and devices come from :mod:`lab.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal, Mapping, Sequence

import torch
from torch import Tensor

from lab.losses.ranking import IGNORE_INDEX, first_loss, lambdarank, listnet, lm_nll, weighted_ranknet
from lab.records import Qrels, Ranking, Run
from lab.rerank.listwise import (
    accepts_kwarg, build_inputs, encode_text, identifier_token_ids, pad_token_id, render_prompt, sliding_windows,
)
from lab.rerank.prompts import ListwisePrompt, load_prompt

# official weights (scripts/train_ranking.py): weighted RankNet x10, ListNet x0.1, otherwise x1
DEFAULT_LAMBDA = {("ranknet", True): 10.0, ("ranknet", False): 1.0, ("listnet", True): 0.1,
                  ("listnet", False): 0.1, ("lambdarank", True): 1.0, ("lambdarank", False): 1.0}


# -------------------------------------------------------------------------------------- examples
@dataclass
class RankExample:
    """One window: the query, its passages in first-stage order, and 1-based gold ranks (input order)."""

    query: str
    passages: list[str]
    ranks: list[int]
    relevance: list[float] | None = None   # graded labels (lambdarank gains); default n - rank

    def __post_init__(self):
        if sorted(self.ranks) != list(range(1, len(self.passages) + 1)):
            raise ValueError(f"ranks {self.ranks} are not a permutation of 1..{len(self.passages)}")

    @property
    def order(self) -> list[int]:
        """Passage indices, best first (the target permutation)."""
        return sorted(range(len(self.ranks)), key=lambda i: self.ranks[i])


def gold_ranks(grades: Sequence[float]) -> list[int]:
    """1-based ranks by grade (descending); ties keep input (first-stage) order.

    The tie-break only orders the LM target (a permutation must list every passage); the RankNet loss drops the
    pairs of equal grades (:func:`untied_pairs`), so it never learns the first stage's order of tied passages.
    """
    order = sorted(range(len(grades)), key=lambda i: (-grades[i], i))
    ranks = [0] * len(grades)
    for pos, i in enumerate(order):
        ranks[i] = pos + 1
    return ranks


def example_from_ranking(ranking: Ranking, judgements: Mapping[str, int], start: int = 0,
                         end: int | None = None) -> RankExample:
    """The window ``[start:end]`` of ``ranking`` with gold order from graded qrels (unjudged = 0)."""
    cands = ranking.candidates[start:end]
    missing = [c.docid for c in cands if c.text is None]
    if missing:
        raise ValueError(f"query {ranking.query.qid}: candidates without text {missing[:5]}")
    grades = [float(judgements.get(c.docid, 0)) for c in cands]
    return RankExample(ranking.query.text, [c.text for c in cands], gold_ranks(grades), grades)


def examples_from_run(run: Run, qrels: Qrels, window: int = 20, stride: int = 10, depth: int = 100,
                      min_relevant: int = 1) -> list[RankExample]:
    """Every sliding window of every judged query holding >= ``min_relevant`` relevant (grade > 0) passages."""
    out = []
    for ranking in run:
        if ranking.query.qid not in qrels:
            continue
        for s, e in sliding_windows(min(depth, len(ranking)), window, stride):
            ex = example_from_ranking(ranking, qrels[ranking.query.qid], s, e)
            if sum(g > 0 for g in ex.relevance) >= min_relevant and e - s > 1:
                out.append(ex)
    return out


# -------------------------------------------------------------------------------------- encoding
@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    rank_pos: int               # index of the prompt's final "[": its logits predict the first identifier
    ranks: list[int]
    relevance: list[float]


def encode_example(tokenizer, ex: RankExample, identifier_ids: Sequence[int], prompt: ListwisePrompt | None = None,
                   max_words: int | None = 300, fix_text: bool = False) -> Encoded:
    """Tokenise prompt + target jointly; fail if the target changes the prompt's tokens."""
    prompt = prompt or load_prompt()
    prompt_ids = build_inputs(tokenizer, ex.query, ex.passages, prompt, max_words, fix_text=fix_text)
    text = render_prompt(tokenizer, ex.query, ex.passages, prompt, max_words, fix_text=fix_text)
    target = prompt.ranking_text(ex.order)                  # "[B] > [A] > ..."
    if not target.startswith(prompt.response_prefix):
        raise ValueError(f"target {target[:10]!r} does not start with {prompt.response_prefix!r}")
    ids = encode_text(tokenizer, text + target[len(prompt.response_prefix):] + (tokenizer.eos_token or ""))
    rank_pos = len(prompt_ids) - 1
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("prompt + target tokenises differently from the prompt alone at the boundary")
    if ids[rank_pos + 1] != identifier_ids[ex.order[0]]:
        raise ValueError("the token after '[' in the target is not the first identifier's token")
    labels = [IGNORE_INDEX] * rank_pos + ids[rank_pos:]     # "[" and everything after are targets
    n = len(ex.passages)
    rel = list(ex.relevance) if ex.relevance is not None else [float(n - r) for r in ex.ranks]
    return Encoded(ids, labels, rank_pos, list(ex.ranks), rel)


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, Tensor]:
    """Right-padded tensors; ``rank_pos`` stays each row's absolute index."""
    B, L = len(batch), max(len(e.input_ids) for e in batch)
    n = max(len(e.ranks) for e in batch)
    out = {
        "input_ids": torch.full((B, L), pad_id, dtype=torch.long),           # [B, L]
        "attention_mask": torch.zeros((B, L), dtype=torch.long),             # [B, L]
        "labels": torch.full((B, L), IGNORE_INDEX, dtype=torch.long),        # [B, L]
        "rank_pos": torch.tensor([e.rank_pos for e in batch]),               # [B]
        "ranks": torch.zeros((B, n), dtype=torch.long),                      # [B, n] 0 on padding
        "relevance": torch.zeros((B, n)),                                    # [B, n]
        "item_mask": torch.zeros((B, n), dtype=torch.bool),                  # [B, n]
    }
    for b, e in enumerate(batch):
        k, m = len(e.input_ids), len(e.ranks)
        out["input_ids"][b, :k] = torch.tensor(e.input_ids)
        out["attention_mask"][b, :k] = 1
        out["labels"][b, :k] = torch.tensor(e.labels)
        out["ranks"][b, :m] = torch.tensor(e.ranks)
        out["relevance"][b, :m] = torch.tensor(e.relevance)
        out["item_mask"][b, :m] = True
    return out


# ---------------------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class RankObjective:
    """What the loss is: which terms, which ranking loss, its weight, and how prompts are built."""

    objective: Literal["joint", "lm", "rank"] = "joint"   # rank: L_rank alone (official "ranking")
    rank_loss: Literal["ranknet", "listnet", "lambdarank"] = "ranknet"
    weighted: bool = True             # RankNet weights 1/(r_i + r_j)
    mask_ties: bool = True            # RankNet: no pair between passages of equal gold grade (untied_pairs)
    lam: float | None = None          # None: official weight for rank_loss (DEFAULT_LAMBDA)
    max_words: int | None = 300
    fix_text: bool = False

    @property
    def rank_weight(self) -> float:
        return self.lam if self.lam is not None else DEFAULT_LAMBDA[(self.rank_loss, self.weighted)]


def untied_pairs(relevance: Tensor) -> Tensor:
    """``[B, n, n]``: True where the gold labels of items ``i`` and ``j`` differ.

    TREC windows tie often (equal grades; every unjudged passage is 0): in a 20-passage window with one relevant
    passage, 171 of its 190 gold-ordered pairs (``C(19, 2)``) would only encode the first stage's order. The
    official FIRST data (rank_zephyr, a teacher's full permutation) has no ties; its ``rank_net`` drops pairs
    with ``y_true_i - y_true_j <= 0``. Without labels, ``relevance`` defaults to ``n - rank`` (no ties).
    """
    rel = relevance.float()                                                # [B, n]
    return rel[:, :, None] != rel[:, None, :]                              # [B, n, n]


def rank_loss(cfg: RankObjective, scores: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
    """The configured ranking loss on identifier logits ``scores[B, n]``."""
    mask = batch["item_mask"]
    if cfg.rank_loss == "ranknet":
        pairs = untied_pairs(batch["relevance"]) if cfg.mask_ties else None       # [B, n, n]
        return weighted_ranknet(scores, batch["ranks"], mask, weighted=cfg.weighted, pair_mask=pairs)
    if cfg.rank_loss == "listnet":
        return listnet(scores, ranks=batch["ranks"], mask=mask)
    if cfg.rank_loss == "lambdarank":
        return lambdarank(scores, batch["relevance"], mask)
    raise ValueError(f"unknown rank_loss {cfg.rank_loss!r}")


def compute_losses(model, batch: Mapping[str, Tensor], identifier_ids: Tensor, cfg: RankObjective) -> dict[str, Tensor]:
    """``{"loss", "lm", "rank"}`` from ONE forward over the batch.

    Vocabulary logits are only computed from the position before the first target token on
    (``logits_to_keep``): prompt positions carry no label, and their logits dominate the memory.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    ids, am, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]     # [B, L]
    rank_pos = batch["rank_pos"]                                                        # [B]
    if cfg.objective == "rank":            # the target is not needed: stop after the "["
        cut = int(rank_pos.max()) + 1
        ids, am, labels = ids[:, :cut], am[:, :cut], labels[:, :cut]                    # [B, cut]
    first_needed = int(rank_pos.min()) - (0 if cfg.objective == "rank" else 1)          # "[" is a target
    kwargs = {}
    offset = 0
    if accepts_kwarg(model, "logits_to_keep") and first_needed > 0:
        offset = first_needed
        kwargs["logits_to_keep"] = ids.shape[1] - offset
    logits = model(input_ids=ids, attention_mask=am, **kwargs).logits                   # [B, L - offset, V]
    rows = torch.arange(ids.shape[0], device=device)                                    # [B]
    n = batch["ranks"].shape[1]
    first = logits[rows, rank_pos - offset]                                             # [B, V]
    scores = first.index_select(-1, identifier_ids[:n].to(device)).float()              # [B, n]
    zero = logits.sum() * 0.0
    lm = lm_nll(logits, labels[:, offset:]) if cfg.objective != "rank" else zero
    rk = rank_loss(cfg, scores, batch) if cfg.objective != "lm" else zero
    if cfg.objective == "joint":
        total = first_loss(lm, rk, cfg.rank_weight)
    else:
        total = lm if cfg.objective == "lm" else rk
    return {"loss": total, "lm": lm, "rank": rk}


# ------------------------------------------------------------------------------ for lab.train.fit
def prepare(tokenizer, examples: Sequence[RankExample], obj: RankObjective,
            prompt: ListwisePrompt | None = None) -> tuple[list[Encoded], Tensor, int]:
    """``(encoded examples, identifier token ids [max_passages], pad id)``."""
    prompt = prompt or load_prompt()
    ident = identifier_token_ids(tokenizer, prompt.max_passages, prompt)
    encoded = [encode_example(tokenizer, ex, ident, prompt, obj.max_words, obj.fix_text) for ex in examples]
    return encoded, torch.tensor(ident), pad_token_id(tokenizer)


def collator(pad_id: int) -> Callable[[Sequence[Encoded]], dict[str, Tensor]]:
    return partial(collate, pad_id=pad_id)


def loss_fn(identifier_ids: Tensor, obj: RankObjective) -> Callable:
    """``loss_fn(model, batch) -> {"loss", "lm", "rank"}`` for :func:`lab.train.fit`."""
    return partial(compute_losses, identifier_ids=identifier_ids, cfg=obj)


@torch.no_grad()
def evaluate(model, tokenizer, examples: Sequence[RankExample], obj: RankObjective | None = None,
             prompt: ListwisePrompt | None = None) -> dict[str, float]:
    """Mean ``{"loss", "lm", "rank"}`` over ``examples`` (one example per forward), no update."""
    obj = obj or RankObjective()
    encoded, ident, pad_id = prepare(tokenizer, examples, obj, prompt)
    was_training = model.training
    model.eval()
    acc = {"loss": 0.0, "lm": 0.0, "rank": 0.0}
    for e in encoded:
        parts = compute_losses(model, collate([e], pad_id), ident, obj)
        for k in acc:
            acc[k] += float(parts[k]) / len(encoded)
    model.train(was_training)
    return acc
