"""Each NanoVDR objective *learns*: on a tiny separable problem, trained through the stage's own wiring
(``lab.retrieval.distill`` batches and loss, ``lab.train.fit`` with ``nanovdr.train``'s settings), its loss falls
and the student agrees with the teacher far more than the same projector untrained.

The problem: a teacher space of width ``D`` with ``C`` orthonormal page vectors; each query belongs to one page,
its teacher vector is that page's plus noise (so the teacher's top-1 page is the query's own, and the other
pages' order is the noise's); the frozen "backbone" states the projector reads are a fixed random linear map of
the teacher vector plus noise (``features``: the frozen-backbone path of ``nanovdr.distill``). A projector can
therefore recover the teacher's space; an untrained one scores pages at random (top-1 agreement ~ 1/C).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lab.methods.nanovdr import distill as nanovdr_distill
from lab.retrieval import distill as D
from lab.retrieval.dense import Encoder, Projector

DIM, PAGES, HIDDEN, N_TRAIN, N_VAL = 16, 8, 24, 192, 64
SCORE_ONLY = ("infonce", "listwise_kl", "margin_mse")     # constrain scores against pages, not the vector itself


def separable_problem(seed: int = 0):
    g = np.random.default_rng(seed)
    pages = np.linalg.qr(g.normal(size=(DIM, DIM)))[0][:PAGES].astype(np.float32)          # [C, D] orthonormal
    mix = (g.normal(size=(DIM, HIDDEN)) / np.sqrt(DIM)).astype(np.float32)                  # [D, H] the "backbone"

    def split(n):
        own = g.integers(0, PAGES, size=n)                                                  # [n]
        t = pages[own] + (0.35 / np.sqrt(DIM) * g.normal(size=(n, DIM))).astype(np.float32)   # [n, D]
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        x = t @ mix + (0.01 * g.normal(size=(n, HIDDEN))).astype(np.float32)                # [n, H]
        scores = t @ pages.T                                                                # [n, C]
        topk = np.argsort(-scores, axis=1, kind="stable")                                   # [n, C] best first
        return [f"q{i}" for i in range(n)], t, torch.from_numpy(x), topk, np.take_along_axis(scores, topk, 1)

    (tr_texts, tr_t, tr_x, tr_k, tr_s), (va_texts, va_t, va_x, va_k, va_s) = split(N_TRAIN), split(N_VAL)
    data = D.DistillData(train_texts=tr_texts, train_targets=tr_t, val_texts=va_texts, val_targets=va_t,
                         doc_emb=pages, train_topk=tr_k, train_topk_scores=tr_s, val_topk=va_k, val_topk_scores=va_s)
    return data, tr_x, va_x


def student(seed: int = 0) -> Encoder:
    """The student as ``nanovdr.distill`` trains it with a frozen backbone: only the projector is the module."""
    torch.manual_seed(seed)
    return Encoder(torch.nn.Identity(), None, projector=Projector(HIDDEN, DIM, 32))


def agreement(projector, data, features) -> float:
    """Share of held-out queries whose top-1 page under the student is the teacher's top-1 page."""
    with torch.no_grad():
        s = F.normalize(projector(features), dim=-1)                                       # [V, D]
    top1 = (s @ torch.from_numpy(data.doc_emb).T).argmax(1).numpy()                         # [V]
    return float((top1 == data.val_topk[:, 0]).mean())


@pytest.mark.parametrize("objective", ["cosine", "mse", "infonce", "listwise_kl", "margin_mse", "cosine_kl"])
def test_objective_learns_a_separable_problem(objective, make_cfg, tmp_path):
    from lab.train import fit

    cfg = make_cfg(train={"epochs": 12, "batch_size": 32, "lr": 1e-2, "finetune_backbone": False, "kl_top_k": PAGES,
                          "negatives": 3, "negative_offset": 1, "num_threads": 1})
    obj = nanovdr_distill.objective_settings(cfg, objective)
    settings = nanovdr_distill.train_settings(cfg, seed=0, progress=False)
    data, train_x, val_x = separable_problem()
    enc = student()
    untrained = student().projector.eval()                     # the same seeded init, never trained
    before = D.validate(untrained, enc, data, obj, val_x)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                   # as distill trains a projector: one thread
    try:
        result = fit(enc.projector, list(range(N_TRAIN)), D.collator(enc, data.train_texts, train_x),
                     D.loss_fn(enc, data, obj), settings, checkpoint_dir=tmp_path / "ckpt", fingerprint=objective,
                     evaluator=lambda m: D.validate(m, enc, data, obj, val_x))
    finally:
        torch.set_num_threads(threads)
    after = D.validate(result.model, enc, data, obj, val_x)
    curve = [r["loss"] for r in result.records("train")]                                   # one per epoch
    assert len(curve) == 12 and curve[-1] < 0.2 * curve[0], f"{objective}: training loss did not fall: {curve}"
    assert after["val_loss"] < 0.2 * before["val_loss"], (objective, before, after)
    base, got = agreement(untrained, data, val_x), agreement(result.model, data, val_x)
    assert base < 0.5 and got >= 0.9, f"{objective}: top-1 agreement with the teacher {base:.2f} -> {got:.2f}"
    assert after["val_cosine"] > before["val_cosine"] + 0.5, (objective, before, after)
    if objective not in SCORE_ONLY:                            # these regress the teacher's vector itself
        assert after["val_cosine"] > 0.9, (objective, before, after)
