"""Each loss against a hand computation or a direct (looped) formula."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lab.losses import (
    first_loss, kl_to_teacher, lambdarank, listnet, lm_nll, targets_from_ranks, weighted_ranknet,
)


def _softplus_neg(x: float) -> float:     # log(1 + exp(-x))
    return math.log1p(math.exp(-x))


def test_weighted_ranknet_by_hand_three_items():
    # item 0 is best (rank 1), item 2 second (rank 2), item 1 last (rank 3)
    scores = torch.tensor([[2.0, 0.5, 1.0]])
    ranks = torch.tensor([[1, 3, 2]])
    # pairs (better, worse): (0,2) w=1/(1+2), (0,1) w=1/(1+3), (2,1) w=1/(2+3)
    t02 = (1 / 3) * _softplus_neg(2.0 - 1.0)     # 1/3 * log(1+e^-1.0) = 0.104420
    t01 = (1 / 4) * _softplus_neg(2.0 - 0.5)     # 1/4 * log(1+e^-1.5) = 0.050353
    t21 = (1 / 5) * _softplus_neg(1.0 - 0.5)     # 1/5 * log(1+e^-0.5) = 0.094815
    assert (t02 + t01 + t21) / 3 == pytest.approx(0.0831959, abs=1e-6)
    assert float(weighted_ranknet(scores, ranks)) == pytest.approx((t02 + t01 + t21) / 3, abs=1e-6)
    unweighted = (_softplus_neg(1.0) + _softplus_neg(1.5) + _softplus_neg(0.5)) / 3
    assert float(weighted_ranknet(scores, ranks, weighted=False)) == pytest.approx(unweighted, abs=1e-6)


def _ranknet_loop(scores, ranks, mask, weighted=True):
    per_list = []
    for s, r, m in zip(scores.tolist(), ranks.tolist(), mask.tolist()):
        terms = [(1 / (r[i] + r[j]) if weighted else 1.0) * _softplus_neg(s[i] - s[j])
                 for i, j in itertools.permutations(range(len(s)), 2) if m[i] and m[j] and r[i] < r[j]]
        if terms:
            per_list.append(sum(terms) / len(terms))
    return sum(per_list) / len(per_list)


def _random_lists(seed, B=4, n=7, full=False):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, n, generator=g) * 3
    ranks = torch.stack([torch.randperm(n, generator=g) + 1 for _ in range(B)])
    lengths = torch.full((B,), n) if full else torch.randint(2, n + 1, (B,), generator=g)
    mask = torch.arange(n)[None, :] < lengths[:, None]
    ranks = torch.where(mask, ranks, torch.zeros_like(ranks))
    for b in range(B):   # re-rank the real items 1..len so ranks are consistent within each list
        real = ranks[b, : lengths[b]]
        ranks[b, : lengths[b]] = real.argsort().argsort() + 1
    return scores, ranks, mask


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weighted", [True, False])
def test_weighted_ranknet_equals_loop(seed, weighted):
    scores, ranks, mask = _random_lists(seed)
    got = float(weighted_ranknet(scores, ranks, mask, weighted=weighted))
    assert got == pytest.approx(_ranknet_loop(scores, ranks, mask, weighted), rel=1e-5)


def test_weighted_ranknet_is_official_bce_mean_over_pairs():
    """Official normalisation: BCEWithLogitsLoss(weight=1/(r_i+r_j)) with mean reduction over the pairs."""
    scores, ranks, _ = _random_lists(11, B=1, n=20, full=True)
    s, r = scores[0], ranks[0].float()
    pairs = [(i, j) for i in range(20) for j in range(20) if r[i] < r[j]]
    diffs = torch.stack([s[i] - s[j] for i, j in pairs])
    weights = torch.stack([1 / (r[i] + r[j]) for i, j in pairs])
    official = torch.nn.BCEWithLogitsLoss(weight=weights)(diffs, torch.ones_like(diffs))
    assert len(pairs) == 190
    torch.testing.assert_close(weighted_ranknet(scores, ranks), official, atol=1e-6, rtol=1e-6)


def test_ranknet_ties_padding_and_gradient():
    scores = torch.tensor([[1.0, 2.0, 0.0, 0.0]], requires_grad=True)
    ranks = torch.tensor([[1, 2, 2, 0]])            # items 1, 2 tied: no pair between them
    mask = torch.tensor([[True, True, True, False]])
    loss = weighted_ranknet(scores, ranks, mask)
    want = ((1 / 3) * _softplus_neg(1.0 - 2.0) + (1 / 3) * _softplus_neg(1.0 - 0.0)) / 2
    assert float(loss.detach()) == pytest.approx(want, abs=1e-6)
    loss.backward()
    assert scores.grad[0, 0] < 0 and scores.grad[0, 3] == 0           # best pushed up; padding untouched
    # a list without any pair contributes nothing; all-empty gives a differentiable zero
    empty = weighted_ranknet(torch.zeros(2, 3, requires_grad=True), torch.ones(2, 3, dtype=torch.long))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_ranknet_pair_mask_drops_exactly_the_masked_pairs():
    scores, ranks, mask = _random_lists(5, B=3, n=6)
    keep = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(6)) > 0.4   # [B, n, n]
    want = []
    for s, r, m, k in zip(scores.tolist(), ranks.tolist(), mask.tolist(), keep.tolist()):
        terms = [_softplus_neg(s[i] - s[j]) / (r[i] + r[j]) for i, j in itertools.permutations(range(6), 2)
                 if m[i] and m[j] and r[i] < r[j] and k[i][j]]
        if terms:
            want.append(sum(terms) / len(terms))
    assert float(weighted_ranknet(scores, ranks, mask, pair_mask=keep)) == pytest.approx(sum(want) / len(want),
                                                                                          rel=1e-5)
    full = torch.ones(3, 6, 6, dtype=torch.bool)
    assert float(weighted_ranknet(scores, ranks, mask, pair_mask=full)) == float(weighted_ranknet(scores, ranks, mask))


def test_padding_equals_truncation():
    scores, ranks, mask = _random_lists(3, B=1, n=9)
    k = int(mask.sum())
    for fn in (lambda s, r, m: weighted_ranknet(s, r, m),
               lambda s, r, m: listnet(s, ranks=r, mask=m),
               lambda s, r, m: lambdarank(s, (10 - r).float(), m)):
        torch.testing.assert_close(fn(scores, ranks, mask), fn(scores[:, :k], ranks[:, :k], None))


@pytest.mark.parametrize("seed", range(4))
def test_listnet_equals_formula(seed):
    g = torch.Generator().manual_seed(seed)
    scores, target = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    want = 0.0
    for s, t in zip(scores.tolist(), target.tolist()):
        zt, zs = sum(math.exp(x) for x in t), sum(math.exp(x) for x in s)
        want += -sum(math.exp(t[j]) / zt * math.log(math.exp(s[j]) / zs) for j in range(6)) / 3
    assert float(listnet(scores, target)) == pytest.approx(want, rel=1e-5)


def test_listnet_rank_targets_follow_the_official_construction():
    scores = torch.tensor([[0.5, 3.0, -1.0, 2.0]])
    ranks = torch.tensor([[1, 3, 4, 2]])
    t = targets_from_ranks(scores, ranks)
    # sorted scores 3.0, 2.0, 0.5, -1.0 handed out by gold rank
    torch.testing.assert_close(t, torch.tensor([[3.0, 0.5, -1.0, 2.0]]))
    torch.testing.assert_close(listnet(scores, ranks=ranks), listnet(scores, t))
    with pytest.raises(ValueError):
        listnet(scores)


def _lambdarank_loop(scores, rel, sigma=1.0):
    out = []
    for s, y in zip(scores.tolist(), rel.tolist()):
        n = len(s)
        order = sorted(range(n), key=lambda i: -s[i])               # predicted positions p = 1..n
        ideal = sorted(y, reverse=True)
        max_dcg = sum((2 ** ideal[p] - 1) / math.log2(p + 2) for p in range(n))
        gain = [(2 ** y[order[p]] - 1) / max_dcg for p in range(n)]
        terms = []
        for p, q in itertools.permutations(range(n), 2):
            if y[order[p]] > y[order[q]]:
                d = abs(p - q)
                delta = abs(1 / math.log2(1 + d) - 1 / math.log2(2 + d))
                prob = 1 / (1 + math.exp(-sigma * (s[order[p]] - s[order[q]])))
                terms.append(-delta * abs(gain[p] - gain[q]) * math.log2(prob))
        out.append(sum(terms) / len(terms))
    return sum(out) / len(out)


@pytest.mark.parametrize("seed", range(4))
def test_lambdarank_equals_loop(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(3, 6, generator=g)
    rel = torch.randint(0, 4, (3, 6), generator=g).float()
    rel[:, 0] = 3.0
    rel[:, 1] = 0.0                                                   # at least one pair per list
    assert float(lambdarank(scores, rel)) == pytest.approx(_lambdarank_loop(scores, rel), rel=1e-5)


def test_lambdarank_prefers_correct_order():
    rel = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    good, bad = torch.tensor([[4.0, 3.0, 2.0, 1.0]]), torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert float(lambdarank(good, rel)) < float(lambdarank(bad, rel))


def test_lm_nll_shift_and_ignore_index():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 7, 8, -100, -100]])
    want, count = 0.0, 0
    for b in range(2):
        for t in range(1, 5):                                         # logits at t-1 predict labels[t]
            if labels[b, t] != -100:
                want -= float(torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]])
                count += 1
    assert float(lm_nll(logits, labels)) == pytest.approx(want / count, rel=1e-5)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(lm_nll(logits, labels), ref)
    assert float(lm_nll(logits, torch.full((2, 5), -100))) == 0.0


def test_first_loss_lambda_ten():
    lm, rank = torch.tensor(1.5), torch.tensor(0.25)
    assert float(first_loss(lm, rank)) == pytest.approx(1.5 + 10 * 0.25)
    assert float(first_loss(lm, rank, lam=0.1)) == pytest.approx(1.525)


def test_kl_to_teacher_formula_and_properties():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(3, 5, generator=g, requires_grad=True)
    teacher = torch.randn(3, 5, generator=g, requires_grad=True)
    T = 2.0
    want = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        ps = [math.exp(x / T) for x in s]
        pt = [math.exp(x / T) for x in t]
        ps = [x / sum(ps) for x in ps]
        pt = [x / sum(pt) for x in pt]
        want += sum(a * math.log(a / b) for a, b in zip(pt, ps)) / 3
    loss = kl_to_teacher(student, teacher, temperature=T)
    assert float(loss.detach()) == pytest.approx(want * T * T, rel=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    assert float(kl_to_teacher(teacher.detach(), teacher.detach())) == pytest.approx(0.0, abs=1e-7)
    mask = torch.tensor([[True, True, False, False, False]] * 3)
    torch.testing.assert_close(kl_to_teacher(student, teacher, T, mask),
                               kl_to_teacher(student[:, :2], teacher[:, :2], T))
