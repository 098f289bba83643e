"""-Multi augmentation: translated copies of the training queries."""

from __future__ import annotations

import pytest

from lab.data.translate import FakeTranslator, MarianTranslator, PAPER_LANGS, Translator, augment, build_translator
from lab.records import Query


def test_augment_appends_each_language_with_new_qids():
    qs = [Query("1", "what is a lobster"), Query("2", "tax brackets")]
    fake = FakeTranslator()
    out = augment(qs, fake, ["de", "fr"])
    assert [q.qid for q in out] == ["1", "2", "1-de", "2-de", "1-fr", "2-fr"]
    assert out[2].text == "<de> what is a lobster" and fake.calls == [("de", 2), ("fr", 2)]
    assert augment(qs, None, []) == qs


def test_augment_refuses_languages_without_translator_and_bad_output():
    with pytest.raises(ValueError):
        augment([Query("1", "x")], None, ["de"])

    class Broken:
        def translate(self, texts, lang):
            return []

    with pytest.raises(RuntimeError):
        augment([Query("1", "x")], Broken(), ["de"])


def test_translators_follow_the_protocol_and_marian_is_lazy():
    assert isinstance(FakeTranslator(), Translator) and isinstance(MarianTranslator(), Translator)
    assert MarianTranslator()._loaded == {}                      # nothing downloaded or imported at construction
    assert build_translator("none") is None and isinstance(build_translator("fake"), FakeTranslator)
    assert PAPER_LANGS == ("de", "fr", "es", "it", "pt")


def test_marian_translate_batches_and_decodes_with_a_tiny_random_model(lab_cache):
    """The generate/decode path of MarianTranslator on a random-init tiny Marian (no Hub): one output per input,
    batched, greedy so repeatable, one model per language."""
    import torch
    from transformers import AutoTokenizer, MarianConfig, MarianMTModel

    from lab.models import resolve

    tok = AutoTokenizer.from_pretrained(resolve("random:bert-tiny"))
    torch.manual_seed(0)
    cfg = MarianConfig(vocab_size=tok.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
                       decoder_start_token_id=tok.pad_token_id)
    tr = MarianTranslator(batch_size=2, max_length=6)
    tr._loaded["de"] = (MarianMTModel(cfg).eval(), tok)           # what _model("de") would load from the Hub
    texts = ["what is a lobster", "tax brackets", "how do volcanoes form"]
    out = tr.translate(texts, "de")
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert tr.translate(texts, "de") == out
    assert [q.qid for q in augment([Query(str(i), t) for i, t in enumerate(texts)], tr, ["de"])][-1] == "2-de"
