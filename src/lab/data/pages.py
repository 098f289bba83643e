"""Document pages: a passage rendered as a page image, the input a visual document retriever indexes.

NanoVDR (arXiv 2603.12824) indexes *page images* with a frozen VLM teacher. The smoke profile has no
VLM and no page images, so every passage is rendered here as a plain page (Pillow's default font,
greedy word wrap) and written as a PNG: the page path through the pipeline is real, only the teacher
that reads it is a stand-in (see :mod:`lab.retrieval.teachers`).

Rendering is deterministic: same text, size and Pillow version -> same PNG bytes (no timestamps or
metadata are written), so page files can be content-addressed and reused across runs.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from lab.paths import atomic_path

__all__ = ["Page", "render_page", "wrap_text", "render_pages", "page_key", "write_pool"]

MARGIN = 10          # pixels around the text block
LINE_SPACING = 1.25  # line height = font_size * LINE_SPACING


@dataclass(frozen=True)
class Page:
    """One document page: its id, the source text it was rendered from, and the rendered PNG.

    ``text`` is what a text teacher reads (the smoke stand-in); ``image`` is the file a VLM teacher
    reads: a PNG rendered here, or a benchmark's own page image (:mod:`lab.data.vidore`); ``None`` for
    a page that was never rendered, e.g. in unit tests of text-only code.
    """

    docid: str
    text: str
    image: Path | None = None

    def __post_init__(self):
        if not isinstance(self.docid, str):
            object.__setattr__(self, "docid", str(self.docid))

    def load_image(self, mode: str | None = "RGB") -> Image.Image:
        """The page image in ``mode`` (``None``: as stored, e.g. RGBA, for callers with their own
        conversion such as the Qwen3-VL teacher, which pastes transparency on white)."""
        if self.image is None:
            raise FileNotFoundError(f"page {self.docid}: no rendered image")
        with Image.open(self.image) as im:
            if mode is None:
                im.load()
                return im.copy()
            return im.convert(mode)


@lru_cache(maxsize=8)
def _font(font_size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow >= 10.1 ships a scalable default font (FreeType build); without FreeType it falls back
    # to the fixed bitmap font, whose glyphs ignore ``size``: still deterministic, just smaller.
    return ImageFont.load_default(size=font_size)


def wrap_text(text: str, font, max_width: int) -> list[str]:
    """Greedy word wrap by rendered width; a word wider than a line is split by characters."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.getlength(word) > max_width:          # split over-long tokens (URLs, ids)
                cut = max(1, next((i for i in range(len(word), 0, -1)
                                   if font.getlength(word[:i]) <= max_width), 1))
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def render_page(text: str, width: int = 320, height: int = 416, font_size: int = 12) -> Image.Image:
    """``text`` drawn black on a white ``width x height`` greyscale page, wrapped to fit.

    Lines that do not fit vertically are dropped (a page holds what it holds); the last kept line
    ends with an ellipsis when text was cut.
    """
    if width <= 2 * MARGIN or height <= 2 * MARGIN or font_size <= 0:
        raise ValueError(f"page {width}x{height} with font {font_size} leaves no room for text")
    font = _font(font_size)
    step = max(1, round(font_size * LINE_SPACING))
    lines = wrap_text(text, font, width - 2 * MARGIN)
    fits = max(1, (height - 2 * MARGIN) // step)
    if len(lines) > fits:
        lines = lines[:fits]
        lines[-1] = lines[-1].rstrip() + " …"
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + i * step), line, font=font, fill=0)
    return image


def png_bytes(image: Image.Image) -> bytes:
    """PNG without metadata (byte-stable for the same pixels and Pillow version)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def page_key(text: str, width: int, height: int, font_size: int) -> str:
    """Content address of a rendered page (sha256 of the rendering inputs)."""
    h = hashlib.sha256(f"{width}x{height}@{font_size}\n".encode())
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def render_pages(docs: Iterable[tuple[str, str]] | Sequence[tuple[str, str]], folder: str | Path, *,
                 width: int = 320, height: int = 416, font_size: int = 12,
                 progress: bool = True) -> list[Page]:
    """Render ``(docid, text)`` pairs as PNGs under ``folder`` (named by content hash) -> pages.

    A PNG already present under its content hash is reused, not redrawn, so a re-run (or a second
    pool sharing passages) costs only the hashing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    docs = list(docs)
    pages = []
    for docid, text in tqdm(docs, desc="render pages", unit="page", disable=not progress):
        path = folder / f"{page_key(text, width, height, font_size)[:32]}.png"
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_bytes(png_bytes(render_page(text, width, height, font_size)))
        pages.append(Page(docid, text, path))
    return pages


def write_pool(pages: Sequence[Page], path: str | Path, root: str | Path) -> None:
    """A page pool as JSONL, one ``{"docid", "text", "page"}`` per line, ``page`` = the image path relative to
    ``root`` (``null`` if never rendered); atomic and byte-stable. Written by the NanoVDR index stage for its
    smoke pools and its ViDoRe sets alike, and read back as :class:`Page` by their loaders."""
    lines = [json.dumps({"docid": p.docid, "text": p.text,
                         "page": p.image.relative_to(root).as_posix() if p.image else None},
                        ensure_ascii=False, sort_keys=True) + "\n" for p in pages]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
