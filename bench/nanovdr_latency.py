"""NanoVDR query-encoding latency on ONE CPU thread, tokenisation included, side by side in one process.

    python bench/nanovdr_latency.py [--profile smoke] [--student outputs/nanovdr_distill/students/cosine.safetensors]
                                    [--queries 20] [--vlm-queries 5] [--skip-vlm]

DVC stage ``bench_nanovdr`` runs it after ``nanovdr_distill``, so ``make repro`` measures it; the ``tiny``
profile swaps every model for a random-init tiny one of the same kind (3 queries: a check that the bench runs,
not a timing).

Models (batch of one query, ``torch.set_num_threads(1)``, float32, median over DL19 queries after warm-up):

* student: paraphrase-MiniLM-L3-v2 + MLP projector (the smoke student; a trained one with ``--student``);
* the paper's student architecture, random-init: DistilBERT-base (66M) + MLP 768 -> 768 -> 2048 (NanoVDR-S);
* smoke teacher: all-mpnet-base-v2 (query side);
* a *random-init* model of the paper teacher's architecture: ``Qwen3VLModel`` (transformers) with a
  Qwen3-VL-2B-class config (text 28 layers x 2048, GQA 16/8 heads, MLP 6144, vocab 151,936; vision
  tower 24 x 1024), ~2.1B parameters. Only its text-only query path runs (no image: queries have none),
  exactly what the paper's teacher pays per query. Its input is the chat-formatted query with the
  NanoVDR instruction, tokenised with SmolLM2's ChatML BPE tokenizer (the Qwen tokenizer is not
  available offline; same scheme, similar lengths), last-token pooling. The config values are from
  memory of Qwen3-VL-2B-Instruct's config.json, not checked against the Hub here.

Also prints index bytes per page (fp16 vectors of the teacher's width). The student-vs-2B ratio is
printed last; everything is written to ``--out`` (default ``outputs/bench/nanovdr_latency.json``: ms per query,
ratios, bytes per page, the command) for ``experiments/nanovdr/expected.yaml``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import torch

QWEN3VL_2B_TEXT = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                       rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                        "mrope_interleaved": True})
QWEN3VL_TINY_TEXT = dict(QWEN3VL_2B_TEXT, vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3],
                                          "mrope_interleaved": True})
QWEN3VL_2B_VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                         patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                         deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304)
QWEN3VL_TINY_VISION = dict(QWEN3VL_2B_VISION, depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=64, deepstack_visual_indexes=[0], num_position_embeddings=64)
# the models per profile: (student base, paper-shaped student, smoke teacher); smoke/paper: the packaged models
MODELS = {"tiny": ("random:bert-tiny", "random:distilbert-tiny", "random:bert-tiny")}
SMOKE_MODELS = ("paraphrase-minilm-l3-v2", "random:distilbert-base", "all-mpnet-base-v2")
INSTRUCTION = "Find a document image that matches the given query."


def time_queries(encode, queries, warmup: int = 2) -> list[float]:
    for q in queries[:warmup]:
        encode(q)
    out = []
    for q in queries:
        t0 = time.perf_counter()
        encode(q)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default=None, help="default: params.yaml's; tiny swaps in random-init tiny models")
    ap.add_argument("--student", default=None, help="a trained student (.safetensors); default: fresh smoke student")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--vlm-queries", type=int, default=5)
    ap.add_argument("--skip-vlm", action="store_true")
    ap.add_argument("--out", default=os.path.join("outputs", "bench", "nanovdr_latency.json"))
    args = ap.parse_args(argv)
    import lab.config

    profile = args.profile or lab.config.active_profile()
    tiny = profile == "tiny"
    student_ref, paper_ref, teacher_ref = MODELS.get(profile, SMOKE_MODELS)
    if tiny:
        args.queries, args.vlm_queries = min(args.queries, 3), min(args.vlm_queries, 3)
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lab.data.trecdl import load_dataset
    from lab.paths import write_json
    from lab.retrieval import Encoder, bytes_per_page

    try:
        from lab.data.trecdl import load_materialised
        queries = [q.text for q in load_materialised("data", "trec-dl-2019", []).queries]
    except FileNotFoundError:
        queries = [q.text for q in load_dataset("trec-dl-2019", first_stages=[]).queries]
    rows, keyed = [], {}

    def bench(name, model, encode, n, key):
        params = sum(p.numel() for p in model.parameters())
        ms = time_queries(encode, queries[:n])
        rows.append((name, params, statistics.median(ms), n))
        keyed[key] = {"name": name, "params": params, "ms_per_query": statistics.median(ms), "queries": n}
        print(f"{name:58s} {params / 1e6:8.1f}M params  median {statistics.median(ms):9.1f} ms/query  (n={n})",
              flush=True)

    student = Encoder.load(args.student) if args.student else Encoder.from_ref(
        student_ref, out_dim=768, projector_hidden=768, max_length=32)
    with torch.inference_mode():
        bench("student paraphrase-MiniLM-L3-v2 + MLP 384-768-768", student,
              lambda q: student(**student.tokenize([q])), args.queries, "student")
        paper_student = Encoder.from_ref(paper_ref, out_dim=2048, projector_hidden=768, max_length=64)
        bench("paper student arch: DistilBERT-base + MLP 768-768-2048 (random)", paper_student,
              lambda q: paper_student(**paper_student.tokenize([q])), args.queries, "paper_student")
        teacher = Encoder.from_ref(teacher_ref, max_length=32)
        bench("smoke teacher all-mpnet-base-v2 (query side)", teacher, lambda q: teacher(**teacher.tokenize([q])),
              args.queries, "smoke_teacher")
        if not args.skip_vlm:
            from transformers import Qwen3VLConfig, Qwen3VLModel

            from lab.models import load_tokenizer
            from lab.retrieval.teachers import _pool_last

            cfg = Qwen3VLConfig(text_config=QWEN3VL_TINY_TEXT if tiny else QWEN3VL_2B_TEXT,
                                vision_config=QWEN3VL_TINY_VISION if tiny else QWEN3VL_2B_VISION)
            t0 = time.perf_counter()
            torch.manual_seed(0)
            vlm = Qwen3VLModel(cfg).eval()
            print(f"built random-init Qwen3-VL-2B-class model in {time.perf_counter() - t0:.0f} s", flush=True)
            tok = load_tokenizer("smollm2-135m-instruct")

            def vlm_encode(q):
                chat = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": q}]
                enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
                hidden = vlm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
                return torch.nn.functional.normalize(_pool_last(hidden, enc["attention_mask"]), dim=-1)

            bench("random-init Qwen3-VL-2B-class, text-only query path", vlm, vlm_encode, args.vlm_queries, "vlm_2b")
    print()
    print(f"index bytes per page (fp16): smoke teacher 768-d = {bytes_per_page(768)} B; "
          f"paper teacher 2048-d = {bytes_per_page(2048)} B")
    s_name, s_params, s_ms, _ = rows[0]
    for name, params, ms, _ in rows[2:-1]:
        print(f"student is {ms / s_ms:6.1f}x faster than {name} ({params / s_params:.1f}x the parameters)")
    if not args.skip_vlm:
        v_name, v_params, v_ms, _ = rows[-1]
        p_name, p_params, p_ms, _ = rows[1]
        print(f"paper student arch (DistilBERT + MLP) vs 2B-class: {v_ms / p_ms:6.1f}x faster "
              f"({p_ms:.1f} vs {v_ms:.1f} ms/query; paper: 51 ms vs ~2.5 s, 50x)")
        print(f"student vs 2B-class: {v_ms / s_ms:6.1f}x faster ({s_ms:.1f} vs {v_ms:.1f} ms/query, "
              f"{v_params / s_params:.0f}x the parameters)")
    ms = {k: v["ms_per_query"] for k, v in keyed.items()}
    ratios = {"smoke_teacher_over_student": ms["smoke_teacher"] / ms["student"]}
    if "vlm_2b" in ms:
        ratios.update(vlm_2b_over_paper_student=ms["vlm_2b"] / ms["paper_student"],
                      vlm_2b_over_student=ms["vlm_2b"] / ms["student"])
    write_json(args.out, {"profile": profile, "command": shlex.join(["python", "bench/nanovdr_latency.py", *sys.argv[1:]]),
                          "machine": platform.processor() or platform.machine(), "threads": 1, "models": keyed,
                          "ms_per_query": ms, "ratios": ratios,
                          "index_bytes_per_page_fp16": {"d768": bytes_per_page(768), "d2048": bytes_per_page(2048)}})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
