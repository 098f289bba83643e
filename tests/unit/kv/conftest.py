"""Tiny random-init Llama targets (lab.models.random_config, no tokenizer load), one torch thread."""

from __future__ import annotations

import pytest

from tests.conftest import one_torch_thread

_one_torch_thread = pytest.fixture(scope="package", autouse=True)(one_torch_thread)


def tiny_llama(layers: int = 3, seed: int = 0, vocab: int = 512):
    import torch
    from transformers import AutoModelForCausalLM

    from lab.models import random_config

    cfg = random_config("random:llama-tiny")
    cfg.num_hidden_layers, cfg.vocab_size = layers, vocab
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


@pytest.fixture(scope="package")
def target():
    return tiny_llama()
