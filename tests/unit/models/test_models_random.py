"""Random-init models: seeded, runnable end to end, paper sizes available as configs only."""

from __future__ import annotations


import pytest
import torch

from lab.models import load_model, load_tokenizer, random_config, resolve
from lab.models import random_init, store

TINY_ENCODERS = ["bert-tiny", "distilbert-tiny"]
TINY_DECODERS = ["llama-tiny", "mistral-tiny", "qwen2-tiny"]


def test_same_seed_same_bytes_other_seed_other_weights(isolated_cache, tmp_path):
    paths = []
    for i, seed in enumerate((0, 0, 1)):
        out = tmp_path / f"build{i}"
        out.mkdir()
        random_init.build("bert-tiny", seed, out)
        paths.append(out / "model.safetensors")
    a, b, c = (store.sha256_file(p) for p in paths)
    assert a == b
    assert a != c


def test_cached_random_model_is_reused(isolated_cache):
    first = resolve("random:bert-tiny")
    builds = store.BUILDS["random:bert-tiny"]
    assert resolve("random:bert-tiny") == first
    assert store.BUILDS["random:bert-tiny"] == builds
    assert resolve("random:bert-tiny@1") != first


@pytest.mark.parametrize("spec", TINY_ENCODERS)
def test_tiny_encoder_runs(isolated_cache, spec):
    resolve(f"random:{spec}")
    model, tok = load_model(f"random:{spec}"), load_tokenizer(f"random:{spec}")
    enc = tok(["hello world", "a longer second sentence"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    assert hidden.shape == (2, enc["input_ids"].shape[1], 64)
    assert model.config.vocab_size == len(tok) == 30522


@pytest.mark.slow  # borrows SmolLM2's tokenizer: needs the packaged conversion (default cache)
@pytest.mark.parametrize("spec", TINY_DECODERS)
def test_tiny_decoder_runs_and_generates(spec):
    resolve(f"random:{spec}")
    model, tok = load_model(f"random:{spec}"), load_tokenizer(f"random:{spec}")
    assert type(model).__name__.endswith("ForCausalLM")
    assert model.config.vocab_size == len(tok) == 49152
    assert tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


@pytest.mark.parametrize("spec,params_b", [("mistral-7b", 7.38), ("llama-7b", 6.88), ("qwen2-7b", 6.88),
                                           ("bert-base", 0.1095), ("distilbert-base", 0.0664)])
def test_paper_sized_configs_without_allocating(spec, params_b):
    """Parameter counts on the meta device (no memory): published size + the borrowed vocab."""
    from transformers import AutoModel, AutoModelForCausalLM

    config = random_config(f"random:{spec}")
    auto = AutoModelForCausalLM if random_init.family(spec) == "decoder" else AutoModel
    with torch.device("meta"):
        model = auto.from_config(config)
    n = sum(p.numel() for p in model.parameters()) / 1e9
    assert n == pytest.approx(params_b, rel=0.01), n

