"""LaSER's latent and explicit views (lab.retrieval.latent) on tiny random-init Llama and Qwen3 decoders.

Pins the mechanism: the soft token is probs @ E, the KV-cache loop equals a full recompute for K = 1..5, a
left-padded batch equals one-at-a-time encoding, K = 1 is the plain last-token state, and segment ends /
trajectory indices on a real reasoning trace (TongSearch-QR, from the data mirror).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from lab.retrieval.latent import (explicit_encode, latent_encode, segment_ends, soft_token, trajectory_indices,
                                  trajectory_states)
from tests.conftest import MIRROR, one_torch_thread

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
TEXTS = ["how long is the life cycle of a flea", "define visceral", "what is the daily life of thai people like"]


@pytest.fixture(scope="module", params=["random:llama-tiny", "random:qwen3-tiny"])
def lm(request):
    from lab.models import load_model, load_tokenizer, resolve

    path = resolve(request.param)
    tok = load_tokenizer(path)
    tok.padding_side = "left"
    return load_model(path, kind="causal_lm").eval(), tok


def _batch(tok, texts):
    b = tok(texts, padding=True, return_tensors="pt")
    return b["input_ids"], b["attention_mask"]


def test_soft_token_is_probs_times_the_embedding_table(lm):
    model, tok = lm
    E = model.get_input_embeddings().weight.detach()                     # (V, D)
    logits = torch.randn(2, E.shape[0])
    probs = logits.exp() / logits.exp().sum(-1, keepdim=True)
    assert torch.allclose(soft_token(logits, E), probs @ E, atol=1e-6)
    # ... and it is what the loop feeds: h_1 = the state after the prompt + softmax(W_lm h_0) @ E
    ids, mask = _batch(tok, TEXTS[:1])
    with torch.no_grad():
        out = latent_encode(model, ids, mask, 2)
        full = model(input_ids=ids, output_hidden_states=True)
        t = soft_token(full.logits[:, -1], E)[:, None]                    # (1, 1, D)
        embeds = torch.cat([model.get_input_embeddings()(ids), t], 1)
        h1 = model(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1][:, -1]
    assert torch.allclose(out.states[:, 1], h1, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_kv_cache_loop_equals_full_recompute(lm, k):
    model, tok = lm
    ids, mask = _batch(tok, TEXTS)
    with torch.no_grad():
        cached = latent_encode(model, ids, mask, k)
        full = latent_encode(model, ids, mask, k, use_cache=False)
    assert cached.states.shape == (3, k, model.config.hidden_size)
    assert torch.allclose(cached.states, full.states, atol=1e-5)
    assert torch.allclose(cached.vector, full.vector, atol=1e-5)
    assert torch.allclose(cached.vector.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(cached.vector, F.normalize(cached.states.mean(1), dim=-1))


def test_left_padded_batch_equals_one_at_a_time(lm):
    model, tok = lm
    ids, mask = _batch(tok, TEXTS)
    assert (mask[:, 0] == 0).any(), "the batch must actually hold padding"
    with torch.no_grad():
        batch = latent_encode(model, ids, mask, 3).vector
        alone = torch.cat([latent_encode(model, *_batch(tok, [t]), 3).vector for t in TEXTS])
        x_batch = explicit_encode(model, ids, mask, tok.eos_token_id).vector
        x_alone = torch.cat([explicit_encode(model, *_batch(tok, [t]), tok.eos_token_id).vector for t in TEXTS])
    assert torch.allclose(batch, alone, atol=1e-5)
    assert torch.allclose(x_batch, x_alone, atol=1e-5)


def test_k1_is_the_plain_last_token_state_and_right_padding_is_refused(lm):
    model, tok = lm
    ids, mask = _batch(tok, TEXTS[:1])
    with torch.no_grad():
        want = F.normalize(model(input_ids=ids, output_hidden_states=True).hidden_states[-1][:, -1], dim=-1)
        assert torch.allclose(latent_encode(model, ids, mask, 1).vector, want, atol=1e-5)
    tok.padding_side = "right"
    try:
        with pytest.raises(ValueError, match="left padding"):
            latent_encode(model, *_batch(tok, TEXTS), 3)
    finally:
        tok.padding_side = "left"
    with pytest.raises(ValueError, match="k"):
        latent_encode(model, ids, mask, 0)


def test_explicit_view_appends_the_eos_embedding(lm):
    model, tok = lm
    ids, mask = _batch(tok, TEXTS[:1])
    with torch.no_grad():
        out = explicit_encode(model, ids, mask, tok.eos_token_id)
        eos = torch.cat([ids, torch.tensor([[tok.eos_token_id]])], 1)
        want = F.normalize(model(input_ids=eos, output_hidden_states=True).hidden_states[-1][:, -1], dim=-1)
    assert torch.allclose(out.vector, want, atol=1e-5)
    assert out.hidden.shape[1] == ids.shape[1]


def test_trajectory_indices_linspace_floor_and_repeat():
    assert trajectory_indices(11, 3, "linspace") == [0, 5, 10]            # torch.linspace(0, 10, 3).long()
    assert trajectory_indices(10, 3, "linspace") == [0, 4, 9]             # 4.5 truncates to 4
    assert trajectory_indices(11, 3, "floor") == [2, 6, 10]               # floor(i*11/3) - 1, i = 1..3
    assert trajectory_indices(3, 3, "floor") == trajectory_indices(3, 3) == [0, 1, 2]
    assert trajectory_indices(2, 5) == trajectory_indices(2, 5, "floor") == [0, 1, 1, 1, 1]
    assert trajectory_indices(4, 1) == [0] and trajectory_indices(4, 1, "floor") == [3]
    with pytest.raises(ValueError):
        trajectory_indices(0, 3)


def test_segment_ends_text_rule_counts_a_blank_line_run_once():
    texts = ["a", ".", "\n", "\n", "b", "\n\n", "\n", "c"]          # "a.\n\nb\n\n\nc": two blank-line runs
    assert segment_ends(list(range(8)), texts, rule="text") == [3, 5, 7]
    assert segment_ends([5, 9, 5], newline_id=9) == [1, 2] and segment_ends([], rule="text") == []
    with pytest.raises(ValueError, match="rule"):
        segment_ends([1], ["x"], rule="words")


@pytest.mark.skipif(MIRROR is None, reason="needs the data mirror (LAB_DATA_MIRROR)")
def test_segment_ends_on_a_real_reasoning_trace():
    from lab.models import load_tokenizer, resolve

    path = MIRROR / "reasoning" / "tongsearch_qr" / "TongSearch-QR-7B_reasoned_BRIGHT_queries.json"
    query, trace = next(iter(json.loads(path.read_text()).items()))
    assert query.startswith("Claim in article about why insects are attracted to light")
    runs = re.findall(r"\n{2,}", trace)
    assert len(runs) == 10 and set(runs) == {"\n\n"} and not trace.endswith("\n")
    tok = load_tokenizer(resolve("random:llama-tiny"))                    # SmolLM2's byte-level BPE
    ids = tok(trace, add_special_tokens=False)["input_ids"]
    texts = [tok.decode([t]) for t in ids]
    newline = tok.encode("\n\n", add_special_tokens=False)[-1]
    by_text = segment_ends(ids, texts, newline_id=newline, rule="text")
    assert len(by_text) == 11 and by_text[-1] == len(ids) - 1
    for e in by_text[:-1]:
        assert tok.decode(ids[: e + 1]).endswith("\n\n") and not tok.decode(ids[: e]).endswith("\n\n")
    # the code's rule looks for encode("\n\n")[-1]: one token alone, but two "\n" tokens inside SmolLM2 text
    assert segment_ends(ids, newline_id=newline, rule="token") == [len(ids) - 1]
    # a tokenizer that keeps "\n\n" whole (Qwen3's pre-tokenizer) makes the two rules agree: simulate by ids
    merged, mtexts = [], []
    for t, s in zip(ids, texts):
        if s == "\n" and mtexts and mtexts[-1] == "\n":
            merged[-1], mtexts[-1] = newline, "\n\n"
        else:
            merged.append(t)
            mtexts.append(s)
    assert segment_ends(merged, newline_id=newline) == segment_ends(merged, mtexts, rule="text")
    hidden = torch.arange(2 * (5 + len(ids)) * 1, dtype=torch.float32).view(2, 5 + len(ids), 1)
    got = trajectory_states(hidden, [5, 5], [by_text, by_text], 3)        # (2, 3, 1)
    assert got[0, :, 0].tolist() == [5 + by_text[i] for i in (0, 5, 10)]
