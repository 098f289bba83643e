"""Inference engines: the vLLM engine driven through a fake ``vllm.LLM`` (vLLM is not installable here) gives the
HF engine's rankings from the same prompt token ids; HF stays the default."""

from types import SimpleNamespace

import pytest
import torch

from lab.records import Candidate, Query, Ranking, Run
from lab.rerank.engines import VLLM_HINT, HFEngine, VLLMEngine, make_engine
from lab.rerank.listwise import GenerationScorer, SingleTokenScorer, build_inputs, rerank

PASSAGES = [f"passage {i} about topic {i % 3} with a few words" for i in range(20)]


class FakeSamplingParams:
    def __init__(self, max_tokens=16, temperature=1.0, logprobs=None, **kwargs):
        self.max_tokens, self.temperature, self.logprobs, self.extra = max_tokens, temperature, logprobs, kwargs


class TopK(dict):
    """vLLM's ``{token id: Logprob}`` of one position, built lazily (a full-vocabulary top-k in the tests)."""

    def __getitem__(self, tid):
        return SimpleNamespace(logprob=dict.__getitem__(self, tid))


class FakeLLM:
    """``vllm.LLM.generate`` on an HF model: top-``logprobs`` ``{id: Logprob}`` of the first new token, greedy text."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.prompts, self.params = model, tokenizer, [], []

    @torch.no_grad()
    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.params.append(sampling_params)
        outs = []
        for p in prompts:
            ids = torch.tensor([p["prompt_token_ids"]])                                  # [1, L]
            self.prompts.append(list(p["prompt_token_ids"]))
            if sampling_params.logprobs:                   # one step: top-k log-probabilities of the next token
                lp = torch.log_softmax(self.model(input_ids=ids).logits[0, -1].float(), -1)   # [V]
                vals, idx = lp.topk(sampling_params.logprobs)                                  # [k]
                top = TopK(dict(zip(idx.tolist(), vals.tolist())))
                outs.append(SimpleNamespace(outputs=[SimpleNamespace(text=self.tokenizer.decode(idx[:1]),
                                                                     logprobs=[top])]))
                continue
            new = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=sampling_params.max_tokens,
                                      pad_token_id=self.tokenizer.eos_token_id)[0, ids.shape[1]:]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(text=text, logprobs=None)]))
        return outs


def _run(n_queries=2, n=12):
    run = Run("bm25")
    for q in range(n_queries):
        run.add(Ranking(Query(f"q{q}", f"query number {q}"),
                        [Candidate(f"d{q}_{i}", float(n - i), i + 1, PASSAGES[i]) for i in range(n)]))
    return run


def test_vllm_engine_matches_hf_single_token(tokenizer, tiny_model):
    fake = FakeLLM(tiny_model, tokenizer)
    engine = VLLMEngine(fake, tokenizer, logprobs=len(tokenizer), sampling_params=FakeSamplingParams)
    hf = SingleTokenScorer(tiny_model, tokenizer, max_words=8)
    vl = SingleTokenScorer(None, tokenizer, max_words=8, engine=engine)
    assert isinstance(hf.engine, HFEngine) and vl.engine is engine
    a = rerank(_run(), hf, window=5, stride=3, depth=12, progress=False, batch_size=2)
    b = rerank(_run(), vl, window=5, stride=3, depth=12, progress=False, batch_size=2)
    assert [[c.docid for c in r.candidates] for r in a] == [[c.docid for c in r.candidates] for r in b]
    want = build_inputs(tokenizer, "query number 0", PASSAGES[7:12], max_words=8)
    assert fake.prompts[0] == want                          # the same prompt token ids, ending with "["
    p = fake.params[0]
    assert (p.max_tokens, p.temperature, p.logprobs) == (1, 0.0, len(tokenizer))
    # scores are log-probabilities: the HF logits shifted by each row's log-sum-exp
    diff = vl.last_scores - hf.last_scores                                                # [B, n]
    for row, ok in zip(diff, torch.isfinite(diff)):       # -inf past nums[b] in both
        assert ok.sum() >= 2 and torch.allclose(row[ok], row[ok][:1].expand(int(ok.sum())), atol=1e-4)
        assert (row[ok] < 0).all()


def test_identifiers_outside_the_topk_rank_last_in_input_order(tokenizer):
    ident = [10, 11, 12, 13]

    class Top4:                                          # B (11) is not among the returned top-k
        def generate(self, prompts, sampling_params, use_tqdm=True):
            top = TopK({12: -0.5, 10: -2.0, 13: -3.0, 999: -0.1})
            return [SimpleNamespace(outputs=[SimpleNamespace(text="", logprobs=[top])]) for _ in prompts]

    scores = VLLMEngine(Top4(), tokenizer, sampling_params=FakeSamplingParams).identifier_scores(
        [[1, 2], [3]], [4, 3], ident)
    inf = float("-inf")
    assert scores.tolist() == [[-2.0, inf, -0.5, -3.0], [-2.0, inf, -0.5, inf]]   # row 1 has 3 passages
    assert torch.sort(scores[0], descending=True, stable=True).indices.tolist() == [2, 0, 3, 1]   # C, A, D, then B


def test_vllm_engine_generation_matches_hf(tokenizer, tiny_model):
    fake = FakeLLM(tiny_model, tokenizer)
    engine = VLLMEngine(fake, tokenizer, sampling_params=FakeSamplingParams)
    hf = GenerationScorer(tiny_model, tokenizer, max_words=8, max_new_tokens=6)
    vl = GenerationScorer(None, tokenizer, max_words=8, max_new_tokens=6, engine=engine)
    a = rerank(_run(1, 6), hf, window=6, stride=3, depth=6, progress=False)
    b = rerank(_run(1, 6), vl, window=6, stride=3, depth=6, progress=False)
    assert hf.last_texts == vl.last_texts and [c.docid for c in a["q0"].candidates] == [c.docid for c in b["q0"].candidates]
    assert fake.prompts[0] == build_inputs(tokenizer, "query number 0", PASSAGES[:6], max_words=8, with_prefix=False)
    assert (fake.params[0].max_tokens, fake.params[0].temperature, fake.params[0].logprobs) == (6, 0.0, None)


def test_vllm_is_lazy_with_an_install_hint(tokenizer, tiny_model, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match="pip install vllm"):
        make_engine("vllm", "models/llm", tokenizer)
    with pytest.raises(ImportError, match="pip install vllm"):
        VLLMEngine(object(), tokenizer)
    assert isinstance(make_engine("hf", tiny_model, tokenizer), HFEngine) and "pip install vllm" in VLLM_HINT
    from lab.rerank.constrained import ConstrainedScorer

    with pytest.raises(ValueError, match="HF engine only"):
        ConstrainedScorer(None, tokenizer, engine=VLLMEngine(object(), tokenizer, sampling_params=FakeSamplingParams))
