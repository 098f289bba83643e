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
