"""FIRST single-token scoring on a tiny random Llama with the real SmolLM2 tokenizer."""

import pytest
import torch

from lab.records import Candidate, Query, Ranking, Run
from lab.rerank.listwise import (
    GenerationScorer, SingleTokenScorer, build_inputs, collate_windows, generate_permutation,
    identifier_token_ids, order_from_scores, pad_token_id, rerank, single_token_scores,
)
from lab.rerank.prompts import load_prompt

PASSAGES = [f"passage {i} about topic {i % 3} with a few words" for i in range(20)]


def test_identifier_tokens_are_single_letters_after_bracket(tokenizer):
    ids = identifier_token_ids(tokenizer, 20)
    assert ids == [tokenizer.convert_tokens_to_ids(c) for c in "ABCDEFGHIJKLMNOPQRST"]
    bracket = tokenizer("[", add_special_tokens=False)["input_ids"]
    assert tokenizer("[A", add_special_tokens=False)["input_ids"] == bracket + [ids[0]]
    # in the real context (generation prompt + "[") the letters are the same ids
    ctx = tokenizer.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False,
                                        add_generation_prompt=True) + "["
    assert identifier_token_ids(tokenizer, 20, context=ctx) == ids
    assert identifier_token_ids(tokenizer, 3) == ids[:3]


class _MergingTokenizer:
    """A tokenizer that encodes "[A" as one token: single-token ranking must refuse it."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1000 + ord(c) for c in text] if len(text) != 2 else [7]}

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]


def test_identifier_check_fails_loudly():
    with pytest.raises(ValueError, match="separate tokens"):
        identifier_token_ids(_MergingTokenizer(), 3, context="[")


def test_build_inputs_ends_with_bracket(tokenizer):
    ids = build_inputs(tokenizer, "what is x", PASSAGES[:3])
    assert tokenizer.convert_ids_to_tokens(ids[-4:]) == ["ass", "istant", "Ċ", "["]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and ids.count(ids[0]) == 3   # no extra BOS
    no_prefix = build_inputs(tokenizer, "what is x", PASSAGES[:3], with_prefix=False)
    assert no_prefix == ids[:-1]


def test_build_inputs_refuses_a_merged_bracket(tokenizer):
    original = tokenizer.chat_template
    tokenizer.chat_template = original.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant '")
    try:
        assert tokenizer.chat_template != original
        with pytest.raises(ValueError, match="standalone"):
            build_inputs(tokenizer, "q", PASSAGES[:2])        # " [" is one token ("Ġ[") here
    finally:
        tokenizer.chat_template = original


def test_max_tokens_shrinks_passages(tokenizer):
    long = [" ".join(["word"] * 200)] * 4
    full = build_inputs(tokenizer, "q", long, max_words=300)
    short = build_inputs(tokenizer, "q", long, max_words=300, max_tokens=len(full) // 2)
    assert len(short) <= len(full) // 2 and short[-1] == full[-1]


def test_logits_position_matches_manual_forward(tokenizer, tiny_model):
    prompt = load_prompt()
    ids = build_inputs(tokenizer, "what is x", PASSAGES[:5], prompt)
    ident = identifier_token_ids(tokenizer, 5)
    batch = collate_windows([ids], [5], ident, pad_token_id(tokenizer))
    got = single_token_scores(tiny_model, batch)                       # [1, 5]
    with torch.no_grad():
        full = tiny_model(input_ids=torch.tensor([ids])).logits        # [1, L, V]
    want = full[0, -1, ident]                                          # [5] last position, letters A..E
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=0)
    assert not torch.allclose(got[0], full[0, -2, ident], atol=1e-3)   # a different position differs


def test_left_padded_batch_equals_unbatched(tokenizer, tiny_model):
    windows = [("q one", PASSAGES[:20]), ("a longer second query", PASSAGES[3:10]), ("q3", PASSAGES[:2])]
    ident = identifier_token_ids(tokenizer, 20)
    seqs = [build_inputs(tokenizer, q, w) for q, w in windows]
    nums = [len(w) for _, w in windows]
    assert len({len(s) for s in seqs}) == 3                            # really padded
    batched = single_token_scores(tiny_model, collate_windows(seqs, nums, ident, pad_token_id(tokenizer)))
    assert batched.shape == (3, 20)
    for b, (s, n) in enumerate(zip(seqs, nums)):
        alone = single_token_scores(tiny_model, collate_windows([s], [n], ident[:n], pad_token_id(tokenizer)))
        torch.testing.assert_close(batched[b, :n], alone[0], atol=1e-5, rtol=0)
        assert torch.isinf(batched[b, n:]).all()


def test_order_from_scores_is_descending_and_stable():
    assert order_from_scores(torch.tensor([0.1, 0.9, 0.5, 0.9, -1.0]), 4) == [1, 3, 2, 0]


def _run(n_queries: int, n_cands: int, with_text: bool = True) -> Run:
    run = Run("bm25")
    for q in range(n_queries):
        cands = [Candidate(f"d{q}_{i}", float(n_cands - i), i + 1, PASSAGES[i % 20] if with_text else None)
                 for i in range(n_cands)]
        run.add(Ranking(Query(f"q{q}", f"query number {q}"), cands))
    return run


def test_single_token_mode_is_one_forward_per_window(tokenizer, tiny_model, count_forward):
    scorer = SingleTokenScorer(tiny_model, tokenizer, max_words=8)
    counter = count_forward(tiny_model)
    out = rerank(_run(1, 45), scorer, window=20, stride=10, depth=45, progress=False)
    assert counter.calls == 4                                          # (25,45) (15,35) (5,25) (0,15)
    counter.calls = 0
    out2 = rerank(_run(3, 45), scorer, window=20, stride=10, depth=45, progress=False, batch_size=3)
    assert counter.calls == 4                                          # 3 queries share each window's forward
    assert [c.docid for c in out2["q0"].candidates] == [c.docid for c in out["q0"].candidates]


def test_rerank_output_run(tokenizer, tiny_model):
    run = _run(2, 30)
    out = rerank(run, SingleTokenScorer(tiny_model, tokenizer, max_words=8), depth=25, progress=False,
                 name="bm25>first")
    assert out.name == "bm25>first" and list(out.rankings) == ["q0", "q1"]
    for qid in ("q0", "q1"):
        before, after = run[qid].candidates, out[qid].candidates
        assert sorted(c.docid for c in after) == sorted(c.docid for c in before)
        assert [c.docid for c in after[25:]] == [c.docid for c in before[25:]]    # below depth untouched
        assert [c.rank for c in after] == list(range(1, 31))
        scores = [c.score for c in after]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == 30


def test_rerank_window_semantics_with_an_oracle_scorer():
    """Back-to-front windows with a perfect scorer carry the best passage from the bottom to the top."""
    calls = []

    def oracle(queries, windows):                     # passage text = its true relevance
        calls.append([list(map(int, w)) for w in windows])
        return [sorted(range(len(w)), key=lambda i: -int(w[i])) for w in windows]

    run = Run("r")
    run.add(Ranking(Query("q", "q"), [Candidate(f"d{i}", 0.0, i + 1, str(i)) for i in range(10)]))
    out = rerank(run, oracle, window=4, stride=2, depth=10, progress=False)
    assert [len(c[0]) for c in calls] == [4, 4, 4, 4]                     # (6,10) (4,8) (2,6) (0,4)
    assert [c.docid for c in out["q"].candidates][:2] == ["d9", "d8"]     # top-2 always found
    assert calls[0] == [[6, 7, 8, 9]] and calls[1] == [[4, 5, 9, 8]]


def test_rerank_requires_text(tokenizer, tiny_model):
    with pytest.raises(ValueError, match="no text"):
        rerank(_run(1, 5, with_text=False), SingleTokenScorer(tiny_model, tokenizer), progress=False)


def test_generation_mode(tokenizer, tiny_model):
    seqs = [build_inputs(tokenizer, "q", PASSAGES[:3], with_prefix=False)]
    texts = generate_permutation(tiny_model, tokenizer, collate_windows(seqs, [3], [], pad_token_id(tokenizer)), 4)
    assert len(texts) == 1 and isinstance(texts[0], str)
    scorer = GenerationScorer(tiny_model, tokenizer, max_words=8, max_new_tokens=6)
    out = rerank(_run(2, 12), scorer, window=5, stride=3, progress=False, batch_size=2)
    for r in out:
        assert sorted(c.docid for c in r.candidates) == sorted(f"d{r.query.qid[1:]}_{i}" for i in range(12))
    assert len(scorer.last_texts) == 2
