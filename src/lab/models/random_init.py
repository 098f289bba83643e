"""``random:<arch>-<size>[@seed]``: seeded random-init models with a real tokenizer.

Tiny models (hidden 64, 2 layers, 4 heads) let the whole pipeline run end to end in tests: they
load in ~0.1 s and a forward pass takes milliseconds.  Paper-sized configs (``mistral-7b``,
``bert-base``...) exist for speed benchmarks, where only the shapes matter; ``random_config`` gives
their config without building anything (a 7B model is 14 GB even in bfloat16).

Tokenizers are borrowed so random models accept real text: decoder archs use SmolLM2's byte-level
BPE (49152 tokens, chat template included), encoder archs all-MiniLM-L6-v2's uncased WordPiece
(30522 tokens).  ``vocab_size`` is set to match and checked against the tokenizer at build time.
Weights come from ``torch.manual_seed(seed)`` (default 0) then transformers' own initialisation, so
the same spec, seed, torch and transformers versions give byte-identical safetensors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lab.models import packaged, store
from lab.models.store import UnknownModelError
from lab.paths import cache_dir, dumps_json

GENERATOR_VERSION = 1  # bump when the build below changes, to invalidate cached random models

DECODER_ARCHS = {"llama", "mistral", "qwen2", "qwen3"}
ENCODER_ARCHS = {"bert", "distilbert"}
TOKENIZER_SOURCE = {"decoder": "smollm2-135m-instruct", "encoder": "all-minilm-l6-v2"}
VOCAB = {"decoder": 49152, "encoder": 30522}  # len() of the two tokenizers above
SPECIAL_IDS = {  # SmolLM2: <|im_start|>=1, <|im_end|>=2 (also pad); BERT: [PAD]=0
    "decoder": {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
    "encoder": {"pad_token_id": 0},
}

_DECODER_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 2048,
                 "tie_word_embeddings": True}
# spec -> (model_type, config kwargs, storage dtype).  Paper sizes follow the published configs
# (vocab aside: it is always the borrowed tokenizer's, e.g. 49152 instead of Mistral's 32000).
SPECS: dict[str, tuple[str, dict[str, Any], str]] = {
    "llama-tiny": ("llama", _DECODER_TINY, "float32"),
    "mistral-tiny": ("mistral", {**_DECODER_TINY, "sliding_window": None}, "float32"),
    "qwen2-tiny": ("qwen2", _DECODER_TINY, "float32"),
    "qwen3-tiny": ("qwen3", {**_DECODER_TINY, "head_dim": 16}, "float32"),   # LaSER's backbone family
    "bert-tiny": ("bert", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 256, "max_position_embeddings": 512}, "float32"),
    "distilbert-tiny": ("distilbert", {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 256,
                                       "max_position_embeddings": 512}, "float32"),
    # bert-base-uncased: 110M parameters; distilbert-base-uncased: 66M.
    "bert-base": ("bert", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                           "intermediate_size": 3072, "max_position_embeddings": 512}, "float32"),
    "distilbert-base": ("distilbert", {"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
                                       "max_position_embeddings": 512}, "float32"),
    # Llama-2-7b (6.7B), Mistral-7B-v0.1 (7.2B, 4096 sliding window), Qwen2-7B (7.6B): bfloat16,
    # the dtype they are benchmarked in; float32 would need ~28 GB of RAM and disk.
    "llama-7b": ("llama", {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                           "num_key_value_heads": 32, "intermediate_size": 11008,
                           "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                           "tie_word_embeddings": False}, "bfloat16"),
    "mistral-7b": ("mistral", {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                               "num_key_value_heads": 8, "intermediate_size": 14336,
                               "max_position_embeddings": 32768, "sliding_window": 4096,
                               "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                               "tie_word_embeddings": False}, "bfloat16"),
    "qwen2-7b": ("qwen2", {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                           "num_key_value_heads": 4, "intermediate_size": 18944,
                           "max_position_embeddings": 32768, "rope_theta": 1000000.0,
                           "rms_norm_eps": 1e-6, "tie_word_embeddings": False}, "bfloat16"),
    # Qwen3-0.6B (LaSER's main backbone; published config: 28 layers, 16/8 heads of 128, tied embeddings).
    "qwen3-0.6b": ("qwen3", {"hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16,
                             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072,
                             "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                             "tie_word_embeddings": True}, "bfloat16"),
}

_REF = re.compile(r"^(?P<spec>[a-z0-9]+-[a-z0-9.]+)(?:@(?:seed=)?(?P<seed>\d+))?$")


def parse(body: str) -> tuple[str, int]:
    """``"llama-tiny@3"`` -> ``("llama-tiny", 3)``; the seed defaults to 0."""
    m = _REF.match(body.strip().lower())
    if not m or m["spec"] not in SPECS:
        raise UnknownModelError(
            f"unknown random model {body!r}: expected random:<arch>-<size>[@seed] with <arch>-<size> "
            f"one of {sorted(SPECS)}"
        )
    return m["spec"], int(m["seed"] or 0)


def family(spec: str) -> str:
    return "decoder" if SPECS[spec][0] in DECODER_ARCHS else "encoder"


def random_config(spec: str):
    """The transformers config of ``spec`` (cheap: nothing is allocated)."""
    from transformers import AutoConfig

    spec, _ = parse(spec.removeprefix("random:"))
    model_type, kwargs, dtype = SPECS[spec]
    fam = family(spec)
    kwargs = {**kwargs, "vocab_size": VOCAB[fam], **SPECIAL_IDS[fam]}
    if "rope_theta" in kwargs:  # transformers 5 keeps rope settings in rope_parameters
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": kwargs.pop("rope_theta")}
    config = AutoConfig.for_model(model_type, **kwargs)
    config.architectures = [_architecture(model_type, fam)]
    config.dtype = dtype
    return config


def _architecture(model_type: str, fam: str) -> str:
    base = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "bert": "Bert",
            "distilbert": "DistilBert"}[model_type]
    return f"{base}ForCausalLM" if fam == "decoder" else f"{base}Model"


def ensure(body: str) -> Path:
    """The cached folder of ``random:<body>``, built the first time."""
    import torch
    import transformers

    spec, seed = parse(body)
    fam = family(spec)
    tok_name = TOKENIZER_SOURCE[fam]
    source = {"kind": "random", "spec": spec, "seed": seed, "generator": GENERATOR_VERSION,
              "config": SPECS[spec][1], "torch": torch.__version__.split("+")[0],
              "transformers": transformers.__version__,
              "tokenizer": {"packaged": tok_name, "packages": packaged.package_versions(tok_name)}}
    ref = f"random:{spec}@{seed}" if seed else f"random:{spec}"
    folder = cache_dir("models") / "random" / f"{spec}-seed{seed}"
    return store.build_once(folder, ref, source, lambda out: build(spec, seed, out))


def build(spec: str, seed: int, out: Path) -> None:
    """Write config, seeded random safetensors and the borrowed tokenizer into ``out``."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    fam = family(spec)
    config = random_config(spec)
    tok_dir = packaged.ensure_tokenizer(TOKENIZER_SOURCE[fam])
    store.copy_files(tok_dir, out, [f for f in packaged.TOKENIZER_FILES if (tok_dir / f).is_file()])
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    tok_cfg["model_max_length"] = config.max_position_embeddings
    if config.model_type == "distilbert":  # DistilBERT's forward() takes no token_type_ids
        tok_cfg["model_input_names"] = ["input_ids", "attention_mask"]
    (out / "tokenizer_config.json").write_text(dumps_json(tok_cfg))
    n_tokens = len(AutoTokenizer.from_pretrained(out, trust_remote_code=False))
    if n_tokens != config.vocab_size:
        raise store.CorruptModelError(f"{spec}: tokenizer has {n_tokens} tokens, config {config.vocab_size}")
    auto = AutoModelForCausalLM if fam == "decoder" else AutoModel
    torch.manual_seed(seed)
    model = auto.from_config(config, dtype=getattr(torch, SPECS[spec][2]))
    model.save_pretrained(out)
