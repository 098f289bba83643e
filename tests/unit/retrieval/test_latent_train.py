"""LaSER training through the one trainer (lab.train.fit) for every K = 1..5, and latent-view encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lab.retrieval.laser_prompts import load_laser_prompt
from lab.retrieval.latent_train import (LaserExample, LatentSettings, collator, encode, encode_ks, loss_fn, prepare,
                                        wrapped_ids)
from lab.train import LoraSettings, TrainSettings, fit
from tests.conftest import one_torch_thread

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
EXAMPLES = [
    LaserExample("what causes tides", "The moon pulls the sea.\n\nGravity differs across Earth.\n\nSo water bulges.",
                 "Tides are caused by the gravitational pull of the moon.", "Tide is a laundry detergent brand."),
    LaserExample("define visceral", "ok",      # shorter than 5 characters: the query replaces it
                 "Visceral relates to the internal organs, or to deep inward feelings.", "A visor shades the eyes."),
]


@pytest.fixture(scope="module")
def tiny():
    from lab.models import load_model, load_tokenizer, resolve

    path = resolve("random:qwen3-tiny")
    return path, load_tokenizer(path)


def test_prepare_cuts_content_not_wrapper_and_replaces_short_reasoning(tiny):
    _, tok = tiny
    prompt = load_laser_prompt("laser_v1")
    rows = prepare(tok, EXAMPLES, prompt, LatentSettings(segment_rule="text", query_max_len=64, doc_max_len=48))
    assert tok.decode(rows[1]["r"]) == "define visceral"
    assert len(rows[0]["ends"]) == 3 and rows[0]["ends"][-1] == len(rows[0]["r"]) - 1
    ids = wrapped_ids(tok, prompt, "word " * 200, query=False, max_len=48)
    assert len(ids) <= 48 and tok.decode(ids).endswith(prompt.think)
    q = tok.decode(rows[0]["q"])
    assert "Instruct: " + prompt.task + "\nQuery: what causes tides" in q and q.endswith("<think>\n\n</think>\n\n")
    with pytest.raises(ValueError, match="no room"):
        wrapped_ids(tok, prompt, "x", query=True, max_len=8)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_training_runs_for_every_k_through_fit(tiny, fresh_accelerate, k):
    from lab.models import load_model

    path, tok = tiny
    s = LatentSettings(k=k, segment_rule="text", query_max_len=64, doc_max_len=48)
    rows = prepare(tok, EXAMPLES, load_laser_prompt("laser_v1"), s)
    model = load_model(path, kind="causal_lm")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = TrainSettings(max_steps=1, batch_size=2, lr=1e-2, progress=False, seed=0,
                             lora=LoraSettings(r=4, alpha=8, targets=("q_proj", "v_proj")))
    res = fit(model, rows, collator(tok.pad_token_id), loss_fn(s, tok.eos_token_id), settings)
    rec = res.records()[-1]
    assert math.isfinite(rec["loss"]) and rec["cl_latent"] > 0 and rec["cl_explicit"] > 0 and rec["kl"] >= 0
    assert ("soft_entropy" in rec) == (k > 1)
    merged = res.model.merge_and_unload()
    changed = [n for n, p in merged.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)


def test_encode_keeps_order_and_unit_norm(tiny):
    from lab.models import load_model

    path, tok = tiny
    model = load_model(path, kind="causal_lm")
    texts = ["a much longer passage about tides and the moon", "short", "medium length text"]
    prompt = load_laser_prompt("laser_v1")
    vecs, ent = encode(model, tok, prompt, texts, 3, query=False, max_len=48, batch_size=2, progress=False)
    alone = np.concatenate([encode(model, tok, prompt, [t], 3, query=False, max_len=48, progress=False)[0]
                            for t in texts])
    assert vecs.shape == (3, model.config.hidden_size) and np.allclose(vecs, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5) and (ent > 0).all()


def test_one_pass_at_the_largest_k_gives_every_smaller_k_bitwise(tiny):
    """laser_eval encodes the pool once at K = 5 for the K sweep: each K's vectors must be exactly those of
    latent_encode run at that K alone (same floats, so the smoke table does not move)."""
    from lab.models import load_model
    from lab.retrieval.latent import latent_encode
    from lab.retrieval.latent_train import left_pad, wrapped_ids

    path, tok = tiny
    model = load_model(path, kind="causal_lm").eval()
    texts = ["a much longer passage about tides and the moon", "short", "medium length text"]
    prompt = load_laser_prompt("laser_v1")
    many = encode_ks(model, tok, prompt, texts, [5, 1, 3, 2, 4], query=False, max_len=48, batch_size=1,
                     progress=False)
    assert sorted(many) == [1, 2, 3, 4, 5]
    for k in range(1, 6):
        with torch.no_grad():
            direct = [latent_encode(model, *left_pad([wrapped_ids(tok, prompt, t, query=False, max_len=48)],
                                                     tok.pad_token_id), k) for t in texts]
        assert np.array_equal(many[k][0], np.concatenate([d.vector.numpy() for d in direct])), k
        want = [float(d.entropy.mean()) if d.entropy.numel() else 0.0 for d in direct]
        assert np.array_equal(many[k][1], np.array(want, dtype=np.float32)), k
    with pytest.raises(ValueError, match="ks"):
        encode_ks(model, tok, prompt, texts, [0, 2], query=False, max_len=48, progress=False)


def test_explicit_infonce_trains_the_explicit_path_and_kl_does_not(tiny):
    """On the model: the embedding rows of tokens only the reasoning holds get a gradient from the explicit
    InfoNCE and none from the output KL (teacher detached). K = 1: no soft token touches the (tied) LM head."""
    from lab.models import load_model

    path, tok = tiny
    ex = [LaserExample("what causes tides", "zebra quokka xylophone", "Tides follow the moon.", "Tide detergent."),
          LaserExample("define visceral", "narwhal okapi", "Visceral means of the organs.", "A visor.")]
    rows_of = lambda s: prepare(tok, ex, load_laser_prompt("laser_v1"), s)                  # noqa: E731
    grads = {}
    for name, weights in {"explicit": dict(w_latent=0.0, w_kl=0.0, w_mid=0.0),
                          "kl": dict(w_latent=0.0, w_explicit=0.0, w_mid=0.0)}.items():
        s = LatentSettings(k=1, segment_rule="text", query_max_len=64, doc_max_len=48, **weights)
        rows = rows_of(s)
        only = sorted({t for r in rows for t in r["r"]} - {t for r in rows for t in r["q"] + sum(r["docs"], [])})
        model = load_model(path, kind="causal_lm")
        loss_fn(s, tok.eos_token_id)(model, collator(tok.pad_token_id)(rows))["loss"].backward()
        grads[name] = float(model.get_input_embeddings().weight.grad[only].abs().max())
    assert grads["explicit"] > 0 and grads["kl"] == 0.0
