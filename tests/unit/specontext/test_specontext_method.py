"""SpeContext wiring: schema checks, needles, the fidelity loop (exact at full budget), needle scoring rules."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import lab.config
from lab.methods.specontext import config as C, needles as N


class ByteTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text.encode())}

    def decode(self, ids):
        return bytes(i % 256 for i in ids).decode(errors="replace")


def test_every_profile_loads_and_unknown_methods_are_refused():
    for profile in lab.config.PROFILES:
        cfg = lab.config.load("specontext", profile)
        assert set(cfg.eval.methods) <= set(C.METHODS)
    with pytest.raises(ValueError, match="specontext.eval.methods"):
        C.SpecConfig(eval=dataclasses.replace(C.SpecEval(), methods=("specontext", "kvpress")))


def test_needles_sit_at_their_depth_inside_an_exact_length_haystack():
    tok = ByteTokenizer()
    texts = [f"passage number {i} about nothing in particular." for i in range(200)]
    for task in C.NEEDLE_TASKS:
        nd = N.make(task, 0.5, seed=0)
        ids = N.haystack_ids(tok, texts, 2000, nd)
        text = tok.decode(ids)
        assert len(ids) == 2000 and all(s in text for s in nd.needles)
        first = text.index(nd.needles[0])
        assert 0.4 < first / len(text) < 0.6                       # depth 50%
        assert N.score(" ".join(nd.answers), nd) == 1.0 and N.score("nothing", nd) == 0.0
    assert N.make("passkey", 0.5, 0) == N.make("passkey", 0.5, 0)   # seeded
    mv = N.make("multivalue", 0.1, 0)
    assert N.score(mv.answers[0], mv) == pytest.approx(1 / 3)


def test_needle_summary_scores_only_where_full_kv_succeeds():
    from lab.methods.specontext.evaluate import needle_summary

    df = pd.DataFrame([
        {"task": "passkey", "depth": 0.1, "context": 8, "method": "full", "budget": 0, "score": 1.0},
        {"task": "passkey", "depth": 0.5, "context": 8, "method": "full", "budget": 0, "score": 0.0},
        {"task": "passkey", "depth": 0.1, "context": 8, "method": "quest", "budget": 4, "score": 0.0},
        {"task": "passkey", "depth": 0.5, "context": 8, "method": "quest", "budget": 4, "score": 1.0},  # not scored
    ])
    out = needle_summary(df)
    assert out.to_dict("records") == [{"method": "quest", "budget": 4, "accuracy": 0.0, "scored_needles": 1,
                                       "full_success_rate": 0.5}]


def test_fidelity_rows_are_exact_at_full_budget_and_cover_every_method():
    import torch

    from lab.kv.retrieval_head import build_dlm
    from lab.methods.specontext import evaluate as E, heads as H
    from tests.unit.kv.conftest import tiny_llama

    target = tiny_llama(layers=2)
    cfg = lab.config.load("specontext", "tiny")
    dlm = build_dlm(target, [0, 1]).eval()
    heads = {m: H.build_selector(dlm, [(1, 0)], m) for m in ("specontext", "specontext_undistilled")}
    prompt = torch.randint(0, 512, (1, 24), generator=torch.Generator().manual_seed(0))
    sels = E.make_selectors(cfg, cfg.eval.methods, heads, 2)
    rows = pd.DataFrame(E.fidelity(target, prompt, sels, [64, 12], cfg, continuation=4, progress=False))
    assert sorted(rows.method.unique()) == sorted(cfg.eval.methods) and len(rows) == 2 * len(cfg.eval.methods)
    full = rows[rows.budget == 64]
    assert (full.agreement == 1.0).all() and (full.kl.abs() < 1e-9).all() and (full.mass_recall > 1 - 1e-6).all()
    assert (rows[rows.budget == 12].mass_recall < 1.0).all()
    assert (rows[rows.method == "specontext"].select_calls_per_step == 1.0).all()


@pytest.mark.parametrize("unsolved", [False, True])
def test_needles_full_kv_fails_are_not_decoded_by_the_methods_unless_asked(monkeypatch, unsolved):
    import torch

    from lab.kv import baselines
    from lab.methods.specontext import evaluate as E

    tok = ByteTokenizer()
    texts = [f"passage number {i} about nothing in particular." for i in range(50)]
    cfg = lab.config.load("specontext", "tiny")
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, needle_tasks=("passkey",), needle_depths=(0.1, 0.9), answer_tokens=8,
                                                           needles_unsolved=unsolved))
    key = N.make("passkey", 0.1, 0).answers[0]                        # full KV "solves" depth 0.1 only
    calls = []

    def decode(target, cache, tokens, selector=None, *, greedy_after, **kw):
        calls.append(getattr(selector, "name", "full"))
        ids = list((" " + key).encode()) if cache == 0.1 else [0]
        ans = torch.full((1, tokens.shape[1]), 32)
        ans[0, greedy_after - 1:greedy_after - 1 + len(ids)] = torch.tensor(ids[: tokens.shape[1] - greedy_after + 1])
        return torch.nn.functional.one_hot(ans, 256).float(), tokens, None

    monkeypatch.setattr(E.selective, "decode", decode)
    monkeypatch.setattr(E.selective, "copy_cache", lambda c: c)
    depth = iter([0.1, 0.9])
    monkeypatch.setattr(E, "_prefill", lambda target, prompt, selectors: (next(depth), None))
    sels = {"streamingllm": baselines.StreamingLLM(), "random": baselines.RandomSelector(0)}
    rows = pd.DataFrame(E.needle_eval(None, tok, texts, sels, [32], cfg, context=256, seed=0))
    solved = rows[(rows.method == "full")].set_index("depth").score.to_dict()
    assert solved == {0.1: 1.0, 0.9: 0.0}
    assert calls == ["full", "streamingllm", "random", "full"] + (["streamingllm", "random"] if unsolved else [])
    assert E.needle_summary(rows).scored_needles.tolist() == [1, 1]
