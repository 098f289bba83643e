"""FIRST trainer: examples from qrels, encoding (logits position), losses, and a LoRA smoke run."""

import math

import pytest
import torch

from lab.losses import first_loss, lm_nll, weighted_ranknet
from lab.records import Candidate, Qrels, Query, Ranking, Run
from lab.rerank.listwise import identifier_token_ids, pad_token_id
from lab.rerank.train import (
    Encoded, RankExample, RankObjective, collate, collator, compute_losses, encode_example, evaluate,
    example_from_ranking, examples_from_run, gold_ranks, loss_fn, prepare, rank_loss, untied_pairs,
)
from lab.train import LoraSettings, TrainSettings, fit

EXAMPLE = RankExample("what is rust", ["iron oxide forms", "a systems language", "red colour", "a film"],
                      ranks=[2, 1, 4, 3])


def test_gold_ranks_break_ties_by_first_stage_order():
    assert gold_ranks([0, 2, 1, 2]) == [4, 1, 3, 2]
    assert gold_ranks([0, 0, 0]) == [1, 2, 3]


def _softplus(x: float) -> float:        # log(1 + exp(x))
    return math.log1p(math.exp(x))


def test_tied_gold_grades_form_no_ranknet_pair():
    """Passages A B C D with grades 1, 0 (unjudged), 2, 0: gold ranks 2 3 1 4 (B above D only by first-stage order).
    The rank loss is the weighted RankNet over the five untied pairs; B-D forms no pair."""
    cands = [Candidate(d, 1.0 - i / 10, i + 1, f"text {d}") for i, d in enumerate("ABCD")]
    ex = example_from_ranking(Ranking(Query("q", "query"), cands), {"A": 1, "C": 2, "D": 0})
    assert ex.ranks == [2, 3, 1, 4] and ex.relevance == [1.0, 0.0, 2.0, 0.0]
    batch = collate([Encoded([1, 2], [-100, 2], 1, ex.ranks, ex.relevance)], pad_id=0)
    pairs = untied_pairs(batch["relevance"])[0]                            # [4, 4]
    assert not pairs[1, 3] and not pairs[3, 1] and pairs[2, 0] and pairs[0, 1]
    scores = torch.tensor([[0.5, 1.0, 2.0, -1.0]])                         # s_A s_B s_C s_D
    # (better, worse) w = 1 / (r_i + r_j): C>A 1/3, C>B 1/4, C>D 1/5, A>B 1/5, A>D 1/6
    untied = [_softplus(-1.5) / 3, _softplus(-1.0) / 4, _softplus(-3.0) / 5, _softplus(0.5) / 5,
              _softplus(-1.5) / 6]
    got = rank_loss(RankObjective(), scores, batch)
    assert float(got) == pytest.approx(sum(untied) / 5, rel=1e-6)
    tied = rank_loss(RankObjective(mask_ties=False), scores, batch)        # today's tie-break pair B>D, 1/7
    assert float(tied) == pytest.approx((sum(untied) + _softplus(-2.0) / 7) / 6, rel=1e-6)
    # B and D tied: moving s_D up to s_B's side of it changes only pairs with A and C, never a B-D term
    s = scores.clone().requires_grad_(True)
    rank_loss(RankObjective(weighted=False), s, batch).backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert float(s.grad[0, 1]) == pytest.approx((sig(1.0 - 2.0) + sig(1.0 - 0.5)) / 5, rel=1e-6)  # C>B, A>B only
    assert untied_pairs(torch.tensor([[3.0, 2.0, 1.0, 0.0]]))[0].sum() == 12   # no labels: n - rank, no ties


def test_examples_from_ranking_and_run():
    cands = [Candidate(f"d{i}", 1.0 - i / 10, i + 1, f"text {i}") for i in range(6)]
    ranking = Ranking(Query("q1", "query"), cands)
    ex = example_from_ranking(ranking, {"d4": 2, "d1": 1, "d5": 2}, 1, 5)
    assert ex.passages == ["text 1", "text 2", "text 3", "text 4"]
    assert ex.ranks == [2, 3, 4, 1] and ex.order == [3, 0, 1, 2]
    run = Run("r", {"q1": ranking, "q2": Ranking(Query("q2", "x"), cands)})
    exs = examples_from_run(run, Qrels({"q1": {"d5": 1}}), window=4, stride=2)
    assert [e.passages[0] for e in exs] == ["text 2"]          # windows (2,6) has d5, (0,4) has none
    with pytest.raises(ValueError):
        RankExample("q", ["a", "b"], [1, 1])


def test_encoding_puts_rank_logits_at_the_bracket(tokenizer):
    ident = identifier_token_ids(tokenizer, 20)
    enc = encode_example(tokenizer, EXAMPLE, ident)
    ids, labels, pos = enc.input_ids, enc.labels, enc.rank_pos
    assert tokenizer.convert_ids_to_tokens(ids[pos]) == "["
    assert ids[pos + 1] == ident[1]                              # gold best is B
    assert all(x == -100 for x in labels[:pos]) and labels[pos:] == ids[pos:]
    assert tokenizer.decode(ids[pos:]) == "[B] > [A] > [D] > [C]<|im_end|>"


def test_compute_losses_uses_the_bracket_position(tokenizer, tiny_model):
    ident = identifier_token_ids(tokenizer, 20)
    enc = encode_example(tokenizer, EXAMPLE, ident)
    batch = collate([enc], pad_token_id(tokenizer))
    cfg = RankObjective()
    with torch.no_grad():
        parts = compute_losses(tiny_model, batch, torch.tensor(ident), cfg)
        logits = tiny_model(input_ids=batch["input_ids"]).logits          # [1, L, V]
    scores = logits[0, enc.rank_pos, ident[:4]][None]                      # [1, 4]
    rank = weighted_ranknet(scores, torch.tensor([EXAMPLE.ranks]))
    lm = lm_nll(logits, batch["labels"])
    torch.testing.assert_close(parts["rank"], rank, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts["lm"], lm, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts["loss"], first_loss(lm, rank, 10.0), atol=1e-4, rtol=1e-5)
    with torch.no_grad():                                                   # rank-only stops at "["
        only = compute_losses(tiny_model, batch, torch.tensor(ident), RankObjective(objective="rank"))
    torch.testing.assert_close(only["loss"], rank, atol=1e-5, rtol=1e-5)
    assert cfg.rank_weight == 10.0 and RankObjective(rank_loss="listnet").rank_weight == 0.1


def test_padded_batch_matches_single_examples(tokenizer, tiny_model):
    ident = identifier_token_ids(tokenizer, 20)
    other = RankExample("q", ["a", "b", "c", "d", "e", "f"], [6, 5, 4, 3, 2, 1])
    encs = [encode_example(tokenizer, e, ident) for e in (EXAMPLE, other)]
    cfg = RankObjective(objective="rank")
    with torch.no_grad():
        both = compute_losses(tiny_model, collate(encs, pad_token_id(tokenizer)), torch.tensor(ident), cfg)
        each = [compute_losses(tiny_model, collate([e], pad_token_id(tokenizer)), torch.tensor(ident), cfg)
                for e in encs]
    torch.testing.assert_close(both["rank"], (each[0]["rank"] + each[1]["rank"]) / 2, atol=1e-5, rtol=1e-5)


def _fit(model, tokenizer, examples, obj, settings):
    encoded, ident, pad_id = prepare(tokenizer, examples, obj)
    res = fit(model, encoded, collator(pad_id), loss_fn(ident, obj), settings)
    return res, [{k: r.get(k, 0.0) for k in ("step", "loss", "lm", "rank")} for r in res.records()]


def test_lora_smoke_reduces_joint_loss(tokenizer, new_tiny_model):
    obj = RankObjective()
    settings = TrainSettings(max_steps=5, lr=1e-2, scheduler="constant", seed=0, lora=LoraSettings(r=8),
                             progress=False)
    before = evaluate(new_tiny_model(), tokenizer, [EXAMPLE], obj)
    result, rows = _fit(new_tiny_model(), tokenizer, [EXAMPLE], obj, settings)
    after = evaluate(result.model, tokenizer, [EXAMPLE], obj)
    losses = [r["loss"] for r in rows]
    assert len(losses) == 5 and [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert losses[0] == pytest.approx(before["loss"], rel=1e-4)            # step 1 sees the initial model
    assert losses[-1] < losses[0] and after["loss"] < before["loss"]
    assert after["rank"] < before["rank"] and after["lm"] < before["lm"]
    trainable = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    _, again = _fit(new_tiny_model(), tokenizer, [EXAMPLE], obj, TrainSettings(**{**settings.__dict__, "max_steps": 2}))
    assert [r["loss"] for r in again] == losses[:2]                         # fixed seed: identical run


def test_objectives_accumulation_and_full_finetuning(tokenizer, new_tiny_model):
    ex2 = RankExample("q", ["a b", "c d", "e f"], [3, 1, 2])
    for obj, settings in ((RankObjective(objective="lm"), TrainSettings(max_steps=1, lr=1e-3, lora=LoraSettings())),
                          (RankObjective(objective="rank", rank_loss="lambdarank"),
                           TrainSettings(max_steps=1, lr=1e-3, lora=LoraSettings())),
                          (RankObjective(rank_loss="listnet"),
                           TrainSettings(max_steps=1, batch_size=2, grad_accum=2, lr=1e-3))):
        settings = TrainSettings(**{**settings.__dict__, "progress": False})
        _, rows = _fit(new_tiny_model(), tokenizer, [EXAMPLE, ex2], obj, settings)
        assert len(rows) == 1
        row = rows[0]
        if obj.objective == "lm":
            assert row["rank"] == 0.0 and row["loss"] == pytest.approx(row["lm"])
        elif obj.objective == "rank":
            assert row["lm"] == 0.0 and row["loss"] == pytest.approx(row["rank"])
        else:
            assert row["loss"] == pytest.approx(row["lm"] + 0.1 * row["rank"], rel=1e-5)
