"""Constrained permutation decoding: equals a cache-free greedy loop, shares FIRST's first step, stays in grammar."""

from __future__ import annotations

import torch

from lab.rerank.constrained import ConstrainedScorer, constrained_decode, separator_token_ids
from lab.rerank.evaluation import permutation_complete
from lab.rerank.listwise import SingleTokenScorer, build_inputs, collate_windows, pad_token_id, parse_permutation, rerank
from lab.rerank.prompts import load_prompt
from lab.records import Candidate, Query, Ranking, Run

PROMPT = load_prompt()
QUERIES = ["what is a lobster", "define photosynthesis"]
WINDOWS = [["Lobsters are crustaceans.", "Cars have wheels.", "Lobster rolls are food.", "Maine is cold."],
           ["Plants use light.", "Photosynthesis makes sugar.", "Rocks are hard."]]


def _naive(model, tokenizer, query, passages, ident, sep):
    """Greedy decoding under the grammar with the whole sequence recomputed every step (no KV cache)."""
    seq = build_inputs(tokenizer, query, passages, PROMPT, 300)
    order: list[int] = []
    with torch.no_grad():
        for _ in range(len(passages)):
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]                  # [V]
            scores = logits[ident[: len(passages)]].clone()                              # [n]
            scores[order] = float("-inf")
            pick = int(scores.argmax())
            order.append(pick)
            seq = seq + [ident[pick]] + sep
    return order


def test_separator_tokens_for_smollm2(tokenizer):
    ident = SingleTokenScorer(None, tokenizer, PROMPT).identifier_ids
    sep = separator_token_ids(tokenizer, PROMPT, ident)
    assert tokenizer.convert_ids_to_tokens(sep) == ["]", "Ġ>", "Ġ["]


def test_matches_cache_free_greedy_and_single_token(tokenizer, tiny_model):
    scorer = ConstrainedScorer(tiny_model, tokenizer, PROMPT, max_words=300)
    orders = scorer(QUERIES, WINDOWS)                                # one left-padded batch of two rows
    single = SingleTokenScorer(tiny_model, tokenizer, PROMPT, max_words=300)
    for q, w, got in zip(QUERIES, WINDOWS, orders):
        assert got == _naive(tiny_model, tokenizer, q, w, scorer.identifier_ids, scorer.separator_ids)
        assert sorted(got) == list(range(len(w)))
        assert scorer.single_view()([q], [w]) == single([q], [w])   # step 0 is FIRST's forward
        assert got[0] == single([q], [w])[0][0]                     # so the top-1 always agrees


def test_texts_are_complete_permutations(tokenizer, tiny_model):
    scorer = ConstrainedScorer(tiny_model, tokenizer, PROMPT, max_words=300)
    orders = scorer(QUERIES, WINDOWS)
    for text, w, o in zip(scorer.last_texts, WINDOWS, orders):
        assert permutation_complete(text, len(w), PROMPT.identifiers)
        assert parse_permutation(text, len(w), PROMPT.identifiers) == o


def test_forward_count_and_memo(tokenizer, tiny_model, count_forward):
    scorer = ConstrainedScorer(tiny_model, tokenizer, PROMPT, max_words=300)
    counter = count_forward(tiny_model)
    scorer(QUERIES, WINDOWS)
    assert counter.calls == 4                # 1 prefill + (max(n) = 4) - 1 cached steps, whole batch
    scorer.single_view()(QUERIES, WINDOWS)   # read back, no model call
    scorer(QUERIES[:1], WINDOWS[:1])
    assert counter.calls == 4


def test_decode_direct_on_padded_batch(tokenizer, tiny_model):
    scorer = ConstrainedScorer(tiny_model, tokenizer, PROMPT, max_words=300)
    seqs = [build_inputs(tokenizer, q, w, PROMPT, 300) for q, w in zip(QUERIES, WINDOWS)]
    batch = collate_windows(seqs, [len(w) for w in WINDOWS], scorer.identifier_ids[:4], pad_token_id(tokenizer))
    res = constrained_decode(tiny_model, batch, scorer.separator_ids)
    assert res.forwards == 4 and res.first_step.shape == (2, 4)
    assert torch.isinf(res.first_step[1, 3]) and len(res.orders[1]) == 3


def test_rerank_with_single_view_equals_single_token_run(tokenizer, tiny_model):
    ranking = Ranking(Query("q1", QUERIES[0]), [Candidate(f"d{i}", 1.0 / (i + 1), i + 1, t)
                                                for i, t in enumerate(WINDOWS[0])])
    run = Run("bm25")
    run.add(ranking)
    scorer = ConstrainedScorer(tiny_model, tokenizer, PROMPT, max_words=300)
    rerank(run, scorer, window=4, stride=2, depth=4, progress=False)
    shared = rerank(run, scorer.single_view(), window=4, stride=2, depth=4, progress=False)
    direct = rerank(run, SingleTokenScorer(tiny_model, tokenizer, PROMPT, max_words=300), window=4, stride=2,
                    depth=4, progress=False)
    assert [c.docid for c in list(shared)[0].candidates] == [c.docid for c in list(direct)[0].candidates]
