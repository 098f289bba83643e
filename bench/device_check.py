"""Every paper's CUDA path on random-init paper-shaped models, one JSON line at the end (run by bench/device_check.sh).

    PYTHONPATH=src python3 bench/device_check.py [--dry] [--out outputs/bench/device_check.json]

For a GPU machine that has its own python3 with torch, transformers, peft and accelerate and no package registry:
``lab`` runs from ``src/`` and, on this path, imports nothing beyond those four and the standard library (checked
by tests/unit/scaleout/test_device_check.py). Sections (each timed with CUDA synchronisation, median of repeats
after a warm-up; one failing section is reported and the others still run):

* ``env``: torch / transformers versions, device, bf16 support, memory;
* ``first``: zephyr-7b-beta's shape (Mistral-7B: 32 x 4096, GQA 32/8, MLP 14336; lab.models.random_init's
  ``mistral-7b``), random-init in bf16, through HF: one window prompt (2,048 tokens, ~20 passages of 100 words),
  FIRST's single-token pass (logits at the last position) vs generation of the 100-token permutation
  (``[3] > [1] > ...``, greedy, KV cache), and their ratio;
* ``nanovdr``: the student (DistilBERT-base, mean pooling, linear 768 -> 2048) per-query latency and batch-512
  throughput; the 2B-class teacher (transformers' Qwen3VLModel with Qwen3-VL-2B's config, bf16) on text queries
  and on one 1024 x 768 page (768 merged visual tokens) at batch 8;
* ``train``: bf16 autocast over fp32 master weights through the one trainer (lab.train.fit): NanoVDR student
  cosine distillation at batch 512, and FIRST-style full fine-tuning (LM loss, gradient checkpointing) of a
  zephyr-width 4-layer Mistral at 2,048 tokens; masters stay fp32, the loss is finite, the weights move.

* ``specontext``: SpeContext's decode path on a random-init Llama-3.1-8B-shaped target (32 x 4096, GQA 32/8, MLP
  14336, vocab 128256) in bf16 with a Llama-3.2-1B-shaped DLM's retrieval head (heads 0 and 3 of its layer 2: the pruned
  head keeps 2 of its 16 layers), at 32k context, batch 8, budget 2048 (sinks 4, window 128), K/V random (speed
  depends on shapes only): decode tokens/s and peak GB of full KV (static cache), SpeContext with elastic loading
  (device KV; rows copied vs a full gather), SpeContext with the full KV in pinned host memory (side-stream
  prefetch) and HF's ``DynamicCache(offloading=True)``; the memory model's placement and crossover length.

``--dry``: the same code on tiny shapes on the CPU (tests); without ``--dry`` and without CUDA it stops at once
with ``{"ok": false, "error": "no CUDA device ..."}`` and exit code 3.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

REQUIRED = ("torch", "transformers", "accelerate", "peft")
HERE = Path(__file__).resolve().parent


def missing_modules(names=REQUIRED) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


class Timer:
    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.type == "cuda"

    def __call__(self, fn, repeats: int = 3, warmup: int = 1) -> float:
        """Median milliseconds of ``fn()``."""
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(repeats):
            if self.cuda:
                self.torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if self.cuda:
                self.torch.cuda.synchronize()
            out.append(1000 * (time.perf_counter() - t0))
        return statistics.median(out)


def shapes(dry: bool) -> dict:
    from lab.models.random_init import SPECS

    mistral = dict(SPECS["mistral-7b"][1])
    if dry:
        mistral.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=128, sliding_window=None)
    sys.path.insert(0, str(HERE))
    import nanovdr_latency as nl          # the Qwen3-VL-2B-class config the CPU bench uses
    import specontext_device as sd        # the Llama-3.1-8B / Llama-3.2-1B shapes

    return {"mistral": {**mistral, "vocab_size": 1000 if dry else 32000},
            "first_prompt": 48 if dry else 2048, "first_gen": 6 if dry else 100,
            "qwen_text": nl.QWEN3VL_TINY_TEXT if dry else nl.QWEN3VL_2B_TEXT,
            "qwen_vision": nl.QWEN3VL_TINY_VISION if dry else nl.QWEN3VL_2B_VISION,
            "page_hw": (64, 64) if dry else (1024, 768), "page_batch": 2 if dry else 8,
            "distilbert": dict(dim=64, n_layers=2, n_heads=4, hidden_dim=256) if dry else
            dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072),
            "teacher_dim": 64 if dry else 2048, "student_batch": 8 if dry else 512, "query_tokens": 24,
            "train_steps": 3, "lm_layers": 2 if dry else 4, "lm_tokens": 32 if dry else 2048,
            "llama8b": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=128, vocab_size=1000) if dry else sd.LLAMA31_8B,
            "llama1b": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=128, vocab_size=1000, tie_word_embeddings=True) if dry else sd.LLAMA32_1B,
            "spec_context": 256 if dry else 32768, "spec_batch": 2 if dry else 8, "spec_budget": 32 if dry else 2048,
            "spec_window": 8 if dry else 128, "spec_steps": 3 if dry else 8, "spec_offloaded_steps": 2 if dry else 3}


def section_env(torch, device) -> dict:
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "device": str(device),
           "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported(), devices=torch.cuda.device_count())
    return out


def section_first(torch, device, s, timer) -> dict:
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(**s["mistral"])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = MistralForCausalLM(cfg).to(torch.bfloat16).eval()
    built = time.perf_counter() - t0
    ids = torch.randint(10, cfg.vocab_size, (1, s["first_prompt"]), device=device)          # [1, L]
    gen = s["first_gen"]

    @torch.inference_mode()
    def single():
        return model(input_ids=ids, logits_to_keep=1).logits[:, -1]                          # [1, V]

    @torch.inference_mode()
    def generate():
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=gen,
                              min_new_tokens=gen, do_sample=False, pad_token_id=0)

    assert single().shape == (1, cfg.vocab_size)
    ms_single, ms_gen = timer(single), timer(generate, repeats=2)
    out = {"params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 2), "build_s": round(built, 1),
           "prompt_tokens": s["first_prompt"], "generated_tokens": gen, "single_token_ms": round(ms_single, 2),
           "generation_ms": round(ms_gen, 2), "generation_over_single": round(ms_gen / ms_single, 2)}
    if device.type == "cuda":
        out["peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    del model
    return out


def _student(torch, s):
    from transformers import DistilBertConfig, DistilBertModel

    class Student(torch.nn.Module):          # NanoVDR-S: DistilBERT, mean pooling, one linear map, unit vectors
        def __init__(self):
            super().__init__()
            self.backbone = DistilBertModel(DistilBertConfig(vocab_size=30522, **s["distilbert"]))
            self.proj = torch.nn.Linear(s["distilbert"]["dim"], s["teacher_dim"])

        def forward(self, input_ids, attention_mask):
            h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state   # [B, T, H]
            m = attention_mask.unsqueeze(-1).to(h.dtype)                                            # [B, T, 1]
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)                                          # [B, H]
            return torch.nn.functional.normalize(self.proj(pooled), dim=-1)                          # [B, D]

    torch.manual_seed(0)
    return Student()


def section_nanovdr(torch, device, s, timer) -> dict:
    from transformers import Qwen3VLConfig, Qwen3VLModel

    student = _student(torch, s).to(device).eval()
    T = s["query_tokens"]
    one = torch.randint(1000, 30000, (1, T), device=device)
    many = torch.randint(1000, 30000, (s["student_batch"], T), device=device)
    with torch.inference_mode():
        ms_one = timer(lambda: student(one, torch.ones_like(one)))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            ms_many = timer(lambda: student(many, torch.ones_like(many)))
    vocab = s["qwen_text"]["vocab_size"]
    special = {} if vocab > 151656 else {       # the tiny vocabulary: the vision tokens are its last four ids
        "image_token_id": vocab - 3, "video_token_id": vocab - 4, "vision_start_token_id": vocab - 2,
        "vision_end_token_id": vocab - 1}
    cfg = Qwen3VLConfig(text_config=s["qwen_text"], vision_config=s["qwen_vision"], **special)
    torch.manual_seed(0)
    with torch.device(device):
        teacher = Qwen3VLModel(cfg).to(torch.bfloat16).eval()
    vc = cfg.vision_config
    h, w = s["page_hw"]
    gh, gw = h // vc.patch_size, w // vc.patch_size
    merged = gh * gw // vc.spatial_merge_size ** 2
    b = s["page_batch"]
    text = torch.randint(10, 1000, (b, 12), device=device)
    pad = torch.full((b, merged), cfg.image_token_id, device=device)
    page_ids = torch.cat([text[:, :6], pad, text[:, 6:]], dim=1)                              # [b, 12 + merged]
    pixels = torch.randn(b * gh * gw, 3 * vc.temporal_patch_size * vc.patch_size ** 2, device=device,
                         dtype=torch.bfloat16)                                                # [b*patches, C*t*p*p]
    grid = torch.tensor([[1, gh, gw]] * b, device=device)
    mm = (page_ids == cfg.image_token_id).long()                 # 1 on the visual tokens (M-RoPE positions)
    q_ids = torch.randint(10, 1000, (1, 40), device=device)      # chat-formatted query with the instruction

    @torch.inference_mode()
    def pages():
        return teacher(input_ids=page_ids, attention_mask=torch.ones_like(page_ids), pixel_values=pixels,
                       image_grid_thw=grid, mm_token_type_ids=mm).last_hidden_state[:, -1]

    @torch.inference_mode()
    def query():
        return teacher(input_ids=q_ids, attention_mask=torch.ones_like(q_ids)).last_hidden_state[:, -1]

    assert pages().shape == (b, cfg.text_config.hidden_size)
    ms_pages, ms_query = timer(pages, repeats=2), timer(query)
    return {"student_params_m": round(sum(p.numel() for p in student.parameters()) / 1e6, 1),
            "student_ms_per_query": round(ms_one, 2),
            "student_queries_per_s_batch": round(s["student_batch"] / (ms_many / 1000), 1),
            "teacher_params_b": round(sum(p.numel() for p in teacher.parameters()) / 1e9, 2),
            "teacher_ms_per_query": round(ms_query, 2), "teacher_visual_tokens_per_page": merged,
            "teacher_pages_per_s": round(b / (ms_pages / 1000), 2),
            "teacher_over_student_query": round(ms_query / ms_one, 1)}


def _fit_check(torch, model, data, collate, loss_fn, steps, batch, **kw) -> dict:
    from lab.train import TrainSettings, fit

    before = {k: v.detach().float().clone() for k, v in model.named_parameters() if v.requires_grad}
    t0 = time.perf_counter()
    res = fit(model, data, collate, loss_fn, TrainSettings(max_steps=steps, batch_size=batch, lr=1e-4,
                                                           mixed_precision="bf16", progress=False, seed=0, **kw))
    seconds = time.perf_counter() - t0
    losses = [r["loss"] for r in res.records()]
    after = dict(res.model.named_parameters())
    moved = sum(bool((after[k].detach().float() - v).abs().max() > 0) for k, v in before.items()) / len(before)
    dtypes = sorted({str(p.dtype) for p in res.model.parameters()})
    ok = all(map(lambda x: x == x and abs(x) < 1e30, losses)) and dtypes == ["torch.float32"] and moved > 0.5
    return {"ok": ok, "steps": len(losses), "loss_first": losses[0], "loss_last": losses[-1],
            "master_dtypes": dtypes, "params_moved": round(moved, 3), "s_per_step": round(seconds / steps, 3)}


def section_train(torch, device, s) -> dict:
    from transformers import MistralConfig, MistralForCausalLM

    from lab.losses.distill import cosine_alignment

    out = {}
    n, T = s["student_batch"] * s["train_steps"], s["query_tokens"]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (n, T), generator=g)
    targets = torch.nn.functional.normalize(torch.randn(n, s["teacher_dim"], generator=g), dim=-1)
    data = list(range(n))

    def collate(idx):
        i = torch.tensor(idx)
        return {"input_ids": ids[i], "attention_mask": torch.ones_like(ids[i]), "t": targets[i]}

    out["nanovdr_student_bf16"] = _fit_check(
        torch, _student(torch, s), data, collate,
        lambda m, b: cosine_alignment(m(b["input_ids"], b["attention_mask"]), b["t"]),
        s["train_steps"], s["student_batch"])
    cfg = MistralConfig(**{**s["mistral"], "num_hidden_layers": s["lm_layers"]})
    torch.manual_seed(0)
    lm = MistralForCausalLM(cfg)
    seqs = torch.randint(10, cfg.vocab_size, (4, s["lm_tokens"]), generator=g)

    def lm_loss(m, b):
        return m(input_ids=b["input_ids"], labels=b["input_ids"]).loss

    out["first_full_finetune_bf16"] = _fit_check(
        torch, lm, list(range(4)), lambda idx: {"input_ids": seqs[torch.tensor(idx)]}, lm_loss, s["train_steps"], 1,
        gradient_checkpointing=True)
    out["first_full_finetune_bf16"]["params_b"] = round(sum(p.numel() for p in lm.parameters()) / 1e9, 2)
    if device.type == "cuda":
        out["peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    return out


def _specontext(torch, device, s) -> dict:
    import specontext_device            # bench/ is on sys.path (shapes())

    return specontext_device.section_specontext(torch, device, s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="tiny shapes on the CPU (tests)")
    ap.add_argument("--out", default=os.path.join("outputs", "bench", "device_check.json"))
    ap.add_argument("--only", default="", help="comma-separated sections (env,first,nanovdr,train,specontext)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result: dict = {"ok": False, "dry": args.dry, "sections": {}}

    def finish(code: int) -> int:
        result["seconds"] = round(time.perf_counter() - t0, 1)
        line = json.dumps(result, sort_keys=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(line + "\n")
        print(line, flush=True)
        return code

    lacking = missing_modules(REQUIRED)
    if lacking:
        result["error"] = f"missing python modules: {', '.join(lacking)} (this check needs {', '.join(REQUIRED)})"
        return finish(2)
    import torch

    if not args.dry and not torch.cuda.is_available():
        result["error"] = (f"no CUDA device (torch {torch.__version__}, torch.version.cuda={torch.version.cuda}, "
                           f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); --dry runs the CPU path")
        return finish(3)
    torch.set_num_threads(1 if args.dry else torch.get_num_threads())
    device = torch.device("cpu" if args.dry else "cuda")
    s, timer = shapes(args.dry), Timer(torch, device)
    runs = {"env": lambda: section_env(torch, device), "first": lambda: section_first(torch, device, s, timer),
            "nanovdr": lambda: section_nanovdr(torch, device, s, timer), "train": lambda: section_train(torch, device, s),
            "specontext": lambda: _specontext(torch, device, s)}
    wanted = [x for x in args.only.split(",") if x] or list(runs)
    for name in wanted:
        t1 = time.perf_counter()
        try:
            result["sections"][name] = {**runs[name](), "seconds": round(time.perf_counter() - t1, 1)}
        except Exception as e:           # report and go on: one broken path must not hide the others
            result["sections"][name] = {"error": f"{type(e).__name__}: {e}",
                                        "trace": traceback.format_exc(limit=4)[-1500:]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    train = result["sections"].get("train", {})
    spec = result["sections"].get("specontext", {})
    result["ok"] = (all("error" not in v for v in result["sections"].values())
                    and all(v.get("ok", True) for v in train.values() if isinstance(v, dict))
                    and all("error" not in v for v in spec.values() if isinstance(v, dict)))
    return finish(0 if result["ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
