"""The selective attention layer: exactness at full budget, RoPE positions after gathering, one selector call per
decoding step, and the measurements it records."""

from __future__ import annotations

import pytest
import torch

from lab.kv import baselines, retrieval_head as rh, selective


def _prompt(n=40, cont=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 512, (2, n), generator=g), torch.randint(0, 512, (2, cont), generator=g)


def _selectors(target, ids):
    dlm = rh.build_dlm(target, [0, 1]).eval()
    head = rh.HeadSelector(rh.RetrievalHead(dlm, [(1, 0), (1, 3)]))
    head.prefill(ids)
    return [baselines.StreamingLLM(), baselines.RandomSelector(0), baselines.GlobalOracle(), baselines.LayerOracle(),
            baselines.GemFilterLike(1), baselines.Quest(page=4, dense_layers=1), baselines.H2O(window=4),
            baselines.SnapKV(obs_window=8, kernel=3, window=4), head]


def test_budget_at_least_context_equals_full_kv_exactly(target):
    ids, cont = _prompt()
    sels = _selectors(target, ids)
    cache, _ = selective.prefill(target, ids, hook=baselines.combined_prefill_hook(sels))
    ref, _, _ = selective.decode(target, selective.copy_cache(cache), cont, None, budget=1)
    for sel in sels:
        out, _, ctl = selective.decode(target, selective.copy_cache(cache), cont, sel, budget=ids.shape[1] + 6,
                                       sinks=2, window=4, measure=True)
        assert torch.equal(out, ref), sel.name
        assert ctl.metrics.mass_recall == pytest.approx([1.0] * 6)
    # the stepwise full-KV reference is the model's own forward over the whole sequence
    with torch.no_grad():
        whole = target(input_ids=torch.cat([ids, cont], 1)).logits[:, ids.shape[1]:].float()
    assert torch.allclose(ref, whole, atol=1e-5)
    # a smaller budget does change the output (the test above could not pass by ignoring selection)
    small, _, _ = selective.decode(target, selective.copy_cache(cache), cont, baselines.StreamingLLM(), budget=8,
                                   sinks=2, window=4)
    assert not torch.allclose(small, ref, atol=1e-4)


class Fixed:
    name, per_layer = "fixed", False

    def __init__(self, idx):
        self.idx = idx

    def select(self, ctx):
        return self.idx.expand(ctx["input_ids"].shape[0], -1)


def test_gathered_keys_keep_full_sequence_rope_positions(target):
    from transformers import DynamicCache

    ids, cont = _prompt(n=30, cont=1)
    keep = torch.tensor([0, 1, 5, 9, 17, 22, 28, 29, 30])            # 30 = the decoding token itself
    cache, _ = selective.prefill(target, ids)
    out, _, _ = selective.decode(target, selective.copy_cache(cache), cont, Fixed(keep), budget=9)

    def reference(position):
        small = DynamicCache(config=target.config)                   # only the kept prompt rows, as written
        for layer in range(target.config.num_hidden_layers):
            k, v = cache.layers[layer].keys, cache.layers[layer].values
            small.update(k[:, :, keep[:-1]], v[:, :, keep[:-1]], layer)
        with torch.no_grad():
            return target(input_ids=cont, cache=small, position_ids=torch.tensor([[position]])).logits[:, -1]

    assert torch.allclose(out[:, 0], reference(30), atol=1e-5)      # query at its own position 30
    assert not torch.allclose(out[:, 0], reference(8), atol=1e-3)   # compressed positions would differ


class Counting:
    def __init__(self, inner):
        self.inner, self.calls, self.layer_calls = inner, 0, 0
        self.per_layer = getattr(inner, "per_layer", False)
        self.name = inner.name

    def select(self, ctx):
        self.calls += 1
        return self.inner.select(ctx)

    def select_layer(self, *args):
        self.layer_calls += 1
        return self.inner.select_layer(*args)


def test_selector_runs_once_per_step_not_per_layer(target):
    ids, cont = _prompt(cont=5)
    dlm = rh.build_dlm(target, [0, 2]).eval()
    head = rh.HeadSelector(rh.RetrievalHead(dlm, [(1, 2)]))
    head.prefill(ids)
    spec = Counting(head)
    cache, _ = selective.prefill(target, ids)
    _, _, ctl = selective.decode(target, selective.copy_cache(cache), cont, spec, budget=16, sinks=2, window=4)
    assert spec.calls == ctl.select_calls == 5 and ctl.layer_calls == 0      # 5 steps, 3 layers: not 15
    quest = Counting(baselines.Quest(page=4, dense_layers=0))
    _, _, ctl = selective.decode(target, selective.copy_cache(cache), cont, quest, budget=16)
    assert quest.layer_calls == 5 * 3 and quest.calls == 0                   # layer-wise retrieval: per layer


def test_measurements_attended_rows_changed_set_and_oracle(target):
    ids, cont = _prompt(cont=6)
    cache, _ = selective.prefill(target, ids)
    _, _, stream = selective.decode(target, selective.copy_cache(cache), cont, baselines.StreamingLLM(), budget=12,
                                    sinks=4, window=8, measure=True)
    m = stream.metrics
    assert m.attended == [12.0] * 6
    # sinks + sliding window: exactly one row enters per step (1/12 of the set), 3 layers' worth of rows move
    assert m.changed == pytest.approx([1 / 12] * 5) and m.changed_tokens == pytest.approx([3.0] * 5)
    _, _, oracle = selective.decode(target, selective.copy_cache(cache), cont, baselines.LayerOracle(), budget=12,
                                    sinks=4, window=4, measure=True)
    assert sum(oracle.metrics.mass_recall) > sum(m.mass_recall)              # the per-layer oracle is an upper bound
    assert all(0.0 < x <= 1.0 for x in oracle.metrics.mass_recall)
