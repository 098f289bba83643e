"""Relevance feedback (lab.retrieval.feedback): stage losses and scaler against the formulas written out by hand,
the batched two-stage refit against a per-query loop in the official code's shape, and what the refit does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab.records import Candidate, Query, Ranking, Run
from lab.retrieval import DenseIndex
from lab.retrieval.feedback import (
    FeedbackLists, RefitSettings, feedback_scores, fit_llm, fit_teacher, llm_ranknet, llm_targets, pack_lists,
    pair_agreement, passage_vectors, range_scaler, ranks_from_scores, refit, refit_queries, teacher_kl,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    return x / x.norm(dim=-1, keepdim=True)


def _one(passages, scores):
    """A single unpadded list as FeedbackLists (batch of 1)."""
    return FeedbackLists(passages[None], scores[None], torch.ones(1, len(scores), dtype=torch.bool))


# ------------------------------------------------------------------------------------------ the formulas
def test_settings_default_to_the_official_values():
    s = RefitSettings()
    assert (s.lr, s.updates, s.teacher_top_k, s.weighted) == (0.005, 100, 100, True)
    assert s.llm_lr == pytest.approx(0.001) and s.llm_updates == 20


def test_range_scaler_by_hand_and_with_padding():
    t = torch.tensor([[3.0, -1.0, 0.5, 9.0]])
    s0 = torch.tensor([[0.2, 0.6, 0.4, -5.0]])
    assert float(range_scaler(t, s0)) == pytest.approx(10.0 / 5.6)
    mask = torch.tensor([[True, True, True, False]])            # the padded item holds the extremes
    assert float(range_scaler(t, s0, mask)) == pytest.approx(4.0 / 0.4)
    both = range_scaler(torch.cat([t, t]), torch.cat([s0, s0]), torch.cat([mask, torch.ones_like(mask)]))
    assert both.tolist() == pytest.approx([4.0 / 0.4, 10.0 / 5.6])
    assert float(range_scaler(torch.ones(1, 3), s0[:, :3])) == 0.0  # no target spread: nothing to fit


def test_teacher_kl_is_the_official_kldiv_on_the_scaled_scores():
    p, q, t = _unit(7, 5, seed=1), _unit(5, seed=2), torch.randn(7, generator=torch.Generator().manual_seed(3)) * 4
    c = (t.max() - t.min()) / ((p @ q).max() - (p @ q).min())
    log_pred = F.log_softmax((c / 2) * (q @ p.T), dim=-1)                  # [7]
    log_t = F.log_softmax(t, dim=-1)                                      # [7]
    official = nn.KLDivLoss(reduction="batchmean", log_target=True)(log_pred[None], log_t[None])
    by_hand = (log_t.exp() * (log_t - log_pred)).sum()
    ours = teacher_kl(q[None], _one(p, t), range_scaler(t[None], (p @ q)[None]))
    assert float(ours) == pytest.approx(float(official), rel=1e-5) == pytest.approx(float(by_hand), rel=1e-5)
    assert torch.allclose(feedback_scores(q[None], p[None], c[None])[0], (c / 2) * (p @ q))


def test_llm_ranknet_is_the_official_weighted_bce_over_gold_pairs():
    p, q = _unit(6, 4, seed=4), _unit(4, seed=5)
    positions = torch.tensor([6.0, 3.0, 5.0, 1.0, 4.0, 2.0])              # the LLM's order: 0,2,4,1,5,3
    # the official reranked run: the retriever's scores, sorted, re-dealt in that order (rankllm.py)
    s0 = (p @ q).sort(descending=True).values                             # [6]
    llm = torch.empty(6)
    llm[torch.tensor([0, 2, 4, 1, 5, 3])] = s0
    assert torch.allclose(llm_targets((p @ q)[None], positions[None])[0], llm)
    c = (llm.max() - llm.min()) / ((p @ q).max() - (p @ q).min())
    assert float(c) == pytest.approx(1.0)                                 # the scaler the official flow gives
    pred = (c / 2) * (p @ q)                                              # [6]
    rank = torch.empty(6)
    rank[llm.argsort(descending=True)] = torch.arange(1.0, 7.0)           # 1 = LLM's best
    i, j = zip(*[(a, b) for a in range(6) for b in range(6) if llm[a] > llm[b]])
    i, j = torch.tensor(i), torch.tensor(j)
    w = 1.0 / (rank[i] + rank[j])
    official = nn.BCEWithLogitsLoss(weight=w)(pred[i] - pred[j], torch.ones(len(i)))
    by_hand = (w * torch.log1p(torch.exp(-(pred[i] - pred[j])))).mean()
    ours = llm_ranknet(q[None], _one(p, llm), c[None])
    assert float(ours) == pytest.approx(float(official), rel=1e-5) == pytest.approx(float(by_hand), rel=1e-5)
    assert ranks_from_scores(llm[None]).tolist() == [rank.long().tolist()]
    plain = (torch.log1p(torch.exp(-(pred[i] - pred[j])))).mean()
    assert float(llm_ranknet(q[None], _one(p, llm), c[None], weighted=False)) == pytest.approx(float(plain), rel=1e-5)


def test_llm_targets_follow_the_official_data_flow_on_a_hand_worked_run():
    """The retriever scores d1 .9, d2 .7, d3 .4, d4 .1; the LLM orders d3 > d1 > d4 > d2. The official reranked
    run keeps each *position's* score (rankllm.py ``receive_permutation``): d3 .9, d1 .7, d4 .4, d2 .1."""
    q0 = np.array([[1.0, 0.0]], np.float32)
    emb = np.array([[0.9, 0.1], [0.7, -0.2], [0.4, 0.3], [0.1, -0.4]], np.float32)     # q0 . p = .9 .7 .4 .1
    index, queries = DenseIndex(["d1", "d2", "d3", "d4"], emb), [Query("q", "x")]
    dense = index.search(q0, 4, queries=queries)
    assert [c.docid for c in dense["q"].candidates] == ["d1", "d2", "d3", "d4"]
    order = ["d3", "d1", "d4", "d2"]
    llm = Run("llm", {"q": Ranking(queries[0], [Candidate(d, 4.0 - i, i + 1) for i, d in enumerate(order)])})
    s = RefitSettings(teacher_top_k=0, llm_top_k=4)
    _, result, lists = refit_queries(q0, ["q"], index, dense, llm, None, s)
    assert lists.scores.tolist() == [pytest.approx([0.9, 0.7, 0.4, 0.1])]      # in the LLM's order d3 d1 d4 d2
    init = torch.from_numpy(emb[[2, 0, 3, 1]] @ q0[0])[None]                  # [1, 4] q0 . p in that order
    assert float(range_scaler(lists.scores, init)) == pytest.approx(1.0)        # .8 / .8 (len - pos: 3 / .8)
    # the first stage-2 loss by hand: pred = (1 / 2) q0 . p = d1 .45, d2 .35, d3 .2, d4 .05; LLM ranks d3 1,
    # d1 2, d4 3, d2 4; pairs (i above j) with w = 1 / (r_i + r_j) and softplus(-(pred_i - pred_j))
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    by_hand = (sp(0.25) / 3 + sp(-0.15) / 4 + sp(0.15) / 5 + sp(-0.4) / 5 + sp(-0.1) / 6 + sp(0.3) / 7) / 6
    assert result.losses["llm"][0] == pytest.approx(by_hand, rel=1e-5)
    # a stage-1 vector (here: q0 grown x2) keeps the *retriever's* targets; its scaler shrinks to .8 / 1.6
    _, _, lists2 = refit_queries(2 * q0, ["q"], index, dense, llm, None, s, retriever_q=q0)
    assert torch.allclose(lists2.scores, lists.scores)
    assert float(range_scaler(lists2.scores, 2 * init)) == pytest.approx(0.5)


def test_ties_share_a_rank_and_padding_ranks_last():
    r = ranks_from_scores(torch.tensor([[5.0, 7.0, 5.0, 0.0]]), torch.tensor([[True, True, True, False]]))
    assert r.tolist() == [[2, 1, 2, 5]]


def _official_shape_refit(q0, p_t, t, p_l, llm, lr=0.005, updates=100):
    """One query, written out the way the official loop runs it: KLDivLoss stage, then weighted BCE stage."""
    q = nn.Parameter(q0.clone())
    c = (t.max() - t.min()) / ((q0 @ p_t.T).max().item() - (q0 @ p_t.T).min().item())
    opt = torch.optim.Adam([q], lr=lr)
    for _ in range(updates):
        opt.zero_grad()
        log_pred = F.log_softmax((c / 2) * (q @ p_t.T), dim=-1)
        nn.KLDivLoss(reduction="batchmean", log_target=True)(log_pred[None], F.log_softmax(t, -1)[None]).backward()
        opt.step()
    q1 = q.detach().clone()
    c = (llm.max() - llm.min()) / ((q1 @ p_l.T).max().item() - (q1 @ p_l.T).min().item())
    rank = torch.empty(len(llm))
    rank[llm.argsort(descending=True)] = torch.arange(1.0, len(llm) + 1)
    i, j = map(torch.tensor, zip(*[(a, b) for a in range(len(llm)) for b in range(len(llm)) if llm[a] > llm[b]]))
    q = nn.Parameter(q1.clone())
    opt = torch.optim.Adam([q], lr=lr / 5)
    for _ in range(updates // 5):
        opt.zero_grad()
        pred = (c / 2) * (q @ p_l.T)
        nn.BCEWithLogitsLoss(weight=1.0 / (rank[i] + rank[j]))(pred[i] - pred[j], torch.ones(len(i))).backward()
        opt.step()
    return q1, q.detach()


def test_batched_two_stage_refit_equals_one_query_at_a_time():
    sizes_t, sizes_l, d = [9, 6, 8], [5, 3, 4], 6
    q0 = _unit(3, d, seed=10)
    p_t = [_unit(n, d, seed=20 + k) for k, n in enumerate(sizes_t)]
    p_l = [_unit(n, d, seed=30 + k) for k, n in enumerate(sizes_l)]
    t = [torch.randn(n, generator=torch.Generator().manual_seed(40 + k)) * 3 for k, n in enumerate(sizes_t)]
    llm = [torch.arange(float(n), 0.0, -1.0)[torch.randperm(n, generator=torch.Generator().manual_seed(50 + k))]
           for k, n in enumerate(sizes_l)]

    def padded(ps, ss):
        n = max(len(s) for s in ss)
        lists = FeedbackLists(torch.zeros(3, n, d), torch.zeros(3, n), torch.zeros(3, n, dtype=torch.bool))
        for b, (p, s) in enumerate(zip(ps, ss)):
            lists.passages[b, : len(s)], lists.scores[b, : len(s)], lists.mask[b, : len(s)] = p, s, True
        return lists

    out = refit(q0, padded(p_t, t), padded(p_l, llm), RefitSettings())
    for b in range(3):
        want_q1, want_q2 = _official_shape_refit(q0[b], p_t[b], t[b], p_l[b], llm[b])
        assert torch.allclose(out.after_teacher[b], want_q1, atol=2e-5), b
        assert torch.allclose(out.vectors[b], want_q2, atol=2e-5), b
    assert len(out.losses["teacher"]) == 100 and len(out.losses["llm"]) == 20


def test_stage_one_is_skipped_when_off_and_empty_lists_keep_their_vector():
    q0 = _unit(2, 4, seed=1)
    llm = FeedbackLists(_unit(2, 3, 4, seed=2), torch.tensor([[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]),
                        torch.tensor([[True, True, True], [False, False, False]]))
    teacher = FeedbackLists(_unit(2, 3, 4, seed=3), torch.randn(2, 3), torch.ones(2, 3, dtype=torch.bool))
    out = refit(q0, teacher, llm, RefitSettings(teacher_top_k=0))
    assert "teacher" not in out.losses and torch.equal(out.after_teacher, q0)
    assert torch.equal(out.vectors[1], q0[1]) and not torch.equal(out.vectors[0], q0[0])
    assert torch.isfinite(out.vectors).all()


# ------------------------------------------------------------------------------------------ behaviour
def test_refit_toward_a_ranking_raises_its_agreement():
    n, d, b = 20, 32, 8
    p = _unit(b, n, d, seed=7)                                             # [B, n, D]
    q0 = _unit(b, d, seed=8)                                               # [B, D]
    gold = torch.stack([torch.arange(float(n), 0.0, -1.0)[torch.randperm(n, generator=torch.Generator().manual_seed(k))]
                        for k in range(b)])                                # [B, n] a random target order per query
    lists = FeedbackLists(p, gold, torch.ones(b, n, dtype=torch.bool))
    before = pair_agreement(torch.einsum("bd,bnd->bn", q0, p), gold)       # [B]
    s = RefitSettings()
    q, losses = fit_llm(q0, lists, s.llm_lr, s.llm_updates)                # the official stage-2 budget
    after = pair_agreement(torch.einsum("bd,bnd->bn", q, p), gold)         # [B]
    assert losses[-1] < losses[0]
    assert float(after.mean() - before.mean()) > 0.01                    # small steps: 20 x lr 0.001
    q_long, _ = fit_llm(q0, lists, 0.01, 300)                              # fit hard: the order is nearly matched
    assert float(pair_agreement(torch.einsum("bd,bnd->bn", q_long, p), gold).mean()) > 0.9


def test_teacher_stage_moves_the_distribution_toward_the_teacher():
    n, d, b = 30, 16, 4
    p, q0 = _unit(b, n, d, seed=11), _unit(b, d, seed=12)
    teacher = torch.einsum("bd,bnd->bn", _unit(b, d, seed=13), p) * 20     # another query direction's scores
    lists = FeedbackLists(p, teacher, torch.ones(b, n, dtype=torch.bool))
    q, losses = fit_teacher(q0, lists, 0.005, 100)
    assert losses[-1] < 0.5 * losses[0]
    agree = lambda v: float(pair_agreement(torch.einsum("bd,bnd->bn", v, p), teacher).mean())  # noqa: E731
    assert agree(q) > agree(q0) + 0.1


# ------------------------------------------------------------------------------------------ the driver
def _toy_index():
    docs = [f"d{i}" for i in range(12)]
    emb = _unit(12, 8, seed=21).numpy()
    return DenseIndex(docs, emb), emb


def test_passage_vectors_are_the_indexed_floats_and_lists_pad():
    index, emb = _toy_index()
    assert np.array_equal(passage_vectors(index, ["d3", "d0"]), emb[[3, 0]])
    lists = pack_lists(index, [["d1", "d2"], [], ["d5"]], [[2.0, 1.0], [], [7.0]])
    assert lists.passages.shape == (3, 2, 8) and lists.mask.tolist() == [[True, True], [False, False], [True, False]]
    assert lists.sizes.tolist() == [2, 0, 1]


def test_refit_queries_reretrieves_the_llm_favourite_higher():
    index, emb = _toy_index()
    queries = [Query("q1", "a"), Query("q2", "b")]
    q_emb = _unit(2, 8, seed=22).numpy()
    base = index.search(q_emb, 10, queries=queries, name="dense")
    # the LLM reordered q1's top 6 putting the dense 6th passage first; q2 has no LLM list
    top = [c.docid for c in base["q1"].candidates[:6]]
    llm_order = [top[5], *top[:5]]
    llm = Run("llm", {"q1": Ranking(queries[0], [Candidate(d, 100.0 - i, i + 1) for i, d in enumerate(llm_order)])})
    teacher = {q.qid: {c.docid: float(20 * (emb[int(c.docid[1:])] @ q_emb[k])) for c in base[q.qid].candidates}
               for k, q in enumerate(queries)}
    # the official targets (retriever scores re-dealt, scaler ~1) give soft logits: fit hard (300 x lr 0.02)
    s = RefitSettings(teacher_top_k=10, llm_top_k=6, updates=300, llm_updates_divisor=1, llm_lr_divisor=0.25)
    new, result, lists = refit_queries(q_emb, ["q1", "q2"], index, base, llm, None, s)
    assert new.shape == q_emb.shape and np.array_equal(new[1], q_emb[1])
    after = index.search(new, 10, queries=queries, name="refit")
    pos = lambda run: [c.docid for c in run["q1"].candidates].index(top[5])  # noqa: E731
    assert pos(after) < pos(base)
    agree = pair_agreement(torch.einsum("bd,bnd->bn", torch.from_numpy(new), lists.passages), lists.scores, lists.mask)
    before = pair_agreement(torch.einsum("bd,bnd->bn", torch.from_numpy(q_emb), lists.passages), lists.scores,
                            lists.mask)
    assert float(agree[0]) >= 0.9 > float(before[0]) and np.isnan(float(agree[1]))
    # a teacher whose scores are the dense scores x 20 only sharpens: the vector grows, its direction stays
    new_t, res_t, _ = refit_queries(q_emb, ["q1", "q2"], index, base, None, teacher, s)
    cos = (new_t * q_emb).sum(1) / np.linalg.norm(new_t, axis=1) / np.linalg.norm(q_emb, axis=1)
    assert "llm" not in res_t.losses and (cos > 0.95).all() and (np.linalg.norm(new_t, axis=1) > 1.0).all()
    # restricted to the candidates: an LLM passage outside the dense list drops out of stage 2
    cut = base.top(4)
    _, _, kept = refit_queries(q_emb, ["q1", "q2"], index, cut, llm, None, s, restrict_to_candidates=True)
    assert kept.sizes.tolist() == [4, 0]
