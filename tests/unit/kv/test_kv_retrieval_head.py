"""SpeContext's DLM, head ranking and pruned retrieval head; the top-k distillation loss against the full KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.kv import retrieval_head as rh
from lab.losses.lm_distill import topk_logit_kl
from tests.unit.kv.conftest import tiny_llama


def test_dlm_is_the_chosen_layers_and_the_pruned_head_reproduces_its_heads_scores():
    target = tiny_llama(layers=4, seed=2)
    dlm = rh.build_dlm(target, [0, 2, 3]).eval()
    assert dlm.config.num_hidden_layers == 3
    assert torch.equal(dlm.model.layers[1].mlp.up_proj.weight, target.model.layers[2].mlp.up_proj.weight)
    assert not dlm.model.embed_tokens.weight.requires_grad
    ids = torch.randint(0, 512, (1, 36), generator=torch.Generator().manual_seed(0))
    heads = [(1, 3), (1, 0), (0, 2)]
    head = rh.RetrievalHead(dlm, heads).eval()
    probs = rh.capture_rows(dlm, ids, torch.arange(28, 36), per_head=True)      # (layers, 1, H, R, L)
    head(ids[:, :28])
    for r in range(28, 36):                                                     # incremental, one token a step
        got = head(ids[:, r:r + 1])                                             # (1, r + 1)
        ref = torch.stack([probs[l, :, h, r - 28, : r + 1] for l, h in heads]).amax(0)
        assert torch.allclose(got, ref, atol=1e-6)
    full, pruned = rh.param_counts(dlm, dlm.model.embed_tokens), rh.param_counts(head, head.embed)
    assert pruned["without_embedding"] < full["without_embedding"]              # layer 2 of the DLM is gone
    layer = sum(p.numel() for p in dlm.model.layers[0].parameters())
    d = 16                                                                      # head dim 64 / 4 heads
    emb = dlm.model.embed_tokens.weight.numel()
    norm = dlm.model.layers[1].input_layernorm.weight.numel()
    assert pruned["without_embedding"] == layer + norm + 3 * 2 * d * 64          # + q/k rows of 3 heads
    assert pruned["with_embedding"] == pruned["without_embedding"] + emb


def test_head_ranking_prefers_the_head_that_captures_target_mass():

    target = torch.zeros(1, 1, 10)
    target[0, 0, 4], target[0, 0, 2] = 0.6, 0.1                                  # the middle mass sits on key 4
    rows = torch.tensor([9])
    per_head = torch.zeros(2, 1, 2, 1, 10)
    per_head[1, 0, 1, 0, 4] = 1.0                                                # layer 1 head 1 looks at key 4
    per_head[0, 0, 0, 0, 2] = 1.0                                                # layer 0 head 0 at key 2
    got = rh.head_capture(per_head, target, rows, budget=4, sinks=1, window=2)    # top-1 middle key per head
    assert got.shape == (2, 2) and torch.allclose(got[1, 1], torch.tensor(6 / 7)) and torch.allclose(
        got[0, 0], torch.tensor(1 / 7))
    assert rh.best_heads(got, 1) == [(1, 1)]


def test_topk_kl_equals_the_full_kl_when_k_is_the_vocabulary():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    vals, ids = t.topk(11, dim=-1)
    direct = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="batchmean") * 4
    assert torch.allclose(topk_logit_kl(s, vals, ids, temperature=2.0), direct, atol=1e-6)
    vals3, ids3 = t.topk(3, dim=-1)                                              # truncated: renormalised top-3
    p = F.softmax(vals3, -1)
    manual = (p * (p.log() - F.log_softmax(s, -1).gather(-1, ids3))).sum(-1).mean()
    assert torch.allclose(topk_logit_kl(s, vals3, ids3), manual, atol=1e-6)


def test_growing_cache_returns_what_dynamic_cache_returns_and_copies_are_independent():
    import copy

    from transformers import DynamicCache

    cfg = tiny_llama(layers=2).config
    grow, dyn = rh.growing_cache(cfg), DynamicCache(config=cfg)
    g = torch.Generator().manual_seed(0)
    for t in (5, 1, 1, 60, 1, 70, 1):                   # 5 -> 64 rows of room, regrown at 67 and at 138
        k, v = torch.randn(2, 2, t, 16, generator=g), torch.randn(2, 2, t, 16, generator=g)
        for layer in (0, 1):
            a, b = grow.update(k, v, layer), dyn.update(k, v, layer)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        if t == 60:
            twin = copy.deepcopy(grow)                      # a method run's own copy (HeadSelector.__deepcopy__)
            before = twin.layers[0].keys.clone()
    assert grow.get_seq_length() == dyn.get_seq_length() == 139
    twin.update(torch.zeros(2, 2, 1, 16), torch.zeros(2, 2, 1, 16), 0)
    assert torch.equal(twin.layers[0].keys[..., :-1, :], before)           # the original's writes did not leak


def test_head_selector_copies_decode_alike_with_buffers_written_in_place():
    import copy

    target = tiny_llama(layers=3, seed=1)
    head = rh.RetrievalHead(rh.build_dlm(target, [0, 2]).eval(), [(1, 1)]).eval()
    sel = rh.HeadSelector(head)
    ids = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(3))
    sel.prefill(ids[:, :30])
    other = torch.randint(0, 512, (1, 10), generator=torch.Generator().manual_seed(4))
    ref = copy.deepcopy(sel)
    expected = [ref.head(ids[:, r:r + 1]) for r in range(30, 40)]
    a, b = copy.deepcopy(sel), copy.deepcopy(sel)           # two method runs from one prefilled prototype,
    for i, r in enumerate(range(30, 40)):                   # interleaved: b writes other tokens at a's positions
        got = a.head(ids[:, r:r + 1])
        b.head(other[:, i:i + 1])
        assert torch.equal(got, expected[i])
