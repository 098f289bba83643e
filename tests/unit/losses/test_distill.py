"""Each NanoVDR objective against its formula written out with Python loops (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lab.losses import distill as L

B, D, K, M = 5, 7, 6, 3


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


def unit(*shape, g):
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b))


def test_cosine_alignment_matches_direct_formula(g):
    s, t = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)   # not normalised: the loss does it
    direct = 0.0
    for i in range(B):
        direct += 1 - dot(s[i], t[i]) / math.sqrt(dot(s[i], s[i]) * dot(t[i], t[i]))
    assert float(L.cosine_alignment(s, t)) == pytest.approx(direct / B, abs=1e-6)


def test_cosine_alignment_is_zero_iff_aligned_and_ignores_scale(g):
    t = torch.randn(B, D, generator=g)
    assert float(L.cosine_alignment(3.0 * t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.cosine_alignment(-t, t)) == pytest.approx(2.0, abs=1e-6)


def test_cosine_alignment_gradient_flows_to_student_only(g):
    s = torch.randn(B, D, generator=g, requires_grad=True)
    t = torch.randn(B, D, generator=g, requires_grad=True)
    L.cosine_alignment(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_mse_alignment_matches_direct_formula_and_cosine_relation(g):
    s, t = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    direct = sum((float(s[i, k]) - float(t[i, k])) ** 2 for i in range(B) for k in range(D)) / (B * D)
    assert float(L.mse_alignment(s, t)) == pytest.approx(direct, rel=1e-6)
    su, tu = F.normalize(s, dim=-1), F.normalize(t, dim=-1)   # unit vectors: MSE = 2 (1 - cos) / D
    assert float(L.mse_alignment(su, tu)) == pytest.approx(2 * float(L.cosine_alignment(su, tu)) / D, rel=1e-5)


def test_infonce_matches_direct_formula_with_masks(g):
    q, p, n = unit(B, D, g=g), unit(B, D, g=g), unit(B, M, D, g=g)
    pos_ids = torch.tensor([10, 11, 10, 12, 13])           # queries 0 and 2 share a positive
    neg_ids = torch.tensor([[20, 21, 22], [23, 11, 24], [25, 26, 27], [28, 29, 30], [13, 31, 32]])   # 1 and 4 hit theirs
    tau = 0.1
    direct = 0.0
    for i in range(B):
        terms = []
        for j in range(B):
            if j != i and int(pos_ids[j]) == int(pos_ids[i]):
                continue
            terms.append(dot(q[i], p[j]) / tau)
        for m in range(M):
            if int(neg_ids[i, m]) == int(pos_ids[i]):
                continue
            terms.append(dot(q[i], n[i, m]) / tau)
        direct += -(dot(q[i], p[i]) / tau - math.log(sum(math.exp(x) for x in terms)))
    got = L.infonce(q, p, n, temperature=tau, pos_ids=pos_ids, neg_ids=neg_ids)
    assert float(got) == pytest.approx(direct / B, rel=1e-6)


def test_infonce_without_negatives_is_in_batch_softmax(g):
    q, p = unit(B, D, g=g), unit(B, D, g=g)
    direct = sum(-math.log(math.exp(dot(q[i], p[i]) / 0.05) / sum(math.exp(dot(q[i], p[j]) / 0.05) for j in range(B)))
                 for i in range(B)) / B
    assert float(L.infonce(q, p, None, temperature=0.05)) == pytest.approx(direct, rel=1e-6)


def test_listwise_kl_matches_direct_formula(g):
    s, t = torch.randn(B, K, generator=g, dtype=torch.float64), torch.randn(B, K, generator=g, dtype=torch.float64)
    tau_s, tau_t = 0.5, 0.25
    direct = 0.0
    for i in range(B):
        zs = sum(math.exp(float(x) / tau_s) for x in s[i])
        zt = sum(math.exp(float(x) / tau_t) for x in t[i])
        for k in range(K):
            pt = math.exp(float(t[i, k]) / tau_t) / zt
            ps = math.exp(float(s[i, k]) / tau_s) / zs
            direct += pt * math.log(pt / ps)
    got = L.listwise_kl(s, t, temperature=tau_s, teacher_temperature=tau_t)
    assert float(got) == pytest.approx(direct / B, rel=1e-5)
    assert float(L.listwise_kl(t, t, temperature=0.3)) == pytest.approx(0.0, abs=1e-6)


def test_margin_mse_matches_direct_formula(g):
    sp, tp = torch.randn(B, generator=g), torch.randn(B, generator=g)
    sn, tn = torch.randn(B, M, generator=g), torch.randn(B, M, generator=g)
    direct = sum(((float(sp[i]) - float(sn[i, m])) - (float(tp[i]) - float(tn[i, m]))) ** 2
                 for i in range(B) for m in range(M)) / (B * M)
    assert float(L.margin_mse(sp, sn, tp, tn)) == pytest.approx(direct, rel=1e-5)
    # a single negative per query ([B]) is the M = 1 case
    assert float(L.margin_mse(sp, sn[:, 0], tp, tn[:, 0])) == pytest.approx(
        sum(((float(sp[i]) - float(sn[i, 0])) - (float(tp[i]) - float(tn[i, 0]))) ** 2 for i in range(B)) / B, rel=1e-5)


def test_cosine_plus_kl_is_the_weighted_sum(g):
    s, t = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    ss, ts = torch.randn(B, K, generator=g), torch.randn(B, K, generator=g)
    got = L.cosine_plus_kl(s, t, ss, ts, weight=0.3, temperature=0.2)
    want = L.cosine_alignment(s, t) + 0.3 * L.listwise_kl(ss, ts, temperature=0.2)
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_objective_names():
    assert L.OBJECTIVES == ("cosine", "mse", "infonce", "listwise_kl", "margin_mse", "cosine_kl")
