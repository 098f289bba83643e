"""lab.train: resume equals uninterrupted, fp32 master weights under autocast, LoRA vs full fine-tuning,
schedulers, accumulation, checkpoint guards, tracking."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lab.train import LoraSettings, TrainSettings, fit
from lab.train.trainer import MARKER, complete_checkpoints


def _data(n: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)                      # [n, 8]
    y = x @ torch.randn(8, 1, generator=g)                  # [n, 1]
    return [{"x": x[i], "y": y[i]} for i in range(n)]


def _collate(items):
    return {"x": torch.stack([d["x"] for d in items]), "y": torch.stack([d["y"] for d in items])}


def _mse(model, batch):
    loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return {"loss": loss, "half": loss / 2}


def _mlp(seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    # dropout: resuming must also restore the RNG stream, not only weights and optimizer
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)).to(dtype)


SETTINGS = TrainSettings(epochs=2, batch_size=4, lr=1e-2, scheduler="cosine", warmup_steps=2, save_every=2,
                         progress=False, seed=3)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    full = fit(_mlp(), _data(), _collate, _mse, SETTINGS, checkpoint_dir=tmp_path / "a", fingerprint="f")
    part = fit(_mlp(), _data(), _collate, _mse, SETTINGS, checkpoint_dir=tmp_path / "b", fingerprint="f",
               stop_after=5)
    assert [c.name for c in complete_checkpoints(tmp_path / "b", "f")][-1] == "checkpoint-5"
    resumed = fit(_mlp(), _data(), _collate, _mse, SETTINGS, checkpoint_dir=tmp_path / "b", fingerprint="f")
    assert resumed.resumed_from == 5 and part.resumed_from == 0
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda r: [x["loss"] for x in r.records()]                      # noqa: E731
    assert losses(part) + losses(resumed)[5:] == losses(full)                # resumed history keeps steps 1-5
    assert len(losses(full)) == 12                                           # 2 epochs x 24/4


def test_other_fingerprint_or_incomplete_checkpoint_starts_over(tmp_path):
    fit(_mlp(), _data(), _collate, _mse, SETTINGS, checkpoint_dir=tmp_path, fingerprint="old", stop_after=4)
    (tmp_path / "checkpoint-99").mkdir()                                     # killed mid-write: no marker
    fresh = fit(_mlp(), _data(), _collate, _mse, SETTINGS, checkpoint_dir=tmp_path, fingerprint="new")
    assert fresh.resumed_from == 0
    names = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert "checkpoint-99" not in names and names                            # foreign + incomplete removed
    for folder in tmp_path.glob("checkpoint-*"):
        assert json.loads((folder / MARKER).read_text())["fingerprint"] == "new"


def test_accumulation_matches_the_larger_batch(tmp_path):
    big = fit(_mlp(), _data(), _collate, _mse, TrainSettings(epochs=1, batch_size=8, lr=1e-2, progress=False,
                                                            shuffle=False))
    acc = fit(_mlp(), _data(), _collate, _mse, TrainSettings(epochs=1, batch_size=4, grad_accum=2, lr=1e-2,
                                                            progress=False, shuffle=False))
    big.model.eval(), acc.model.eval()            # dropout differs per micro-batch; compare without it
    a, b = _weights(big.model), _weights(acc.model)
    for k in a:                                   # same mean gradient (equal micro-batches), up to fp32 sums
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    assert [round(r["loss"], 4) for r in big.records()] == [round(r["loss"], 4) for r in acc.records()]


def test_bf16_autocast_keeps_fp32_master_weights():
    seen, inner = [], []

    def loss_fn(model, batch):
        out = model(batch["x"])
        seen.append((torch.is_autocast_enabled("cpu"), inner[-1], {p.dtype for p in model.parameters()}))
        return torch.nn.functional.mse_loss(out.float(), batch["y"])

    model = _mlp(dtype=torch.bfloat16)                    # loaded in bf16, as the paper profile loads zephyr
    model[0].register_forward_hook(lambda mod, args, out: inner.append(out.dtype))
    before = _weights(model)
    res = fit(model, _data(), _collate, loss_fn, TrainSettings(epochs=1, batch_size=4, lr=1e-4,
                                                              mixed_precision="bf16", progress=False))
    assert seen and all(on for on, _, _ in seen)                                 # autocast was on
    assert all(dt == torch.bfloat16 for _, dt, _ in seen)                        # matmuls ran in bf16
    assert all(dtypes == {torch.float32} for _, _, dtypes in seen)               # master weights fp32
    after = _weights(res.model)
    # lr 1e-4 on bf16 weights would round most updates away; fp32 masters keep them
    changed = sum(int((after[k] != before[k].float()).sum()) for k in after)
    assert changed > 0.9 * sum(v.numel() for v in after.values())


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def _lm_data(n=8):
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 64, (12,), generator=g)} for _ in range(n)]


def _lm_collate(items):
    ids = torch.stack([d["input_ids"] for d in items])
    return {"input_ids": ids, "labels": ids}


def _lm_loss(model, batch):
    return model(**batch).loss


def test_lora_changes_only_the_adapters_of_the_top_layers():
    base = _tiny_llama()
    before = _weights(base)
    lora = LoraSettings(r=4, alpha=8, targets=("q_proj", "v_proj"), top_layers=2)
    res = fit(base, _lm_data(), _lm_collate, _lm_loss,
              TrainSettings(epochs=2, batch_size=2, lr=1e-2, lora=lora, progress=False))
    state = {k.replace("base_model.model.", ""): v for k, v in res.model.state_dict().items()}
    lora_keys = [k for k in state if "lora_" in k]
    assert lora_keys and all(".layers.1." in k or ".layers.2." in k for k in lora_keys)   # top 2 of 3
    assert any(not torch.equal(state[k], torch.zeros_like(state[k])) for k in lora_keys if "lora_B" in k)
    for k, v in before.items():                                            # base weights untouched
        key = k.replace(".weight", ".base_layer.weight") if k.replace(".weight", ".base_layer.weight") in state else k
        assert torch.equal(state[key], v), k


def test_full_finetuning_changes_every_trainable_weight_and_no_frozen_one():
    model = _tiny_llama()
    model.model.embed_tokens.weight.requires_grad_(False)                  # frozen on purpose
    before = _weights(model)
    res = fit(model, _lm_data(), _lm_collate, _lm_loss, TrainSettings(epochs=1, batch_size=2, lr=1e-2,
                                                                      progress=False))
    after = dict(res.model.named_parameters())
    for name, p in after.items():
        same = torch.equal(p.detach(), before[name])
        assert same == (name == "model.embed_tokens.weight"), name


def test_schedulers_follow_their_formulas():
    n, steps = 40, 10
    cos = fit(_mlp(), _data(n), _collate, _mse, TrainSettings(epochs=1, batch_size=4, lr=0.1, scheduler="cosine",
                                                               warmup_steps=2, progress=False))
    got = [r["learning_rate"] for r in cos.records()]
    # HF's get_cosine_schedule_with_warmup: lr * s/w during warm-up, then half a cosine to 0
    want = [0.1 * (s / 2 if s < 2 else 0.5 * (1 + math.cos(math.pi * (s - 2) / (steps - 2)))) for s in range(steps)]
    assert got == pytest.approx(want, abs=1e-9)
    one = fit(_mlp(), _data(n), _collate, _mse, TrainSettings(epochs=1, batch_size=4, lr=0.1, warmup_ratio=0.3,
                                                               scheduler="onecycle_cosine", progress=False))
    opt = torch.optim.AdamW(_mlp().parameters(), lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.3, anneal_strategy="cos")
    want = []
    for _ in range(steps):
        want.append(opt.param_groups[0]["lr"])
        opt.step(), ref.step()
    assert [r["learning_rate"] for r in one.records()] == pytest.approx(want, rel=1e-9)


def test_parts_are_averaged_like_the_loss_and_logged_to_the_stage_run():
    class Run:
        def __init__(self):
            self.calls = []

        def log_metrics(self, metrics, step=None):
            self.calls.append((step, metrics))

    run = Run()
    res = fit(_mlp(), _data(), _collate, _mse, TrainSettings(epochs=1, batch_size=4, grad_accum=2, lr=1e-2,
                                                            progress=False), run=run, log_prefix="curve.x")
    for r in res.records():
        assert r["half"] == pytest.approx(r["loss"] / 2, rel=1e-5)
    steps = [s for s, m in run.calls if "loss" in m["curve.x"]]
    assert steps == [1, 2, 3]


def test_evaluator_selects_the_best_epoch(tmp_path):
    calls = []

    def evaluator(model):
        calls.append(1)
        return {"score": [0.2, 0.9, 0.1][len(calls) - 1]}           # epoch 2 is best

    res = fit(_mlp(), _data(), _collate, _mse,
              TrainSettings(epochs=3, batch_size=8, lr=1e-2, evaluate=True, best_metric="score", progress=False),
              checkpoint_dir=tmp_path, fingerprint="e", evaluator=evaluator)
    assert len(calls) == 3 and res.best_step == 6 and res.best_metric == pytest.approx(0.9)
    best = (tmp_path / "checkpoint-6" / "model.safetensors")
    from safetensors.torch import load_file

    kept = load_file(str(best))
    assert all(torch.equal(kept[k], v) for k, v in res.model.state_dict().items())   # best epoch's weights


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="scheduler"):
        TrainSettings(scheduler="warmup")
    with pytest.raises(ValueError, match="best_metric"):
        TrainSettings(best_metric="x")
    with pytest.raises(ValueError, match="no training examples"):
        fit(_mlp(), [], _collate, _mse, SETTINGS)
