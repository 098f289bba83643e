"""Prompt text as the official FIRST code builds it: ftfy.fix_text and the 4,096-token window budget."""

import pytest

from lab.rerank.listwise import build_inputs, encode_text, render_prompt, window_token_budget
from lab.rerank.prompts import load_prompt

MOJIBAKE = "The dendrites donâ\x80\x99t have terminating knobs \u201cat the end\u201d."   # a DL19 BM25 passage


def test_fix_text_repairs_the_prompt_only_when_asked(tokenizer):
    pytest.importorskip("ftfy")
    raw = render_prompt(tokenizer, "q", [MOJIBAKE, "plain &amp; simple"])
    fixed = render_prompt(tokenizer, "q", [MOJIBAKE, "plain &amp; simple"], fix_text=True)
    assert "donâ\x80\x99t" in raw and "don't" not in raw
    assert "The dendrites don't have terminating knobs \"at the end\"." in fixed
    assert "plain &amp; simple" in fixed          # ftfy leaves entities in text holding "<" (every chat template)
    assert fixed.endswith("assistant\n[")
    ids = build_inputs(tokenizer, "q", [MOJIBAKE], fix_text=True)
    assert ids == encode_text(tokenizer, render_prompt(tokenizer, "q", [MOJIBAKE], fix_text=True))


def _official_words(tokenizer, query, passages, context_size, reserve, max_length=300):
    """Direct transcription of the official create_prompt loop (rank_listwise_os_llm.py), prompt without "["."""
    n = len(passages)
    while True:
        num_tokens = len(encode_text(tokenizer, render_prompt(tokenizer, query, passages, None, max_length,
                                                              with_prefix=False)))
        if num_tokens <= context_size - reserve:
            return max_length, num_tokens
        max_length -= max(1, (num_tokens - context_size + reserve) // (n * 4))


def test_window_budget_shrinks_passages_as_the_official_loop(tokenizer):
    words = [f"w{i % 97}x" for i in range(300)]                       # ~3 SmolLM2 tokens a word
    passages = [" ".join(words[k:] + words[:k]) for k in range(20)]
    budget = window_token_budget(tokenizer, 4096, 20)
    reserve = len(tokenizer(" > ".join(f"[{i + 1}]" for i in range(20)), add_special_tokens=False)["input_ids"])
    assert budget == 4096 - reserve and reserve > len(tokenizer(load_prompt().ranking_text(range(20)),
                                                                add_special_tokens=False)["input_ids"])
    assert len(build_inputs(tokenizer, "q", passages, max_words=300)) > 4096          # the budget binds
    ids = build_inputs(tokenizer, "q", passages, max_words=300, max_tokens=budget)
    gen = build_inputs(tokenizer, "q", passages, max_words=300, max_tokens=budget, with_prefix=False)
    assert gen == ids[:-1] and len(gen) <= budget                    # same words in both modes; "[" not counted
    want_words, want_tokens = _official_words(tokenizer, "q", passages, 4096, reserve)
    assert len(gen) == want_tokens and want_words < 300
    shorter = build_inputs(tokenizer, "q", passages, max_words=want_words - 1, with_prefix=False)
    assert len(shorter) < len(gen)                                   # not over-shrunk past the official stop
    exact = build_inputs(tokenizer, "q", passages[:3], max_words=300, with_prefix=False)
    assert build_inputs(tokenizer, "q", passages[:3], max_words=300, max_tokens=len(exact))[:-1] == exact   # fits
    assert window_token_budget(tokenizer, 0, 20) is None
    with pytest.raises(ValueError, match="no room"):
        window_token_budget(tokenizer, 50, 20)


def test_sentencepiece_output_estimate_counts_split_digits(sp_tokenizer):
    # "[1]".."[9]" 3 pieces, "[10]".."[20]" 4 (split digits), 19 " >": 27 + 44 + 19
    assert window_token_budget(sp_tokenizer, 4096, 20) == 4096 - 90


def test_first_config_wires_fix_text_and_budget(tokenizer):
    from lab.methods.first.config import FirstConfig, FirstRerank
    from lab.methods.first.rerank import scorer
    from lab.methods.first.train import objective

    paper = FirstConfig(fix_text=True, context_size=4096, rerank=FirstRerank(window=20))
    for s in (scorer(paper, "single", None, tokenizer), scorer(paper, "gen", None, tokenizer, "free")):
        assert s.fix_text and s.max_tokens == window_token_budget(tokenizer, 4096, 20)
    assert objective(paper, "joint").fix_text
    smoke = FirstConfig()                                   # defaults = smoke: prompts as before
    s = scorer(smoke, "single", None, tokenizer)
    assert not s.fix_text and s.max_tokens is None and not objective(smoke, "joint").fix_text
