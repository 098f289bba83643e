"""Loading resolved models, and ``materialise`` for the DVC ``models`` stage.

Every load goes through transformers with ``use_safetensors=True`` (a pickled ``*.bin`` is never
unpickled) and ``trust_remote_code=False`` (no Python from a model folder ever runs); callers cannot
override either.
"""

from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

from lab.models import store
from lab.models.registry import resolve

Kind = Literal["auto", "causal_lm", "encoder"]

# Fixed inputs of the manifest's sanity values (changing them changes every manifest).
SANITY_SENTENCE = "The quick brown fox jumps over the lazy dog."
SANITY_PROMPT = "The capital of France is"
_ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def model_kind(folder: str | os.PathLike) -> str:
    """"causal_lm" when config.json's architectures name a *ForCausalLM / *LMHeadModel, else "encoder"."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    archs = config.get("architectures") or []
    return "causal_lm" if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) else "encoder"


def _safe_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.pop("trust_remote_code", False):
        raise ValueError("lab.models never loads with trust_remote_code=True (it would run code from the model folder)")
    if kwargs.pop("use_safetensors", True) is not True:
        raise ValueError("lab.models loads safetensors only (use_safetensors=True)")
    return {**kwargs, "use_safetensors": True, "trust_remote_code": False}


def _torch_dtype(dtype: Any):
    import torch

    if dtype is None or dtype == "auto":
        return "auto"  # the dtype the weights are stored in (float32 for packaged/tiny models)
    if isinstance(dtype, str):
        return getattr(torch, dtype.removeprefix("torch."))
    return dtype


def load_model(ref: str | os.PathLike, kind: Kind = "auto", dtype: Any = None, **kwargs: Any):
    """Resolve ``ref`` and load it in eval mode.

    ``kind``: "causal_lm" -> ``AutoModelForCausalLM``; "encoder" -> ``AutoModel`` (also gives the
    bare decoder of a causal LM); "auto" picks from config.json's ``architectures``.  ``dtype``:
    None/"auto" keeps the stored dtype, else a torch dtype or its name ("bfloat16").
    """
    from transformers import AutoModel, AutoModelForCausalLM

    folder = resolve(ref)
    if kind == "auto":
        kind = model_kind(folder)
    if kind not in ("causal_lm", "encoder"):
        raise ValueError(f"kind must be 'auto', 'causal_lm' or 'encoder', not {kind!r}")
    auto = AutoModelForCausalLM if kind == "causal_lm" else AutoModel
    model = auto.from_pretrained(folder, dtype=_torch_dtype(dtype), **_safe_kwargs(dict(kwargs)))
    return model.eval()


def load_tokenizer(ref: str | os.PathLike, **kwargs: Any):
    """Resolve ``ref`` and load its tokenizer (never with remote code)."""
    from transformers import AutoTokenizer

    kwargs = _safe_kwargs(dict(kwargs))
    kwargs.pop("use_safetensors")
    return AutoTokenizer.from_pretrained(resolve(ref), **kwargs)


def materialise(refs: Mapping[str, str], out_dir: str | os.PathLike) -> dict:
    """Resolve each ``role: ref`` into ``out_dir/<role>`` and describe it.

    Returns ``{role: {...}}`` with sorted keys and no paths, timestamps or unrounded floats, so
    the JSON (``lab.paths.write_json``) is byte-identical across runs of the same refs.
    Each entry: role, ref, kind, architecture, model_type, parameters (tied weights counted once),
    hidden_size, num_layers, vocab_size, dtype, sha256 of model.safetensors (or of each shard),
    source (package versions / Hub commit / seed), and ``sanity``: the L2 norm of the mean-pooled
    embedding of ``SANITY_SENTENCE`` (encoders) or the greedy next token after ``SANITY_PROMPT``
    (causal LMs), rounded to 4 decimals.
    """
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {}
    for role in sorted(refs):
        if not _ROLE.match(role):
            raise ValueError(f"role {role!r} is not a plain folder name")
        folder = resolve(refs[role], out_dir=out_dir / role)
        manifest[role] = describe(folder, ref=refs[role], role=role)
        gc.collect()
    return manifest


def describe(folder: str | os.PathLike, *, ref: str, role: str | None = None) -> dict:
    """The manifest entry of a resolved folder (loads the model once for the sanity value)."""
    import torch
    from transformers import AutoConfig

    folder = Path(folder)
    marker = store.read_marker(folder) or {}
    hashes = {rel: meta["sha256"] for rel, meta in marker.get("files", {}).items()
              if rel.endswith(".safetensors")}
    if not hashes:
        hashes = {p.name: store.verified_sha256(p) for p in sorted(folder.glob("*.safetensors"))}
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    kind = model_kind(folder)
    model = load_model(folder, kind=kind)
    tok = load_tokenizer(folder)
    with torch.no_grad():
        if kind == "causal_lm":
            ids = tok(SANITY_PROMPT, return_tensors="pt")
            next_id = int(model(**ids).logits[0, -1].argmax())
            sanity = {"prompt": SANITY_PROMPT, "next_token_id": next_id, "next_token": tok.decode([next_id])}
        else:
            enc = tok([SANITY_SENTENCE], return_tensors="pt")
            hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            sanity = {"sentence": SANITY_SENTENCE, "mean_pooled_l2": round(float(pooled.norm()), 4)}
    entry = {
        "role": role, "ref": ref, "kind": kind,
        "architecture": (config.architectures or [type(model).__name__])[0],
        "model_type": config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),  # shared (tied) tensors once
        "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "sha256": hashes.get("model.safetensors", hashes), "source": marker.get("source"),
        "sanity": sanity,
    }
    del model
    return json.loads(json.dumps(entry, sort_keys=True))
