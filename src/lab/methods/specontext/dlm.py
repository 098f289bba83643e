"""Stage specontext_dlm: build the layer-reduced DLM of the target and distil it on real text.

*(our design)* Text: the candidate passages of ``specontext.dlm.dataset`` (TREC DL 2019 BM25 top-100, in run
order, deduplicated) joined and cut into ``seq_len``-token sequences; the target's top-``k`` next-token logits are
computed once and cached in memory; :func:`lab.losses.lm_distill.topk_logit_kl` through :func:`lab.train.fit`.
Only the DLM's non-embedding weights are saved (the embedding is the target's, frozen): ~14M parameters for
SmolLM2-135M with 4 layers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from lab.paths import atomic_path, dumps_json

__all__ = ["passage_texts", "token_sequences", "teacher_topk", "distill", "save_dlm", "load_dlm", "heldout_kl"]


def passage_texts(data_dir: str | Path, dataset: str, first_stage: str, seed: int = 0) -> list[str]:
    """Distinct candidate passage texts of ``dataset``/``first_stage``, shuffled by ``seed``."""
    import random

    from lab.data.trecdl import load_materialised

    run = load_materialised(data_dir, dataset, [first_stage]).runs[first_stage]
    seen: dict[str, str] = {}
    for ranking in run:
        for c in ranking.candidates:
            if c.text and c.docid not in seen:
                seen[c.docid] = c.text.strip()
    texts = list(seen.values())
    random.Random(seed).shuffle(texts)
    return texts


def token_sequences(tokenizer, texts: list[str], n: int, length: int, skip: int = 0) -> torch.Tensor:
    """``(n, length)`` token ids: ``texts`` joined by blank lines, tokenized, cut; the first ``skip`` sequences
    are skipped (calibration text follows the distillation text without overlap)."""
    need = (n + skip) * length
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise ValueError(f"only {len(ids)} tokens of text, {need} needed ({n + skip} x {length})")
    return torch.tensor(ids[skip * length:need]).view(n, length)


@torch.no_grad()
def teacher_topk(target, seqs: torch.Tensor, k: int, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's top-``k`` logits and ids at every position: ``(N, T, k)`` fp32 and int64."""
    vals, ids = [], []
    for i in range(0, len(seqs), batch):
        logits = target(input_ids=seqs[i:i + batch]).logits.float()                  # (b, T, V)
        v, j = logits.topk(k, dim=-1)
        vals.append(v), ids.append(j)
    return torch.cat(vals), torch.cat(ids)


def _collate(items):
    return {"input_ids": torch.stack([x[0] for x in items]), "values": torch.stack([x[1] for x in items]),
            "ids": torch.stack([x[2] for x in items])}


def _loss_fn(temperature: float):
    from lab.losses.lm_distill import topk_logit_kl

    def loss_fn(model, batch):
        logits = model(input_ids=batch["input_ids"]).logits                           # (b, T, V)
        v = logits.shape[-1]
        return topk_logit_kl(logits.reshape(-1, v), batch["values"].flatten(0, 1), batch["ids"].flatten(0, 1),
                             temperature)

    return loss_fn


def distill(dlm, seqs: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, cfg, seed: int = 0, run=None,
            progress: bool = True):
    """Distil ``dlm`` in place on ``seqs`` with the target's cached top-k; returns the FitResult."""
    from lab.train import TrainSettings, fit

    d = cfg.dlm
    settings = TrainSettings(max_steps=d.steps, batch_size=d.batch_size, lr=d.lr, scheduler="cosine",
                             warmup_steps=d.warmup_steps, max_grad_norm=1.0, seed=seed, progress=progress)
    data = [(seqs[i], values[i], ids[i]) for i in range(len(seqs))]
    key = hashlib.sha256(dumps_json({"dlm": repr(d), "seed": seed, "data": float(values.sum())}).encode()).hexdigest()
    return fit(dlm, data, _collate, _loss_fn(d.temperature), settings, fingerprint=key, run=run,
               log_prefix="dlm")


@torch.no_grad()
def heldout_kl(model, seqs: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean top-k KL of ``model`` to the target on held-out sequences."""
    loss = _loss_fn(temperature)
    model.eval()
    return float(sum(float(loss(model, _collate([(seqs[i], values[i], ids[i])]))) for i in range(len(seqs)))
                 / len(seqs))


def save_dlm(dlm, folder: str | Path, layers) -> Path:
    """``dlm.safetensors`` (non-embedding weights) + ``dlm.json`` (target layers) in ``folder``."""
    from safetensors.torch import save_file

    from lab.kv.retrieval_head import trainable_state

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in trainable_state(dlm).items()}
    with atomic_path(folder / "dlm.safetensors") as tmp:
        save_file(state, str(tmp))
    with atomic_path(folder / "dlm.json") as tmp:
        Path(tmp).write_text(dumps_json({"layers": list(layers)}))
    return folder


def load_dlm(target, folder: str | Path | None, layers):
    """The distilled DLM (``folder`` from :func:`save_dlm`) or, with ``folder=None``, the undistilled copy."""
    from safetensors.torch import load_file

    from lab.kv.retrieval_head import build_dlm

    if folder is not None:
        saved = json.loads((Path(folder) / "dlm.json").read_text())["layers"]
        if list(saved) != list(layers):
            raise ValueError(f"{folder}/dlm.json: layers {saved} != specontext.dlm.layers {list(layers)}")
    dlm = build_dlm(target, list(layers))
    if folder is not None:
        missing, unexpected = dlm.load_state_dict(load_file(str(Path(folder) / "dlm.safetensors")), strict=False)
        if unexpected or any("embed_tokens" not in k and "lm_head" not in k for k in missing):
            raise ValueError(f"{folder}: weights do not match the DLM (missing {missing}, unexpected {unexpected})")
    return dlm.eval()
