"""Stage specontext_eval: fidelity of every selector vs full KV at equal budget, and needle accuracy.

Per haystack: the prompt is prefilled **once** with full KV (H2O's and SnapKV's prefill statistics and the
retrieval heads' own caches filled in the same pass over the prompt), then each method decodes from its own copy
of that cache: teacher-forced over the full-KV greedy continuation (top-1 agreement, KL(full || method), attention
mass recall, recall of the global oracle's set, changed-set fraction and the bytes it implies).
"""

from __future__ import annotations

import copy

import pandas as pd
import torch
import torch.nn.functional as F

from lab.kv import baselines, memory, selective

__all__ = ["make_selectors", "fidelity", "needle_eval"]

PREFILLED = ("h2o", "snapkv")          # selectors whose state comes from the shared prefill


def make_selectors(cfg, methods, heads: dict, n_layers: int) -> dict:
    """Fresh selector objects by method name; ``heads``: {"specontext": HeadSelector, ...}."""
    s = cfg.selection
    make = {
        "streamingllm": baselines.StreamingLLM, "random": lambda: baselines.RandomSelector(s.seed),
        "oracle_global": baselines.GlobalOracle, "oracle_layer": baselines.LayerOracle,
        "gemfilter": lambda: baselines.GemFilterLike(min(s.gemfilter_layer, n_layers - 1)),
        "quest": lambda: baselines.Quest(s.quest_page, s.quest_dense_layers),
        "h2o": lambda: baselines.H2O(s.window),
        "snapkv": lambda: baselines.SnapKV(s.snapkv_obs_window, s.snapkv_kernel, s.snapkv_pooling, s.window)}
    return {m: heads[m] if m in heads else make[m]() for m in methods}


def _prefill(target, prompt, selectors):
    """One full-KV prefill for every method; retrieval heads run over the prompt too."""
    hooked = [sel for m, sel in selectors.items() if m in PREFILLED]
    cache, last = selective.prefill(target, prompt, hook=baselines.combined_prefill_hook(hooked) if hooked else None)
    for sel in selectors.values():
        if hasattr(sel, "prefill"):
            sel.prefill(prompt)
    return cache, last


def _bytes_per_token_layer(target) -> int:
    c = target.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return memory.kv_bytes_per_token(1, c.num_key_value_heads, head_dim, 2)           # one layer, bf16


def fidelity(target, prompt: torch.Tensor, selectors: dict, budgets, cfg, continuation: int, progress=True):
    """Rows (method, budget, metric...) for one haystack ``prompt`` (1, L)."""
    s = cfg.selection
    cache, last = _prefill(target, prompt, selectors)
    first = last.argmax(-1, keepdim=True)                                                # (1, 1)
    tokens = torch.cat([first, torch.zeros(1, continuation - 1, dtype=torch.long)], dim=1)
    ref, fed, _ = selective.decode(target, selective.copy_cache(cache), tokens, None, budget=1,
                                   greedy_after=1, progress=progress, desc="full KV")    # (1, T, V)
    ref_logp = F.log_softmax(ref, -1)
    per_tok = _bytes_per_token_layer(target)
    rows = []
    for budget in budgets:
        for method, proto in selectors.items():
            sel = copy.deepcopy(proto)
            out, _, ctl = selective.decode(target, selective.copy_cache(cache), fed, sel, budget=budget,
                                           sinks=s.sinks, window=s.window, measure=True, progress=progress,
                                           desc=f"{method} B={budget}")
            logp = F.log_softmax(out, -1)
            kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)                             # (1, T)
            m = ctl.metrics
            changed = sum(m.changed) / max(1, len(m.changed))
            moved = sum(m.changed_tokens) / max(1, len(m.changed_tokens))
            rows.append({"method": method, "budget": budget, "context": prompt.shape[1],
                         "agreement": float((out.argmax(-1) == ref.argmax(-1)).float().mean()),
                         "kl": float(kl.mean()), "mass_recall": sum(m.mass_recall) / len(m.mass_recall),
                         "oracle_recall": sum(m.oracle_recall) / len(m.oracle_recall),
                         "changed_fraction": changed, "changed_bytes_per_step": moved * per_tok,
                         "full_bytes_per_step": budget * ctl.layers * per_tok,
                         "select_calls_per_step": ctl.select_calls / ctl.steps,
                         "layer_calls_per_step": ctl.layer_calls / ctl.steps})
    return rows


def needle_eval(target, tokenizer, texts, selectors: dict, budgets, cfg, context: int, seed: int, progress=True):
    """Rows (task, depth, method, budget, score) for every needle at ``context``; ``full`` first.

    A needle full KV does not solve is scored for no method (:func:`needle_summary`), so by default its methods are
    not decoded at all (``eval.needles_unsolved: false``): full KV solved 6 of the 12 smoke needles, so this halves
    the needle decodes (each ~40 steps x 10 methods). ``needles_unsolved: true`` decodes them anyway."""
    from lab.methods.specontext import needles as N

    e, s = cfg.eval, cfg.selection
    rows = []
    for task in e.needle_tasks:
        for depth in e.needle_depths:
            nd = N.make(task, depth, seed)
            q_ids = tokenizer(" " + nd.question, add_special_tokens=False)["input_ids"]
            hay = N.haystack_ids(tokenizer, texts, context if e.question_decoded else context - len(q_ids), nd)
            if e.question_decoded:                     # the question is decoded under selection
                prompt_ids, fed_q = hay, q_ids
            else:                                      # prefilled in full; only its last token is decoded
                prompt_ids, fed_q = hay + q_ids[:-1], q_ids[-1:]
            prompt = torch.tensor([prompt_ids])
            tokens = torch.tensor([fed_q + [0] * e.answer_tokens])
            n = len(fed_q)
            cache, _ = _prefill(target, prompt, selectors)
            runs = [("full", None, 0)] + [(m, sel, b) for b in budgets for m, sel in selectors.items()]
            for method, proto, budget in runs:
                out, _, _ = selective.decode(target, selective.copy_cache(cache), tokens,
                                             copy.deepcopy(proto), budget=max(budget, 1), sinks=s.sinks,
                                             window=s.window, greedy_after=n, progress=False)
                answer = tokenizer.decode(out[0, n - 1:].argmax(-1).tolist())
                rows.append({"task": task, "depth": depth, "context": context, "method": method,
                             "budget": budget, "score": N.score(answer, nd), "answer": answer})
                if method == "full" and rows[-1]["score"] < 1.0 and not e.needles_unsolved:
                    break          # scored only where full KV succeeds: the methods' runs would not count
    return rows


def needle_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per method and budget: accuracy over the needles full KV solved (score 1), and how many those are."""
    full = df[df.method == "full"].set_index(["task", "depth", "context"])["score"]
    solved = full[full >= 1.0].index
    keyed = df.set_index(["task", "depth", "context"])
    kept = keyed[keyed.index.isin(solved) & (keyed.method != "full")].reset_index()
    out = kept.groupby(["method", "budget"], as_index=False)["score"].mean().rename(columns={"score": "accuracy"})
    out["scored_needles"] = len(solved)
    out["full_success_rate"] = float((full >= 1.0).mean()) if len(full) else float("nan")
    return out
