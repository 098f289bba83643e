"""Each baseline against a small example worked by hand from its paper's rule; policy, statistics and memory model
against direct formulas."""

from __future__ import annotations

import pytest
import torch

from lab.kv import baselines, memory, policy, stats


def ctx(length, budget, sinks=4, window=2, batch=1):
    return {"input_ids": torch.zeros(batch, 1, dtype=torch.long), "length": length, "budget": budget,
            "sinks": sinks, "window": window, "step": 0}


def test_compose_sinks_window_and_top_scores():
    scores = torch.tensor([[9.0, 9, 0, 5, 1, 7, 3, 9, 9, 9]])
    # sinks {0, 1}, window {8, 9}; middle 2..7 = [0, 5, 1, 7, 3, 9] -> top 2 are positions 7 (9) and 5 (7)
    assert policy.compose(scores, 10, 6, sinks=2, window=2).tolist() == [[0, 1, 5, 7, 8, 9]]
    assert policy.compose(scores, 10, 10, sinks=2, window=2).tolist() == [list(range(10))]   # budget >= context


def test_streamingllm_keeps_four_sinks_and_the_most_recent():
    # StreamingLLM §3.2: 4 initial tokens + rolling recent cache; L = 10, B = 6 -> {0,1,2,3} + {8,9}
    assert baselines.StreamingLLM().select(ctx(10, 6)).tolist() == [[0, 1, 2, 3, 8, 9]]


def test_random_is_seeded_and_keeps_the_scaffold():
    a = baselines.RandomSelector(3).select(ctx(50, 10))
    b = baselines.RandomSelector(3).select(ctx(50, 10))
    assert torch.equal(a, b) and a.shape == (1, 10)
    assert {0, 1, 2, 3, 48, 49} <= set(a[0].tolist())


def test_h2o_evicts_the_lowest_accumulated_score():
    # H2O Algorithm 1: kept heavy hitters {1, 3} (scores 0.5, 0.2), token 5 leaves the window with 0.4:
    # candidates {1, 3, 5} -> evict 3 (the lowest, 0.2); the evicted token never comes back.
    acc = torch.tensor([[0.0, 0.5, 0.1, 0.2, 0.3, 0.4, 0.0]])
    assert baselines.evict(torch.tensor([[1, 3]]), 5, acc, heavy=2).tolist() == [[1, 5]]
    h2o = baselines.H2O(window=2)
    h2o.acc[0] = acc.clone()
    key, query = torch.zeros(1, 1, 7, 2), torch.zeros(1, 1, 1, 2)
    ctl = type("C", (), {"budget": 4})()
    # first step, L = 7: heavy = top-2 of acc[:5] = {1 (0.5), 4 (0.3)}; recent {5, 6}
    assert h2o.select_layer(0, query, key, 1.0, ctl).tolist() == [[1, 4, 5, 6]]
    h2o.observe(0, torch.tensor([[[0.9, 0.0, 0.0, 0.0]]]), torch.tensor([[1, 4, 5, 6]]))   # token 1 gains 0.9
    key = torch.zeros(1, 1, 8, 2)
    # L = 8: token 5 (0.4) leaves the window, competes with 1 (1.4) and 4 (0.3): 4 is evicted
    assert h2o.select_layer(0, query, key, 1.0, ctl).tolist() == [[1, 5, 6, 7]]


def test_snapkv_pools_window_votes_and_keeps_clusters():
    snap = baselines.SnapKV(obs_window=2, kernel=3, pooling="avg", window=2)
    # votes [0, 0, 3, 0, 0, 0]: avg-pool (kernel 3, stride 1, zero padding) -> [0, 1, 1, 1, 0, 0]
    assert snap.pool(torch.tensor([[0.0, 0, 3, 0, 0, 0]])).tolist() == [[0, 1, 1, 1, 0, 0]]
    # a 4-query prompt where the two observation queries attend only to key 1: votes land on key 1 and pooling
    # spreads them to its neighbours 0 and 2, the prefix is keys 0..1 (4 - obs_window)
    d = 4
    key = torch.zeros(1, 1, 4, d)
    key[0, 0, 1, 0] = 10.0
    query = torch.zeros(1, 1, 4, d)
    query[0, 0, :, 0] = 10.0
    snap.prefill_hook(0, query, key, 1.0)
    # each observation query puts ~all its mass on key 1: votes ~[0, 2, 0, 0] -> pooled ~[2/3, 2/3, 2/3, 0]
    assert torch.allclose(snap.votes[0], torch.tensor([[2 / 3, 2 / 3, 2 / 3, 0.0]]), atol=1e-4)
    # selection: prefix = the 8 - 2 prompt keys before the observation window; budget 4 = 2 recent + top 2
    snap.votes[0], snap.prompt_len = torch.tensor([[0.1, 0.5, 0.0, 0.9, 0.2, 0.3, 5.0, 5.0]]), 8
    ctl = type("C", (), {"budget": 4})()
    assert snap.select_layer(0, query[:, :, -1:], torch.zeros(1, 1, 9, d), 1.0, ctl).tolist() == [[1, 3, 7, 8]]


def test_quest_page_upper_bound_matches_the_hand_computation():
    quest = baselines.Quest(page=2, dense_layers=0)
    # page 0 keys (1, 2), (3, -1): min (1, -1), max (3, 2); q = (1, -2):
    # bound = max(1*1, 1*3) + max(-2*-1, -2*2) = 3 + 2 = 5 >= the true max dot product max(1-4, 3+2) = 5
    # page 1 keys (0, 1), (-1, 0): min (-1, 0), max (0, 1): bound = max(-1, 0) + max(0, -2) = 0 (true max -1)
    key = torch.tensor([[[[1.0, 2], [3, -1], [0, 1], [-1, 0]]]])
    q = torch.tensor([[[[1.0, -2]]]])
    assert quest.page_bounds(q, key).tolist() == [[[5.0, 0.0]]]
    key6 = torch.cat([key, torch.tensor([[[[5.0, 5], [0, 0]]]])], dim=2)              # page 2 = current page
    ctl = type("C", (), {"budget": 4})()
    # budget 4 = 2 pages: the current page (always) + the best other page (page 0, bound 5)
    assert quest.select_layer(0, q, key6, 1.0, ctl).tolist() == [[0, 1, 4, 5]]
    assert baselines.Quest(page=2, dense_layers=1).select_layer(0, q, key6, 1.0, ctl) is None   # dense layer
    key5 = key6[:, :, :5]                                                              # partial current page {4}
    assert quest.select_layer(0, q, key5, 1.0, ctl).tolist() == [[0, 1, 4]]           # no duplicated row


def test_quest_kept_page_metadata_equals_recomputing_every_page_each_step():
    g = torch.Generator().manual_seed(0)
    key = torch.randn(2, 3, 70, 8, generator=g)                                       # (B, KVH, L, D)
    quest, fresh = baselines.Quest(page=16, dense_layers=0), baselines.Quest(page=16, dense_layers=0)
    for length in (17, 31, 32, 33, 48, 49, 50, 64, 70):                              # a decode growing the cache
        q = torch.randn(2, 6, 1, 8, generator=g)                                      # GQA: 6 heads on 3
        assert torch.equal(quest.page_bounds(q, key[:, :, :length], layer=3), fresh.page_bounds(q, key[:, :, :length]))
    assert quest._pages[3][1].shape[2] == 4                                           # 4 complete pages kept
    other = torch.randn(2, 3, 70, 8, generator=g)                                     # another sequence: recomputed
    q = torch.randn(2, 6, 1, 8, generator=g)
    assert torch.equal(quest.page_bounds(q, other, layer=3), fresh.page_bounds(q, other))


def test_gemfilter_like_full_below_its_layer_then_that_layers_set():
    gem = baselines.GemFilterLike(filter_layer=1)
    ctl = type("C", (), {"budget": 6, "sinks": 2, "window": 2})()
    key = torch.zeros(1, 1, 12, 2)
    key[0, 0, 5, 0] = key[0, 0, 7, 0] = 8.0
    q = torch.tensor([[[[1.0, 0.0]]]])
    assert gem.select_layer(0, q, key, 1.0, ctl) is None and gem.select_layer(1, q, key, 1.0, ctl) is None
    assert gem.select_layer(2, q, torch.randn(1, 1, 12, 2), 1.0, ctl).tolist() == [[0, 1, 5, 7, 10, 11]]


def test_oracles_pick_the_top_attention():
    full = torch.zeros(1, 12)
    full[0, 6], full[0, 3] = 0.5, 0.3
    c = ctx(12, 6, sinks=2, window=2)
    assert baselines.GlobalOracle().select({**c, "full_probs": full}).tolist() == [[0, 1, 3, 6, 10, 11]]
    key = torch.zeros(1, 1, 12, 2)
    key[0, 0, 4, 0] = key[0, 0, 8, 0] = 8.0
    ctl = type("C", (), {"budget": 6, "sinks": 2, "window": 2})()
    assert baselines.LayerOracle().select_layer(0, torch.tensor([[[[1.0, 0]]]]), key, 1.0, ctl).tolist() == \
        [[0, 1, 4, 8, 10, 11]]


def test_column_mass_blockwise_equals_the_full_matrix():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 9, 8, generator=g), torch.randn(2, 2, 12, 8, generator=g)
    logits = q @ k.repeat_interleave(2, 1).transpose(-1, -2) * 0.3                    # (B, H, 9, 12)
    pos = torch.arange(3, 12)                                                         # queries sit at 3..11
    logits = logits.masked_fill(torch.arange(12)[None] > pos[:, None], float("-inf"))
    full = logits.softmax(-1)
    assert torch.allclose(stats.column_mass(q, k, 0.3, block=2), full.sum((1, 2)), atol=1e-5)
    rows = torch.tensor([7, 8])
    assert torch.allclose(stats.column_mass(q, k, 0.3, rows=rows, per_head=True), full[:, :, rows].sum(2), atol=1e-5)


def test_changed_fraction_and_recall():
    assert policy.changed_fraction(torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 2, 4]])).tolist() == [0.25]
    assert policy.set_recall(torch.tensor([[0, 2, 5]]), torch.tensor([[2, 5, 7, 9]])).tolist() == [0.5]


def test_changed_fraction_and_recall_equal_the_all_pairs_formula():
    g = torch.Generator().manual_seed(1)
    prev, cur = torch.randint(0, 300, (3, 40), generator=g), torch.randint(0, 500, (3, 90), generator=g)
    direct_changed = 1.0 - (cur[:, :, None] == prev[:, None, :]).any(-1).float().mean(-1)       # (B,)
    direct_recall = (prev[:, :, None] == cur[:, None, :]).any(-1).float().mean(-1)             # (B,)
    assert torch.equal(policy.changed_fraction(prev, cur), direct_changed)
    assert torch.equal(policy.set_recall(cur, prev), direct_recall)


def test_memory_model_bytes_against_the_direct_formula():
    # Llama-3.1-8B: 32 layers, 8 KV heads, head dim 128, bf16: 2 * 32 * 8 * 128 * 2 = 131072 B per token
    kw = dict(batch=4, layers=32, kv_heads=8, head_dim=128, dtype_bytes=2, weight_bytes=16 * 2**30,
              dlm_bytes=2**30, budget=2048, gpu_bytes=80 * 2**30, headroom=0.9)
    assert memory.kv_bytes_per_token(32, 8, 128, 2) == 131072
    small = memory.place(8192, **kw)
    assert small.kv_on_gpu and small.kv_bytes == 131072 * 8192 * 4 and small.cpu_bytes == 0
    assert small.gpu_bytes == 17 * 2**30 + 131072 * 8192 * 4
    big = memory.place(131072, **kw)                                  # 64 GiB of KV: does not fit beside 17 GiB
    assert not big.kv_on_gpu and big.cpu_bytes == 131072 * 131072 * 4
    assert big.gpu_bytes == 17 * 2**30 + 131072 * 2048 * 4 * 2     # weights + DLM + double-buffered selection
    n = memory.crossover_tokens(**kw)                                 # (0.9 * 80 - 17) GiB / (4 * 128 KiB)
    assert n == int((0.9 * 80 * 2**30 - 17 * 2**30) // (131072 * 4)) + 1
    assert memory.transfer_bytes(10, layers=32, kv_heads=8, head_dim=128, dtype_bytes=2) == 1310720


def test_elastic_loading_copies_only_changed_rows_and_holds_the_selected_set():
    from lab.kv.offload import ElasticKV

    g = torch.Generator().manual_seed(0)
    host_k, host_v = torch.randn(2, 2, 20, 4, generator=g), torch.randn(2, 2, 20, 4, generator=g)
    buf = ElasticKV(2, 2, 5, 4, torch.float32, "cpu")
    sets = [torch.tensor([[0, 1, 2, 3, 4], [0, 5, 6, 7, 8]]), torch.tensor([[0, 1, 2, 3, 9], [0, 5, 6, 10, 11]])]
    assert buf.load(host_k, host_v, sets[0]) == 10                         # cold: every row
    assert buf.load(host_k, host_v, sets[1]) == 1 + 2                      # then only the rows that entered
    k, v, valid = buf.view()
    assert valid.all()
    for b in range(2):
        assert sorted(buf.slots[b].tolist()) == sorted(sets[1][b].tolist())
        assert torch.equal(k[b], host_k[b][:, buf.slots[b]]) and torch.equal(v[b], host_v[b][:, buf.slots[b]])
    q = torch.randn(2, 2, 1, 4, generator=g)                                # attention ignores slot order
    gathered = host_k.gather(2, sets[1][:, None, :, None].expand(2, 2, 5, 4))
    gv = host_v.gather(2, sets[1][:, None, :, None].expand(2, 2, 5, 4))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert torch.allclose(sdpa(q, k, v), sdpa(q, gathered, gv), atol=1e-6)
