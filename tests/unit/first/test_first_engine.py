"""first.rerank.engine: HF by default (smoke), vLLM serves whole model folders with free generation."""

from dataclasses import replace

import pytest

from lab.methods.first import rerank as first_rerank
from tests.unit.first.conftest import load_cfg


def test_engine_choice(tiny_llama, tmp_path, monkeypatch):
    assert load_cfg("smoke").rerank.engine == "hf" and load_cfg("paper").rerank.engine == "hf"
    model, tok, engine = first_rerank.load_engine(load_cfg("tiny"), tiny_llama)
    assert engine is None and type(model).__name__ == "LlamaForCausalLM"         # None = HF on the model
    cfg = load_cfg("tiny", rerank={"engine": "vllm", "generation": "free", "vllm_logprobs": 25})
    with pytest.raises(ValueError, match="constrained"):
        first_rerank.load_engine(replace(cfg, rerank=replace(cfg.rerank, generation="constrained")), tiny_llama)
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter"):
        first_rerank.load_engine(cfg, tiny_llama, tmp_path / "lora")
    seen = {}
    monkeypatch.setattr("lab.rerank.engines.make_engine", lambda kind, path, tok, **kw: seen.update(kind=kind, path=path, **kw) or "E")
    model, tok, engine = first_rerank.load_engine(cfg, tiny_llama)
    assert model is None and engine == "E" and seen["kind"] == "vllm" and seen["path"] == str(tiny_llama)
    assert seen["logprobs"] == 25 and seen["dtype"] == cfg.optim.dtype
