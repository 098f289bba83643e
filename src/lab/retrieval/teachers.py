"""Frozen NanoVDR teachers: page -> vector (offline index) and query -> vector (cached targets).

The paper's teacher is Qwen3-VL-Embedding-2B (2048-d): it embeds every page *image* once and every
training query once (with its query instruction). Two implementations share one interface:

* :class:`TextTeacher` (smoke profile): a sentence-transformers text encoder (all-mpnet-base-v2) that
  reads the page's **source text**, not its image. It is a stand-in for the VLM, nothing more: no
  model that reads page images runs here (CPU only, no Hub access). It keeps the pipeline's shape:
  a frozen, larger teacher fixes the embedding space; the student maps query text into it.
* :class:`Qwen3VLEmbeddingTeacher` (paper profile): the VLM over the rendered page image. Lazy
  imports; needs ``transformers>=4.57`` (Qwen3-VL), the weights from the Hub and a GPU in practice.

:func:`encode_cached` puts an :class:`~lab.retrieval.dense.EmbeddingCache` in front of either.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from lab.data.pages import Page
from lab.retrieval.dense import EmbeddingCache, Encoder, model_fingerprint

__all__ = ["Teacher", "TextTeacher", "Qwen3VLEmbeddingTeacher", "encode_cached", "build_teacher"]

QWEN3VL_QUERY_INSTRUCTION = "Find a document image that matches the given query."  # NanoVDR's cached targets
QWEN3VL_INSTALL = ("pip install 'transformers>=4.57' qwen-vl-utils accelerate  # and a CUDA GPU; "
                   "weights: hf:Qwen/Qwen3-VL-Embedding-2B")


@runtime_checkable
class Teacher(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    def fingerprint(self) -> str: ...

    def encode_pages(self, pages: Sequence[Page], *, progress: bool = True) -> np.ndarray: ...   # [N, D]

    def encode_queries(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray: ...  # [N, D]


class TextTeacher:
    """Smoke stand-in for the VLM teacher: a text encoder over ``page.text`` (the page image is unused).

    Pages are truncated to ``page_max_length`` tokens, queries to ``query_max_length``; queries get
    ``instruction`` prepended (empty for all-mpnet-base-v2, which has none).
    """

    def __init__(self, ref: str = "all-mpnet-base-v2", *, page_max_length: int = 128, query_max_length: int = 32,
                 instruction: str = "", batch_size: int = 32):
        self.name, self.ref = f"text:{ref}", ref
        self.page_max_length, self.query_max_length = page_max_length, query_max_length
        self.instruction, self.batch_size = instruction, batch_size
        self._encoder: Encoder | None = None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = Encoder.from_ref(self.ref, max_length=self.page_max_length)
        return self._encoder

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def fingerprint(self) -> str:
        return f"TextTeacher:{model_fingerprint(self.ref)}"

    def encode_pages(self, pages: Sequence[Page], *, progress: bool = True) -> np.ndarray:
        enc = self.encoder
        enc.max_length, enc.instruction = self.page_max_length, ""
        return enc.encode([p.text for p in pages], batch_size=self.batch_size, progress=progress,
                          desc="teacher pages")

    def encode_queries(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        enc = self.encoder
        enc.max_length, enc.instruction = self.query_max_length, self.instruction
        try:
            return enc.encode(list(texts), batch_size=max(self.batch_size, 64), progress=progress,
                              desc="teacher queries")
        finally:
            enc.instruction = ""


def _pool_last(hidden, mask):
    """Hidden state of each sequence's last real token (left or right padding). [B, T, H] -> [B, H]."""
    import torch

    if bool(mask[:, -1].all()):                                    # left padding: last column is real
        return hidden[:, -1]
    last = mask.long().sum(dim=1) - 1                              # [B] right padding
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class Qwen3VLEmbeddingTeacher:
    """Paper teacher: Qwen3-VL-Embedding over page **images** (pages) and query text (queries).

    Input format follows the Qwen3-VL-Embedding model card as we understand it: a chat with the
    instruction as system message and the page image (or query text) as user content; the embedding
    is the last token's final hidden state, L2-normalised (2048-d for the 2B model). Check it against
    the upstream ``scripts/qwen3_vl_embedding.py`` before trusting paper-profile numbers; it cannot
    run here (no GPU, no Hub).
    """

    def __init__(self, ref: str = "hf:Qwen/Qwen3-VL-Embedding-2B", *, query_instruction: str = QWEN3VL_QUERY_INSTRUCTION,
                 page_instruction: str = "Represent the user's input.", batch_size: int = 4,
                 dtype: str = "bfloat16", device: str | None = None, model=None, processor=None):
        self.name, self.ref = f"qwen3vl:{ref}", ref
        self.query_instruction, self.page_instruction = query_instruction, page_instruction
        self.batch_size, self.dtype, self.device = batch_size, dtype, device
        self._model, self._processor = model, processor

    def _load(self):
        if self._model is None:
            try:
                import torch
                from transformers import AutoProcessor, Qwen3VLModel
            except ImportError as e:  # pragma: no cover - depends on the install
                raise ImportError(f"Qwen3-VL teacher needs a newer transformers: {QWEN3VL_INSTALL}") from e
            from lab.models import resolve

            folder = resolve(self.ref)
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = Qwen3VLModel.from_pretrained(folder, dtype=getattr(torch, self.dtype),
                                                       use_safetensors=True, trust_remote_code=False).to(device).eval()
            self._processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
        return self._model, self._processor

    @property
    def dim(self) -> int:
        model, _ = self._load()
        return int(model.config.text_config.hidden_size)

    def fingerprint(self) -> str:
        return f"Qwen3VLEmbeddingTeacher:{self.ref}:{self.page_instruction}"

    def _embed(self, items: Sequence[dict], instruction: str, progress: bool, desc: str) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        model, processor = self._load()
        out = []
        for start in tqdm(range(0, len(items), self.batch_size), desc=desc, disable=not progress):
            chunk = items[start:start + self.batch_size]
            chats = [[{"role": "system", "content": [{"type": "text", "text": instruction}]},
                      {"role": "user", "content": [it]}] for it in chunk]
            texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
            images = [it["image"] for it in chunk if it["type"] == "image"] or None
            enc = processor(text=texts, images=images, padding=True, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state                              # [b, T, H]
                vec = F.normalize(_pool_last(hidden, enc["attention_mask"]).float(), dim=-1)   # [b, H]
            out.append(vec.cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def encode_pages(self, pages: Sequence[Page], *, progress: bool = True) -> np.ndarray:
        items = [{"type": "image", "image": p.load_image()} for p in pages]
        return self._embed(items, self.page_instruction, progress, "teacher pages (VLM)")

    def encode_queries(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        items = [{"type": "text", "text": t} for t in texts]
        return self._embed(items, self.query_instruction, progress, "teacher queries (VLM)")


def build_teacher(kind: str, ref: str, *, page_max_length: int = 128, query_max_length: int = 32,
                  instruction: str = "", batch_size: int = 32) -> Teacher:
    if kind == "text":
        return TextTeacher(ref, page_max_length=page_max_length, query_max_length=query_max_length,
                           instruction=instruction, batch_size=batch_size)
    if kind == "qwen3_vl":
        return Qwen3VLEmbeddingTeacher(ref, query_instruction=instruction or QWEN3VL_QUERY_INSTRUCTION,
                                       batch_size=batch_size)
    raise ValueError(f"unknown teacher kind {kind!r} (text | qwen3_vl)")


def encode_cached(teacher: Teacher, kind: str, items: Sequence, cache: EmbeddingCache | None, *,
                  progress: bool = True) -> np.ndarray:
    """``teacher.encode_pages`` (``kind="pages"``) or ``encode_queries`` (``"queries"``) through ``cache``.

    Key: sha256 of (teacher fingerprint, kind, texts, instruction, truncation); for pages the key
    covers the page text and, when rendered, the image file name (itself a content hash).
    """
    if kind == "pages":
        texts = [f"{p.docid}\t{p.text}\t{p.image.name if p.image else ''}" for p in items]
        compute = lambda: teacher.encode_pages(items, progress=progress)  # noqa: E731
    elif kind == "queries":
        texts = list(items)
        compute = lambda: teacher.encode_queries(texts, progress=progress)  # noqa: E731
    else:
        raise ValueError(f"kind must be 'pages' or 'queries', not {kind!r}")
    if cache is None:
        return compute()
    extra = {"kind": kind, **{k: getattr(teacher, k) for k in ("page_max_length", "query_max_length")
                              if hasattr(teacher, k)}}
    instruction = getattr(teacher, "instruction", getattr(teacher, "query_instruction", ""))
    key = EmbeddingCache.key(teacher.fingerprint(), texts, instruction if kind == "queries" else "", extra)
    return cache.get_or_compute(key, compute, kind=kind)
