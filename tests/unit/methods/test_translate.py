"""-Multi augmentation: translated copies of the training queries."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import config as lab_config
from lab.data.translate import (PAPER_LANGS, PAPER_PER_LANGUAGE, FakeTranslator, MarianTranslator, Translator,
                                augment, balanced_sample, build_translator)
from lab.records import Query
from tests.unit.rerank.conftest import sentencepiece_model  # noqa: F401  (the sentencepiece trainer fixture)


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


# ----------------------------------------------------------------------------- the paper's balance (per_language)
QS = [Query(str(i), f"query number {i}") for i in range(7)]


def test_augment_balances_each_language_to_its_own_seeded_sample():
    fake = FakeTranslator()
    out = augment(QS, fake, ["de", "fr"], per_language=3, seed=5)
    assert out[:7] == QS                                                    # English kept whole, first
    by = {lang: [q.qid for q in out[7:] if q.qid.endswith(f"-{lang}")] for lang in ("de", "fr")}
    assert [len(v) for v in by.values()] == [3, 3] and len(out) == 13 and fake.calls == [("de", 3), ("fr", 3)]
    for lang, qids in by.items():
        src = [q.rsplit("-", 1)[0] for q in qids]
        assert src == sorted(src, key=int) and len(set(src)) == 3         # file order, no repeats
        assert all(t.text == f"<{lang}> query number {q}" for t, q in zip(out[7:], src) if t.qid.endswith(lang))
    assert by["de"] != [q.replace("-fr", "-de") for q in by["fr"]]          # each language draws its own sample
    again = augment(QS, FakeTranslator(), ["de", "fr"], per_language=3, seed=5)
    assert again == out                                                     # same seed, same sample
    assert augment(QS, FakeTranslator(), ["de"], per_language=3, seed=5) == out[:10]   # fr added: de unchanged
    assert augment(QS, FakeTranslator(), ["de"], per_language=3, seed=6)[7:] != out[7:10]
    everything = augment(QS, FakeTranslator(), ["de"])                      # 0 = every query (smoke, tiny)
    assert everything == augment(QS, FakeTranslator(), ["de"], per_language=7) and len(everything) == 14
    with pytest.raises(ValueError, match="each language once"):
        augment(QS, FakeTranslator(), ["de", "de"])
    with pytest.raises(ValueError, match="per_language"):
        augment(QS, FakeTranslator(), ["de"], per_language=-1)


def test_index_stage_translates_with_the_configured_balance(make_cfg, fake_data):
    from lab.methods.nanovdr import index as nanovdr_index

    cfg = make_cfg(data_dir=str(fake_data), languages=["de", "fr"], translate={"per_language": 10})
    train = nanovdr_index.split_queries(cfg, seed=0)["train"]
    assert sum(q.qid.endswith("-de") for q in train) == sum(q.qid.endswith("-fr") for q in train) == 10
    assert sum("-" not in q.qid for q in train) == 45                       # 40 pool + 5 DL20, all English
    paper = lab_config.load("nanovdr", "paper")
    assert paper.translate.per_language == PAPER_PER_LANGUAGE == 156_000
    assert make_cfg().translate.per_language == 0                           # tiny (like smoke): every query


# ----------------------------------------------------------------------------- MarianTranslator end to end (no Hub)
@pytest.fixture(scope="module")
def marian_template(sentencepiece_model, tmp_path_factory):
    """Per language a folder like Helsinki-NLP/opus-mt-en-<lang>: a MarianTokenizer over the sentencepiece model
    trained on DL19 passages (source.spm = target.spm, vocab.json = its pieces + <pad>) and a random-init tiny
    MarianMTModel (safetensors). Positions are capped at 32, so an input that is not truncated cannot run."""
    import json

    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    root = tmp_path_factory.mktemp("marian")
    sp = spm.SentencePieceProcessor(model_file=str(sentencepiece_model))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["<pad>"] = pad = len(vocab)
    src = root / "src"
    src.mkdir()
    (src / "vocab.json").write_text(json.dumps(vocab))
    tok = MarianTokenizer(str(sentencepiece_model), str(sentencepiece_model), str(src / "vocab.json"),
                          source_lang="en", model_max_length=512)
    for seed, lang in enumerate(("de", "fr")):
        torch.manual_seed(seed)
        cfg = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=pad, eos_token_id=2,
                           decoder_start_token_id=pad, forced_eos_token_id=2)
        folder = root / f"opus-mt-en-{lang}"
        MarianMTModel(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
    return str(root / "opus-mt-en-{lang}")


@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_marian_translator_loads_folders_and_translates_in_batches(marian_template, dl19):
    import os

    from lab.models import store

    folder = marian_template.format(lang="de")
    assert {"source.spm", "target.spm", "vocab.json", "model.safetensors"} <= set(os.listdir(folder))
    assert {"source.spm", "target.spm"} <= set(store.model_files(Path(folder)))   # Hub snapshots keep them too
    texts = [q.text for q in dl19.queries[:5]]
    long = " ".join(c.text for c in dl19.runs["bm25"][dl19.qids[0]].candidates[:5])   # >> 32 tokens
    tr = MarianTranslator(marian_template, batch_size=2, max_length=12)
    model, tok = tr._model("de")
    assert type(tok).__name__ == "MarianTokenizer" and len(tok(long)["input_ids"]) > 32
    calls = []
    gen = model.generate
    model.generate = lambda **kw: calls.append(kw["input_ids"].shape) or gen(**kw)     # [b, T]
    out = tr.translate(texts + [long], "de")
    assert len(out) == 6 and all(isinstance(t, str) for t in out)
    assert [b for b, _ in calls] == [2, 2, 2] and max(t for _, t in calls) == 12        # batched, truncated
    assert tr.translate(texts + [long], "de") == out                                     # greedy: repeatable
    one_by_one = MarianTranslator(marian_template, batch_size=1, max_length=12).translate(texts, "de")
    assert one_by_one == out[:5]                                 # padding in a batch changes nothing
    assert MarianTranslator(marian_template, max_length=12).translate(texts, "fr") != out[:5]   # own model
    aug = augment(dl19.queries[:5], tr, ["de", "fr"], per_language=3, seed=0)
    assert len(aug) == 11 and all(q.qid.rsplit("-", 1)[1] in ("de", "fr") for q in aug[5:])
    assert [q.qid for q in aug[5:8]] == [f"{dl19.queries[i].qid}-de" for i in balanced_sample(5, 3, 0, "de")]


def test_marian_translator_refuses_a_template_without_lang_and_names_the_hub_failure(tmp_path, monkeypatch):
    from lab.models import HubUnreachableError

    with pytest.raises(ValueError, match="lang"):
        MarianTranslator("hf:Helsinki-NLP/opus-mt-en-de")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(HubUnreachableError, match=r"en->de: cannot get hf:Helsinki-NLP/opus-mt-en-de.*local folders"):
        MarianTranslator().translate(["what is a lobster"], "de")
    with pytest.raises(Exception, match="config.json"):
        MarianTranslator(str(tmp_path / "missing-{lang}")).translate(["x"], "de")
