"""Machine-translated training queries: NanoVDR's "-Multi" augmentation (arXiv 2603.12824).

The paper finds cross-lingual transfer to be the student's main weakness and fixes it by adding the
English training queries machine-translated into German, French, Spanish, Italian and Portuguese
(MarianMT, Helsinki-NLP/opus-mt-en-{de,fr,es,it,pt}); the teacher then embeds each translation as its
own training query (the teacher is multilingual, the student learns to follow it).

* :class:`MarianTranslator`: the paper profile (lazy import; weights from the Hub via ``lab.models``).
* :class:`FakeTranslator`: deterministic and offline, for tests and the tiny profile. It does not
  translate; it marks the text so every downstream step can be checked.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from lab.records import Query

__all__ = ["Translator", "FakeTranslator", "MarianTranslator", "augment", "PAPER_LANGS", "build_translator"]

PAPER_LANGS = ("de", "fr", "es", "it", "pt")


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
    """English -> ``lang`` with MarianMT (``Helsinki-NLP/opus-mt-en-<lang>``), greedy or beam search.

    Needs ``sentencepiece`` and the Hub (``hf:`` refs in :mod:`lab.models`); cannot run offline here.
    """

    def __init__(self, model_template: str = "hf:Helsinki-NLP/opus-mt-en-{lang}", *, batch_size: int = 32,
                 num_beams: int = 1, max_length: int = 64, device: str | None = None):
        self.model_template, self.batch_size = model_template, batch_size
        self.num_beams, self.max_length, self.device = num_beams, max_length, device
        self._loaded: dict[str, tuple] = {}

    def _model(self, lang: str):
        if lang not in self._loaded:
            try:
                import torch
                from transformers import MarianMTModel, MarianTokenizer
            except ImportError as e:  # pragma: no cover
                raise ImportError("MarianTranslator needs transformers and sentencepiece: "
                                  "pip install sentencepiece") from e
            from lab.models import resolve

            folder = resolve(self.model_template.format(lang=lang))
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = MarianMTModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False).to(device).eval()
            self._loaded[lang] = (model, MarianTokenizer.from_pretrained(folder))
        return self._loaded[lang]

    def translate(self, texts: Sequence[str], lang: str) -> list[str]:
        import torch
        from tqdm.auto import tqdm

        model, tok = self._model(lang)
        out: list[str] = []
        for start in tqdm(range(0, len(texts), self.batch_size), desc=f"translate en->{lang}"):
            enc = tok(list(texts[start:start + self.batch_size]), return_tensors="pt", padding=True,
                      truncation=True, max_length=self.max_length).to(model.device)
            with torch.inference_mode():
                ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],   # [b, T]
                                     num_beams=self.num_beams, max_new_tokens=self.max_length, do_sample=False)
            out.extend(tok.batch_decode(ids, skip_special_tokens=True))
        return out


def build_translator(kind: str) -> Translator | None:
    if kind == "none":
        return None
    if kind == "fake":
        return FakeTranslator()
    if kind == "marian":
        return MarianTranslator()
    raise ValueError(f"unknown translator {kind!r} (none | fake | marian)")


def augment(queries: Sequence[Query], translator: Translator | None, langs: Sequence[str]) -> list[Query]:
    """The English queries followed by each language's translations, qids ``<qid>-<lang>``."""
    out = list(queries)
    if not langs:
        return out
    if translator is None:
        raise ValueError(f"languages {list(langs)} requested but no translator given")
    texts = [q.text for q in queries]
    for lang in langs:
        translated = translator.translate(texts, lang)
        if len(translated) != len(texts):
            raise RuntimeError(f"translator returned {len(translated)} texts for {len(texts)} ({lang})")
        out.extend(Query(f"{q.qid}-{lang}", t) for q, t in zip(queries, translated))
    return out
