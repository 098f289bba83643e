"""Elastic loading in the decode path: persistent per-layer buffers refilled with only the rows that entered the set
(one plan per step for every layer) give the gather path's output, copy exactly the changed rows, and the host
store (pinned on CUDA) gives the same logits; the memory model picks the placement."""

from __future__ import annotations

import pytest
import torch

from lab.kv import baselines, offload, retrieval_head as rh, selective


def _prompt(n=40, cont=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 512, (2, n), generator=g), torch.randint(0, 512, (2, cont), generator=g)


def test_slot_plan_refills_freed_slots_grows_and_reloads():
    slots = torch.full((2, 5), -1, dtype=torch.long)
    p = offload.slot_plan(slots, 0, torch.tensor([[0, 1, 2], [0, 4, 7]]))             # cold: slots 0..2
    assert p.rows == 6 and p.tokens.tolist() == [[0, 1, 2], [0, 4, 7]]
    p = offload.slot_plan(slots, 3, torch.tensor([[0, 2, 3, 5], [0, 4, 7, 8]]))       # 1 left, 2 entered | 1 entered
    assert p.rows == 3
    assert p.tokens.tolist() == [[0, 3, 2, 5], [0, 4, 7, 8]]      # 3 takes the slot 1 freed, 5 the next free one
    assert list(zip(p.batch.tolist(), p.slot.tolist(), p.token.tolist())) == [(0, 1, 3), (0, 3, 5), (1, 3, 8)]
    p = offload.slot_plan(slots, 4, torch.tensor([[9, 10], [1, 2]]))                  # smaller set: reload
    assert p.rows == 4 and p.tokens.tolist() == [[9, 10], [1, 2]] and (slots[:, 2:] == -1).all()
    with pytest.raises(ValueError, match="distinct"):
        offload.slot_plan(slots, 2, torch.tensor([[9, 9, 11], [1, 2, 3]]))


def _selectors(target, ids):
    dlm = rh.build_dlm(target, [0, 1]).eval()

    def head():
        h = rh.HeadSelector(rh.RetrievalHead(dlm, [(1, 0), (1, 3)]))
        h.prefill(ids)
        return h

    return {"streamingllm": baselines.StreamingLLM, "random": lambda: baselines.RandomSelector(0), "head": head}


def test_elastic_equals_gather_and_copies_only_the_rows_that_entered(target):
    ids, cont = _prompt()
    cache, _ = selective.prefill(target, ids)
    layers, batch, steps = target.config.num_hidden_layers, 2, cont.shape[1]
    for name, make in _selectors(target, ids).items():
        for budget in (12, 20):
            ref, _, g = selective.decode(target, selective.copy_cache(cache), cont, make(), budget=budget, sinks=2,
                                         window=4, measure=True)
            out, _, e = selective.decode(target, selective.copy_cache(cache), cont, make(), budget=budget, sinks=2,
                                         window=4, measure=True, elastic=True, reload_above=1.0)   # never reload
            assert g.elastic is None                                        # the default path gathers
            # slot order changes the float summation order: 2.4e-7 at most here, not bitwise
            assert torch.allclose(out, ref, atol=1e-6, rtol=0), (name, budget, (out - ref).abs().max())
            assert e.metrics.mass_recall == pytest.approx(g.metrics.mass_recall, abs=1e-6)   # same sets
            # cold step: the whole set in every layer; then exactly the rows the changed-set metric counts
            cold = layers * batch * budget
            assert e.elastic.copied == pytest.approx(cold + batch * sum(e.metrics.changed_tokens)), name
            assert e.elastic.gathered == layers * batch * budget * steps
    # StreamingLLM: one row enters per step and layer
    _, _, s = selective.decode(target, selective.copy_cache(cache), cont, baselines.StreamingLLM(), budget=12,
                               sinks=2, window=4, elastic=True)
    assert s.elastic.copied == layers * batch * (12 + (steps - 1)) and s.elastic.reloads == 0
    # above the reload fraction a step regathers the whole set in token order: bitwise the gather path
    ref, _, _ = selective.decode(target, selective.copy_cache(cache), cont, baselines.RandomSelector(0), budget=12,
                                 sinks=2, window=4)
    out, _, r = selective.decode(target, selective.copy_cache(cache), cont, baselines.RandomSelector(0), budget=12,
                                 sinks=2, window=4, elastic=True, reload_above=0.0)
    assert torch.equal(out, ref) and r.elastic.reloads == steps - 1
    assert r.elastic.copied == r.elastic.gathered == layers * batch * 12 * steps


def test_budget_at_least_context_is_bitwise_full_kv_with_elastic(target):
    ids, cont = _prompt(cont=6)
    cache, _ = selective.prefill(target, ids)
    ref, _, _ = selective.decode(target, selective.copy_cache(cache), cont, None, budget=1)
    out, _, e = selective.decode(target, selective.copy_cache(cache), cont, baselines.RandomSelector(0),
                                 budget=ids.shape[1] + 6, elastic=True)
    assert torch.equal(out, ref)                                            # a growing set fills slots in order
    assert e.elastic.copied == 3 * 2 * (ids.shape[1] + 6)                   # each token copied once per layer


def test_host_store_gives_the_device_elastic_logits_and_holds_every_token(target):
    ids, cont = _prompt(cont=5)
    cache, _ = selective.prefill(target, ids)
    head = _selectors(target, ids)["head"]
    full = selective.copy_cache(cache)
    dev, _, d = selective.decode(target, full, cont, head(), budget=16, sinks=2, window=4, elastic=True,
                                 reload_above=1.0)                    # the host store never reloads
    host = offload.host_cache(selective.copy_cache(cache), cont.shape[1])
    out, _, h = selective.decode(target, None, cont, head(), budget=16, sinks=2, window=4, host=host)
    assert torch.equal(out, dev) and h.elastic.copied == d.elastic.copied
    # the host store grew by every decoded token, as the device cache of the same run did
    for layer in range(target.config.num_hidden_layers):
        assert host.layers[layer].length == ids.shape[1] + cont.shape[1]
        assert torch.equal(host.layers[layer].keys, full.layers[layer].keys)
        assert torch.equal(host.layers[layer].values, full.layers[layer].values)
    with pytest.raises(ValueError, match="host memory"):
        selective.SelectiveKV(target, 16, measure=True, host=host)
    with pytest.raises(ValueError, match="global selector"):
        selective.decode(target, selective.copy_cache(cache), cont, baselines.Quest(page=4, dense_layers=0),
                         budget=16, elastic=True)


def test_memory_model_places_the_prefill_on_the_device_or_the_host(target):
    ids, _ = _prompt(n=20)
    cache, _ = selective.prefill(target, ids)
    c = target.config
    per_token = offload.placement(target, 1, 1, 8, gpu_bytes=1 << 40).kv_bytes              # one token, one row
    assert per_token == c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * 4
    weights = sum(p.numel() * 4 for p in target.parameters())
    roomy = weights + 2 * 30 * per_token                                    # (20 + 10 tokens) x 2 sequences fit
    kept, host, p = offload.place_cache(target, cache, 10, 8, gpu_bytes=roomy, headroom=1.0)
    assert kept is cache and host is None and p.kv_on_gpu
    kept, host, p = offload.place_cache(target, cache, 10, 8, gpu_bytes=roomy - 1, headroom=1.0)
    assert kept is None and not p.kv_on_gpu and p.cpu_bytes == 2 * 30 * per_token
    assert host.layers[0].store_k.shape[2] == 30 and torch.equal(host.layers[0].keys, cache.layers[0].keys)


@pytest.mark.gpu
def test_cuda_pinned_host_store_with_async_prefetch_matches_the_gather_path():
    from tests.unit.kv.conftest import tiny_llama

    model = tiny_llama().cuda()
    ids, cont = _prompt()
    ids, cont = ids.cuda(), cont.cuda()
    cache, _ = selective.prefill(model, ids)
    ref, _, _ = selective.decode(model, selective.copy_cache(cache), cont, baselines.RandomSelector(0), budget=16,
                                 sinks=2, window=4)
    host = offload.host_cache(selective.copy_cache(cache), cont.shape[1])
    assert host.layers[0].store_k.is_pinned()
    out, _, h = selective.decode(model, None, cont, baselines.RandomSelector(0), budget=16, sinks=2, window=4,
                                 host=host)
    assert h.elastic.stream is not None
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_elastic_on_a_static_cache_with_its_mask_equals_gather(target):
    """StaticCache: fixed-length keys (the bench's default) and a padding mask that must follow the slots."""
    from lab.kv.synthetic import random_cache

    cont = _prompt(cont=6)[1]
    outs = []
    for elastic in (False, True):
        cache = random_cache(target.config, 2, 40, target.config.num_hidden_layers, torch.float32, "cpu", "static",
                             extra=8)
        out, _, ctl = selective.decode(target, cache, cont, baselines.RandomSelector(0), budget=16, sinks=2,
                                       window=4, elastic=elastic, reload_above=1.0)   # scatter every step
        outs.append(out)
    assert torch.allclose(outs[1], outs[0], atol=1e-6, rtol=0)
    assert ctl.elastic.copied < ctl.elastic.gathered


class Scripted:
    """A global selector replaying fixed sets, one per step (sorted, 12 rows each)."""

    name, per_layer = "scripted", False

    def __init__(self, sets):
        self.sets, self.t = sets, 0

    def select(self, ctx):
        s = torch.tensor(self.sets[self.t])
        self.t += 1
        return s.expand(ctx["input_ids"].shape[0], -1)


def test_reload_and_scatter_steps_interleave_and_keep_the_gather_output(target):
    ids, cont = _prompt(cont=6)
    cache, _ = selective.prefill(target, ids)
    sets = [list(range(12)), list(range(11)) + [40], list(range(20, 32)),          # cold, 1 row, all 12 rows
            list(range(20, 31)) + [35], list(range(6)) + list(range(30, 36)), list(range(6)) + list(range(31, 37))]
    ref, _, _ = selective.decode(target, selective.copy_cache(cache), cont, Scripted(sets), budget=12)
    out, _, e = selective.decode(target, selective.copy_cache(cache), cont, Scripted(sets), budget=12, elastic=True)
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)
    # default 0.4: steps 2 (12 of 12 changed) and 4 (6 of 12 = 50%) regather; 1, 3, 5 scatter one row each
    assert e.elastic.reloads == 2
    assert e.elastic.copied == 3 * 2 * (12 + 1 + 12 + 1 + 12 + 1)
