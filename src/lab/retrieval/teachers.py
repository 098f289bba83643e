"""Frozen NanoVDR teachers: page -> vector (offline index) and query -> vector (cached targets).

The paper's teacher is Qwen3-VL-Embedding-2B (2048-d): it embeds every page *image* once and every
training query once (with its query instruction). Two implementations share one interface:

* :class:`TextTeacher` (smoke profile): a sentence-transformers text encoder (all-mpnet-base-v2) that
  reads the page's **source text**, not its image. It is a stand-in for the VLM, nothing more: no
  model that reads page images runs here (CPU only, no Hub access). It keeps the pipeline's shape:
  a frozen, larger teacher fixes the embedding space; the student maps query text into it.
* :class:`Qwen3VLEmbeddingTeacher` (paper profile): the VLM over the page image (rendered, or a
  ViDoRe page), formatted, resized and pooled as the upstream embedder does (sources in its
  docstring). Lazy imports; needs ``transformers>=4.57``, the weights from the Hub and a GPU.

:func:`encode_cached` puts an :class:`~lab.retrieval.dense.EmbeddingCache` in front of either.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from lab.data.pages import Page
from lab.retrieval.dense import EmbeddingCache, Encoder, model_fingerprint

__all__ = ["Teacher", "TextTeacher", "Qwen3VLEmbeddingTeacher", "encode_cached", "build_teacher"]

QWEN3VL_QUERY_INSTRUCTION = "Find a document image that matches the given query."  # NanoVDR teacher.py default
QWEN3VL_INSTALL = ("pip install 'transformers>=4.57' accelerate torchvision  # and a CUDA GPU with torch's CUDA "
                   "build (AutoProcessor builds Qwen3-VL's video processor, which needs torchvision); "
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


# ---- Qwen3-VL-Embedding, as upstream runs it -------------------------------------------------------
# Read from the upstream embedder (QwenLM/Qwen3-VL-Embedding ``src/models/qwen3_vl_embedding.py``, shipped
# in the Hub repo as ``scripts/qwen3_vl_embedding.py``; stored copies read: robustonian/Qwen3-VL-Embedding
# src/models/qwen3_vl_embedding.py and wenchunchia/MultiModal-Search-Qwen3-VL-Embedding-
# scripts/qwen3_vl_embedding.py, identical in every line used here) and its image resizing
# (QwenLM/Qwen3-VL qwen-vl-utils/src/qwen_vl_utils/vision_process.py: fetch_image, smart_resize).
QWEN3VL_DEFAULT_INSTRUCTION = "Represent the user's input."   # upstream default_instruction (NanoVDR: pages)
QWEN3VL_IMAGE_FACTOR = 32                  # image_patch_size 16 x spatial merge 2
QWEN3VL_MIN_PIXELS = 4 * 32 * 32           # upstream MIN_PIXELS = 4 * IMAGE_FACTOR**2 = 4,096
QWEN3VL_MAX_PIXELS = 1800 * 32 * 32        # upstream MAX_PIXELS = 1800 * IMAGE_FACTOR**2 = 1,843,200
QWEN3VL_MAX_LENGTH = 8192                  # upstream MAX_LENGTH (truncation=True)


def qwen3vl_instruction(text: str | None) -> str:
    """Upstream ``format_model_input``: strip, add a full stop unless the instruction ends in
    punctuation (Unicode category P*); empty -> the default instruction."""
    import unicodedata

    text = (text or "").strip()
    if text and not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text or QWEN3VL_DEFAULT_INSTRUCTION


def smart_resize(height: int, width: int, factor: int = QWEN3VL_IMAGE_FACTOR, min_pixels: int = QWEN3VL_MIN_PIXELS,
                 max_pixels: int = QWEN3VL_MAX_PIXELS) -> tuple[int, int]:
    """qwen-vl-utils' ``smart_resize``: sides rounded to ``factor``, area clamped into the pixel range."""
    import math

    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen3vl_image(image, min_pixels: int = QWEN3VL_MIN_PIXELS, max_pixels: int = QWEN3VL_MAX_PIXELS):
    """qwen-vl-utils' ``fetch_image``: RGBA pasted on white (else ``convert("RGB")``), then a PIL resize
    (default filter) to :func:`smart_resize`'s size; the processor is then called with ``do_resize=False``."""
    from PIL import Image

    if image.mode == "RGBA":
        rgb = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(image, mask=image.split()[3])
    else:
        rgb = image.convert("RGB")
    height, width = smart_resize(rgb.height, rgb.width, min_pixels=min_pixels, max_pixels=max_pixels)
    return rgb.resize((width, height))


def _pool_last(hidden, mask):
    """Upstream ``_pooling_last``: the hidden state at each row's last attention-mask 1 (the final token
    of the chat, i.e. of the assistant generation prompt). [B, T, H] -> [B, H]."""
    import torch

    last = mask.shape[1] - mask.flip(dims=[1]).argmax(dim=1) - 1                 # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]     # [B, H]


class Qwen3VLEmbeddingTeacher:
    """Paper teacher: Qwen3-VL-Embedding over page **images** (pages) and query text (queries).

    Matches upstream ``Qwen3VLEmbedder.process`` (QwenLM/Qwen3-VL-Embedding
    ``src/models/qwen3_vl_embedding.py`` = Hub ``scripts/qwen3_vl_embedding.py``), as NanoVDR calls it
    (Ryenhails/NanoVDR ``nanovdr/teacher.py``: pages as ``{"image": im}``, queries as
    ``{"text": q, "instruction": "Find a document image that matches the given query."}``):

    * chat = system ``[{"type": "text", "text": instruction}]`` + user content (image first, then text;
      ``"NULL"`` when empty); pages get the default instruction ``"Represent the user's input."``;
      instructions get a final full stop unless they end in punctuation;
    * ``apply_chat_template(..., add_generation_prompt=True)``; processor with right padding,
      ``truncation=True, max_length=8192, padding=True, do_resize=False``;
    * images resized beforehand as qwen-vl-utils does (factor 32, 4,096..1,843,200 pixels, PIL default
      filter; no qwen-vl-utils dependency; torchvision only because ``AutoProcessor`` builds the checkpoint's
      video processor, which the teacher never calls);
    * embedding = final hidden state at the last attention-mask position, L2-normalised (2048-d, 2B).

    Not settled by the stored sources: upstream loads ``Qwen3VLForEmbedding`` (a ``Qwen3VLModel`` under
    ``.model``) with ``trust_remote_code``; we load ``Qwen3VLModel`` directly (same forward, weights
    found through the ``model.`` base prefix), which could not be checked against the real checkpoint
    here. ``dtype`` defaults to float16 as NanoVDR's teacher.py (which also used flash_attention_2; we
    leave the attention kernel to transformers). Needs ``transformers>=4.57``, torchvision, the Hub weights
    and a GPU.
    """

    def __init__(self, ref: str = "hf:Qwen/Qwen3-VL-Embedding-2B", *, query_instruction: str = QWEN3VL_QUERY_INSTRUCTION,
                 page_instruction: str = QWEN3VL_DEFAULT_INSTRUCTION, batch_size: int = 4, dtype: str = "float16",
                 device: str | None = None, min_pixels: int = QWEN3VL_MIN_PIXELS, max_pixels: int = QWEN3VL_MAX_PIXELS,
                 max_length: int = QWEN3VL_MAX_LENGTH, model=None, processor=None):
        self.name, self.ref = f"qwen3vl:{ref}", ref
        self.query_instruction = qwen3vl_instruction(query_instruction)
        self.page_instruction = qwen3vl_instruction(page_instruction)
        self.batch_size, self.dtype, self.device = batch_size, dtype, device
        self.min_pixels, self.max_pixels, self.max_length = min_pixels, max_pixels, max_length
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
            try:
                self._processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False, padding_side="right")
            except ImportError as e:  # pragma: no cover - depends on the install (torchvision)
                raise ImportError(f"Qwen3-VL teacher's processor: {e}\n{QWEN3VL_INSTALL}") from e
        return self._model, self._processor

    @property
    def dim(self) -> int:
        model, _ = self._load()
        return int(model.config.text_config.hidden_size)

    def fingerprint(self) -> str:
        return (f"Qwen3VLEmbeddingTeacher/2:{self.ref}:{self.page_instruction}:{self.dtype}:"
                f"{self.min_pixels}-{self.max_pixels}:{self.max_length}")

    def conversation(self, instruction: str, image=None, text: str | None = None) -> list[dict]:
        """Upstream ``format_model_input`` for an image and/or text (no video)."""
        content = []
        if image is not None:
            content.append({"type": "image", "image": image, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels})
        if text:
            content.append({"type": "text", "text": text})
        return [{"role": "system", "content": [{"type": "text", "text": instruction}]},
                {"role": "user", "content": content or [{"type": "text", "text": "NULL"}]}]

    def _embed(self, chats: Sequence[list[dict]] | Callable[[int], list[dict]], progress: bool, desc: str,
               lengths: Sequence[int] | None = None) -> np.ndarray:
        """Vectors of ``chats`` (a list, or ``chat(i)`` built per batch so a page image is decoded only when its
        batch runs: a 1.2M-page pool never sits in RAM). ``lengths``: items are batched longest first (length-
        sorted batches pad little; a 2,048-token page beside 60-token ones wastes most of a batch), the result is
        in input order."""
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        model, processor = self._load()
        n = len(lengths) if callable(chats) else len(chats)
        make = chats if callable(chats) else chats.__getitem__
        order = np.arange(n) if lengths is None else np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
        out = np.zeros((n, 0), dtype=np.float32)
        for start in tqdm(range(0, n, self.batch_size), desc=desc, disable=not progress):
            idx = order[start:start + self.batch_size]
            chunk = [make(int(i)) for i in idx]
            texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chunk]
            images = [qwen3vl_image(part["image"], self.min_pixels, self.max_pixels)
                      for c in chunk for part in c[1]["content"] if part["type"] == "image"] or None
            enc = processor(text=texts, images=images, truncation=True, max_length=self.max_length, padding=True,
                            do_resize=False, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state                              # [b, T, H]
                vec = F.normalize(_pool_last(hidden, enc["attention_mask"]).float(), p=2, dim=-1)   # [b, H]
            vec = vec.cpu().numpy().astype(np.float32)                               # [b, H]
            if out.shape[1] == 0:
                out = np.zeros((n, vec.shape[1]), dtype=np.float32)
            out[idx] = vec
        return out                                                                     # [N, H], input order

    def encode_pages(self, pages: Sequence[Page], *, progress: bool = True) -> np.ndarray:
        """Pages decoded batch by batch (lazily), batched by pixel count (read from the file header only)."""
        return self._embed(lambda i: self.conversation(self.page_instruction, image=pages[i].load_image(mode=None)),
                           progress, "teacher pages (VLM)", lengths=[page_pixels(p) for p in pages])

    def encode_queries(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        chats = [self.conversation(self.query_instruction, text=t) for t in texts]
        return self._embed(chats, progress, "teacher queries (VLM)", lengths=[len(t) for t in texts])


def page_pixels(page: Page) -> int:
    """Pixel count of a page image from its header (PIL decodes no pixel data for ``.size``); 0 without image."""
    if page.image is None:
        return 0
    from PIL import Image

    with Image.open(page.image) as im:
        return int(im.size[0] * im.size[1])


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
