"""The paper profile's objective table: α·cosine + β·ranking KL over the paper's (α, β) sweep, and InfoNCE on hard
labels; each against a direct formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.losses import distill as L
from lab.retrieval import distill as D

B, Dm, K, M = 5, 8, 6, 3


def _kl_direct(ss, ts, tau):
    ps = torch.softmax(ss / tau, -1)
    pt = torch.softmax(ts / tau, -1)
    return float((pt * (pt.log() - ps.log())).sum(-1).mean())


@pytest.mark.parametrize("a,b", D.PAPER_SWEEP)
def test_alignment_kl_is_the_weighted_sum_by_hand(a, b):
    g = torch.Generator().manual_seed(int(10 * a + b * 3))
    s, t = torch.randn(B, Dm, generator=g), torch.randn(B, Dm, generator=g)
    ss, ts = torch.randn(B, K, generator=g), torch.randn(B, K, generator=g)
    cos = 1 - float(np.mean([float(s[i] @ t[i] / (s[i].norm() * t[i].norm())) for i in range(B)]))
    want = a * cos + b * _kl_direct(ss, ts, 0.2)
    got = L.alignment_kl(s, t, ss, ts, align_weight=a, kl_weight=b, temperature=0.2)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_sweep_endpoints_and_errors():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(B, Dm, generator=g), torch.randn(B, Dm, generator=g)
    ss, ts = torch.randn(B, K, generator=g), torch.randn(B, K, generator=g)
    assert float(L.alignment_kl(s, t, None, None, align_weight=1, kl_weight=0)) == float(L.cosine_alignment(s, t))
    assert float(L.alignment_kl(s, t, ss, ts, align_weight=0, kl_weight=1)) == pytest.approx(
        float(L.listwise_kl(ss, ts)), rel=1e-6)
    with pytest.raises(ValueError, match="not both 0"):
        L.alignment_kl(s, t, ss, ts, align_weight=0, kl_weight=0)
    with pytest.raises(ValueError, match="needs student and teacher page scores"):
        L.alignment_kl(s, t, None, None, align_weight=1, kl_weight=0.5)


def test_objective_names():
    assert D.paper_objectives() == ("align1_kl0", "align1_kl0.5", "align1_kl1", "align0.5_kl1", "align0_kl1",
                                    "infonce_hard")
    assert [D.sweep_weights(n) for n in D.paper_objectives()[:5]] == [tuple(map(float, w)) for w in D.PAPER_SWEEP]
    assert D.sweep_weights("cosine") is None and not D.needs_pages("align1_kl0") and D.needs_pages("align1_kl0.5")
    assert D.needs_pages("infonce_hard") and all(D.needs_pages(o) for o in D.DOC_OBJECTIVES)
    for bad in ("align0_kl0", "alignx_kl1", "cosine2"):
        with pytest.raises(ValueError, match="unknown objective"):
            D.ObjectiveSettings(objective=bad)


def _data(positives):
    g = np.random.default_rng(0)
    docs = g.standard_normal((10, Dm)).astype(np.float32)
    targets = g.standard_normal((B, Dm)).astype(np.float32)
    topk = np.stack([g.permutation(10)[:K] for _ in range(B)])
    return D.DistillData([""] * B, targets, [], targets[:0], doc_emb=docs, train_topk=topk,
                         train_topk_scores=g.standard_normal((B, K)).astype(np.float32),
                         train_positives=np.asarray(positives))


def test_sweep_point_through_objective_loss_matches_the_loss():
    data = _data([-1] * B)
    s = torch.nn.functional.normalize(torch.randn(B, Dm, generator=torch.Generator().manual_seed(1)), dim=-1)
    cfg = D.ObjectiveSettings(objective="align0.5_kl1", kl_top_k=4, temperature=0.1)
    idx = torch.arange(B)
    docs, top = torch.from_numpy(data.doc_emb), torch.from_numpy(data.train_topk)
    ss = torch.einsum("bd,bkd->bk", s, docs[top[:, :4]])
    want = L.alignment_kl(s, torch.from_numpy(data.train_targets), ss, torch.from_numpy(data.train_topk_scores[:, :4]),
                          align_weight=0.5, kl_weight=1.0, temperature=0.1)
    assert float(D.objective_loss(s, idx, data, "train", cfg)) == pytest.approx(float(want), rel=1e-6)


def test_hard_label_infonce_uses_ground_truth_pages_and_skips_unlabelled():
    data = _data([3, -1, 7, 3, -1])
    s = torch.nn.functional.normalize(torch.randn(B, Dm, generator=torch.Generator().manual_seed(2)), dim=-1)
    cfg = D.ObjectiveSettings(objective="infonce_hard", negatives=2, negative_offset=1, temperature=0.1)
    got = D.objective_loss(s, torch.arange(B), data, "train", cfg)
    keep = torch.tensor([0, 2, 3])
    docs, top = torch.from_numpy(data.doc_emb), torch.from_numpy(data.train_topk)
    pos = torch.tensor([3, 7, 3])
    want = L.infonce(s[keep], docs[pos], docs[top[keep, 1:3]], temperature=0.1, pos_ids=pos, neg_ids=top[keep, 1:3])
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    # queries 0 and 3 share page 3: neither is the other's negative (masked), so the loss is finite and the
    # same page's logit is counted once per row
    assert torch.isfinite(got)
    none = D.objective_loss(s, torch.tensor([1, 4]), data, "train", cfg)
    assert float(none) == 0.0                                    # no labelled query: a zero loss
    with pytest.raises(ValueError, match="needs ground-truth pages"):
        D.objective_loss(s, torch.arange(B), D.DistillData([""] * B, data.train_targets, [], data.train_targets[:0],
                                                           doc_emb=data.doc_emb, train_topk=data.train_topk,
                                                           train_topk_scores=data.train_topk_scores), "train", cfg)


def test_profiles_carry_the_tables(monkeypatch):
    from pathlib import Path

    from lab import config
    from lab.methods.nanovdr.config import PAPER_TABLE, SMOKE_COMPARISON

    monkeypatch.delenv("LAB_PAPER_DRY_RUN", raising=False)
    params = Path(__file__).resolve().parents[3] / "params.yaml"
    assert config.load("nanovdr", "paper", params).objectives == PAPER_TABLE == D.paper_objectives()
    assert config.load("nanovdr", "smoke", params).objectives == SMOKE_COMPARISON == L.OBJECTIVES
    for name in PAPER_TABLE:
        D.ObjectiveSettings(objective=name)
