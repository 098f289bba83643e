"""Machine-translated training queries: NanoVDR's "-Multi" augmentation (arXiv 2603.12824).

The paper finds cross-lingual transfer to be the student's main weakness and fixes it by adding the
English training queries machine-translated into German, French, Spanish, Italian and Portuguese
(MarianMT, Helsinki-NLP/opus-mt-en-{de,fr,es,it,pt}); the teacher then embeds each translation as its
own training query (the teacher is multilingual, the student learns to follow it).

* :class:`MarianTranslator`: the paper profile (lazy import; weights from the Hub or a local folder via
  ``lab.models``; greedy, so the same queries give the same translations).
* :class:`FakeTranslator`: deterministic and offline, for tests and the tiny profile. It does not
  translate; it marks the text so every downstream step can be checked.

Balance (:func:`augment`'s ``per_language``): the paper does not translate every English query into all five
languages. Its released mixture holds 1.49M queries (Ryenhails/NanoVDR README: "the 1.20M-image and 1.49M-query
mixture") of which 711K are the English base set (``base_711k``), so ~779K are translations: ~156K per language,
drawn from ~490K English source queries (arXiv 2603.12824, multilingual query augmentation, as summarised by the
paper notes; the paper's own table could not be read here). Each language therefore gets its own seeded sample of
at most ``per_language`` English queries; English is kept whole.
"""

from __future__ import annotations

import zlib
from typing import Protocol, Sequence, runtime_checkable

from lab.records import Query

__all__ = ["Translator", "FakeTranslator", "MarianTranslator", "augment", "balanced_sample", "PAPER_LANGS",
           "PAPER_PER_LANGUAGE", "MARIAN_HUB", "build_translator"]

PAPER_LANGS = ("de", "fr", "es", "it", "pt")
PAPER_PER_LANGUAGE = 156_000          # ~(1.49M - 711K) / 5: see the module doc
MARIAN_HUB = "hf:Helsinki-NLP/opus-mt-en-{lang}"


@runtime_checkable
class Translator(Protocol):
    def translate(self, texts: Sequence[str], lang: str) -> list[str]: ...


class FakeTranslator:
    """``"<de> what is ..."``: a deterministic stand-in that keeps the text and tags the language."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def translate(self, texts: Sequence[str], lang: str) -> list[str]:
        self.calls.append((lang, len(texts)))
        return [f"<{lang}> {t}" for t in texts]


class MarianTranslator:
    """English -> ``lang`` with MarianMT (``Helsinki-NLP/opus-mt-en-<lang>``), greedy (``num_beams=1``) or beam search.

    ``model_template``: a :mod:`lab.models` reference with ``{lang}``: ``hf:Helsinki-NLP/opus-mt-en-{lang}`` (the
    paper's, needs the Hub or the local HF cache) or a local folder per language (``/models/opus-mt-en-{lang}``:
    config.json, model.safetensors, source.spm, target.spm, vocab.json). Inputs longer than ``max_length`` tokens
    are truncated; outputs stop at ``max_length`` new tokens. Needs ``sentencepiece`` (MarianTokenizer).
    lab loads safetensors only: on the Hub some opus-mt-en-* repos carry ``model.safetensors`` only on the
    conversion bot's pull-request branch (opus-mt-en-de: ``refs/pr/4``), which ``hf:<repo>@<revision>`` or a
    local folder reaches; without it :func:`lab.models.resolve` refuses the repo with a clear error.
    """

    def __init__(self, model_template: str = MARIAN_HUB, *, batch_size: int = 32, num_beams: int = 1,
                 max_length: int = 64, device: str | None = None):
        if "{lang}" not in model_template:
            raise ValueError(f"translator model {model_template!r} needs a {{lang}} placeholder (one model per "
                             "target language, e.g. hf:Helsinki-NLP/opus-mt-en-{lang})")
        if batch_size < 1 or num_beams < 1 or max_length < 1:
            raise ValueError(f"batch_size {batch_size}, num_beams {num_beams}, max_length {max_length}: "
                             "expected positive ints")
        self.model_template, self.batch_size = model_template, batch_size
        self.num_beams, self.max_length, self.device = num_beams, max_length, device
        self._loaded: dict[str, tuple] = {}

    def _model(self, lang: str):
        if lang not in self._loaded:
            try:
                import sentencepiece  # noqa: F401  (MarianTokenizer reads source.spm / target.spm with it)
                import torch
                from transformers import MarianMTModel, MarianTokenizer
            except ImportError as e:  # pragma: no cover
                raise ImportError("MarianTranslator needs transformers and sentencepiece: "
                                  "pip install sentencepiece") from e
            from lab.models import ModelError, resolve

            ref = self.model_template.format(lang=lang)
            try:
                folder = resolve(ref)
            except ModelError as e:     # HubUnreachableError & co.: keep the type, say which translator and how
                raise type(e)(f"MarianTranslator en->{lang}: {e}. Offline, point nanovdr.translate.model at local "
                              "folders (a path with {lang})") from e
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = MarianMTModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False).to(device).eval()
            self._loaded[lang] = (model, MarianTokenizer.from_pretrained(folder))
        return self._loaded[lang]

    def translate(self, texts: Sequence[str], lang: str) -> list[str]:
        import torch
        from tqdm.auto import tqdm

        model, tok = self._model(lang)
        out: list[str] = []
        for start in tqdm(range(0, len(texts), self.batch_size), desc=f"translate en->{lang}",
                          disable=len(texts) <= self.batch_size):
            enc = tok(list(texts[start:start + self.batch_size]), return_tensors="pt", padding=True,
                      truncation=True, max_length=self.max_length).to(model.device)            # [b, T <= max_length]
            with torch.inference_mode():
                ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                     num_beams=self.num_beams, max_new_tokens=self.max_length,
                                     do_sample=False)                                           # [b, T_out]
            out.extend(t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True))
        return out


def build_translator(kind: str, *, model: str = MARIAN_HUB, batch_size: int = 32, num_beams: int = 1,
                     max_length: int = 64) -> Translator | None:
    """``none`` | ``fake`` | ``marian`` (the keyword arguments go to :class:`MarianTranslator`)."""
    if kind == "none":
        return None
    if kind == "fake":
        return FakeTranslator()
    if kind == "marian":
        return MarianTranslator(model, batch_size=batch_size, num_beams=num_beams, max_length=max_length)
    raise ValueError(f"unknown translator {kind!r} (none | fake | marian)")


def balanced_sample(n: int, per_language: int, seed: int, lang: str) -> list[int]:
    """Sorted positions of the ``n`` English queries that ``lang`` gets: all when ``per_language`` is 0 or >= n,
    else a sample of ``per_language`` without replacement, seeded by (``seed``, ``lang``) so each language draws
    its own and adding a language leaves the others' samples unchanged."""
    if per_language < 0:
        raise ValueError(f"per_language {per_language}: expected >= 0 (0 = every query)")
    if per_language == 0 or per_language >= n:
        return list(range(n))
    import numpy as np

    rng = np.random.default_rng([seed, zlib.crc32(lang.encode())])
    return sorted(int(i) for i in rng.choice(n, size=per_language, replace=False))


def augment(queries: Sequence[Query], translator: Translator | None, langs: Sequence[str], *,
            per_language: int = 0, seed: int = 0) -> list[Query]:
    """The English queries followed by each language's translations, qids ``<qid>-<lang>``.

    ``per_language`` > 0: each language translates only its :func:`balanced_sample` of the queries (file order
    kept), the paper's balance; 0 translates every query into every language."""
    out = list(queries)
    if not langs:
        return out
    if translator is None:
        raise ValueError(f"languages {list(langs)} requested but no translator given")
    if len(set(langs)) != len(langs):
        raise ValueError(f"languages {list(langs)}: each language once")
    for lang in langs:
        chosen = [queries[i] for i in balanced_sample(len(queries), per_language, seed, lang)]
        texts = [q.text for q in chosen]
        translated = translator.translate(texts, lang)
        if len(translated) != len(texts):
            raise RuntimeError(f"translator returned {len(translated)} texts for {len(texts)} ({lang})")
        out.extend(Query(f"{q.qid}-{lang}", t) for q, t in zip(chosen, translated))
    return out
