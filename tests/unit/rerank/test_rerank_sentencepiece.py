"""Single-token FIRST with a sentencepiece (Llama/Mistral/zephyr-style) tokenizer, both transformers kinds.

There a bare ``"["`` encodes as ``▁[`` (dummy prefix) while the prompt ``...<|assistant|>\\n[`` ends with the
plain ``[`` piece; the identifier the model emits after it is the piece ``A``, not ``▁A``.
"""

import torch

from lab.rerank.constrained import separator_token_ids
from lab.rerank.listwise import (
    SingleTokenScorer, build_inputs, collate_windows, identifier_token_ids, pad_token_id, single_token_scores,
)
from lab.rerank.prompts import load_prompt
from lab.rerank.train import RankExample, encode_example

LETTERS = "ABCDEFGHIJKLMNOPQRST"
PASSAGES = ["Fleas live up to a year.", "A cat flea's life cycle is 2 weeks to 8 months.", "Dogs bark [A] loudly.",
            "Flea eggs hatch in 2 to 14 days.", "Pest control tips."]


def test_bare_bracket_is_not_the_prompt_bracket(sp_tokenizer):
    tok = sp_tokenizer
    assert tok.convert_ids_to_tokens(tok("[", add_special_tokens=False)["input_ids"]) == ["▁["]
    ids = build_inputs(tok, "how long do fleas live", PASSAGES)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.convert_ids_to_tokens(ids[-3:]) == [">", "<0x0A>", "["]           # "<|assistant|>\n["
    assert build_inputs(tok, "how long do fleas live", PASSAGES, with_prefix=False) == ids[:-1]


def test_identifier_ids_are_the_letters_after_the_bracket(sp_tokenizer):
    tok = sp_tokenizer
    ident = identifier_token_ids(tok, 20)
    assert ident == tok.convert_tokens_to_ids(list(LETTERS))     # official: convert_tokens_to_ids(chr(c))
    assert not set(ident) & set(tok.convert_tokens_to_ids(["▁" + c for c in LETTERS]))
    prompt_ids = build_inputs(tok, "q", PASSAGES)
    for i, letter in enumerate(LETTERS[:5]):                     # what the model would emit after the prompt
        text = tok.apply_chat_template(load_prompt().messages("q", PASSAGES, 300), tokenize=False,
                                       add_generation_prompt=True) + "[" + letter
        assert tok(text)["input_ids"] == prompt_ids + [ident[i]]


def test_scores_are_read_at_the_bracket(sp_tokenizer, sp_tiny_model):
    tok, model = sp_tokenizer, sp_tiny_model
    scorer = SingleTokenScorer(model, tok, max_words=20)
    order = scorer(["how long do fleas live"], [PASSAGES])[0]
    ids = build_inputs(tok, "how long do fleas live", PASSAGES, max_words=20)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]                # [V]
    want = logits[tok.convert_tokens_to_ids(list(LETTERS[:5]))]                     # [5]
    torch.testing.assert_close(scorer.last_scores[0], want, atol=1e-5, rtol=0)
    assert order == torch.sort(want, descending=True, stable=True).indices.tolist()
    batch = collate_windows([ids], [5], identifier_token_ids(tok, 5), pad_token_id(tok))
    torch.testing.assert_close(single_token_scores(model, batch)[0], want, atol=1e-5, rtol=0)


def test_training_target_and_constrained_separator(sp_tokenizer):
    tok = sp_tokenizer
    ident = identifier_token_ids(tok, 20)
    enc = encode_example(tok, RankExample("q", PASSAGES[:3], [2, 1, 3]), ident)
    tail = tok.convert_ids_to_tokens(enc.input_ids[enc.rank_pos:])
    assert tail == ["[", "B", "]", "▁>", "▁[", "A", "]", "▁>", "▁[", "C", "]", "</s>"]
    assert enc.input_ids[enc.rank_pos + 1] == ident[1]
    assert tok.convert_ids_to_tokens(separator_token_ids(tok, load_prompt(), ident)) == ["]", "▁>", "▁["]


def test_both_kinds_encode_prompts_alike(sentencepiece_model, tmp_path):
    from tests.unit.rerank.conftest import make_sp_tokenizer

    fast, slow = (make_sp_tokenizer(k, sentencepiece_model, tmp_path) for k in ("fast", "slow"))
    assert type(fast).__name__ == "LlamaTokenizer" and type(slow).__name__ == "SentencePieceLlamaTokenizer"
    assert build_inputs(fast, "how long do fleas live", PASSAGES) == build_inputs(slow, "how long do fleas live",
                                                                                  PASSAGES)
