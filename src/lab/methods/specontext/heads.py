"""Stage specontext_heads: rank each DLM's heads on calibration text, keep the best, report parameter reduction.

*(our design)* Calibration: ``specontext.heads.sequences`` sequences of ``length`` tokens of the distillation
dataset's text, taken after the distillation sequences; queries = the last ``rows`` positions; score = target mass
captured by the head's top-``budget`` middle keys (:func:`lab.kv.retrieval_head.rank_heads`).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["rank", "reduction_table", "build_selector"]


def rank(dlm, target, calib, cfg) -> pd.DataFrame:
    """One row per DLM head: ``dlm_layer``, ``target_layer``, ``head``, ``capture`` (best first)."""
    from lab.kv.retrieval_head import rank_heads

    h, s = cfg.heads, cfg.selection
    scores = rank_heads(dlm, target, [calib[i:i + 1] for i in range(len(calib))], rows=h.rows, budget=h.budget,
                        sinks=s.sinks, window=s.window)                                # (layers, H)
    layers = list(cfg.dlm.layers)
    rows = [{"dlm_layer": li, "target_layer": layers[li], "head": hi, "capture": float(scores[li, hi])}
            for li in range(scores.shape[0]) for hi in range(scores.shape[1])]
    return pd.DataFrame(rows).sort_values(["capture", "dlm_layer", "head"], ascending=[False, True, True],
                                          ignore_index=True)


def kept(table: pd.DataFrame, n: int) -> list[tuple[int, int]]:
    return [(int(r.dlm_layer), int(r.head)) for r in table.head(n).itertuples()]


def reduction_table(target, dlms: dict, heads: dict) -> pd.DataFrame:
    """Parameters of the target, each DLM and its pruned head, with and without the embedding."""
    from lab.kv.retrieval_head import RetrievalHead, param_counts

    rows = [{"model": "target", **param_counts(target, target.model.embed_tokens)}]
    for name, dlm in dlms.items():
        d = param_counts(dlm, dlm.model.embed_tokens)
        head = RetrievalHead(dlm, heads[name])
        p = param_counts(head, head.embed)
        rows.append({"model": f"dlm_{name}", **d})
        rows.append({"model": f"head_{name}", **p,
                     "reduction_vs_dlm_with_embedding": 1 - p["with_embedding"] / d["with_embedding"],
                     "reduction_vs_dlm_without_embedding": 1 - p["without_embedding"] / d["without_embedding"]})
    return pd.DataFrame(rows)


def build_selector(dlm, heads, name: str):
    from lab.kv.retrieval_head import HeadSelector, RetrievalHead

    return HeadSelector(RetrievalHead(dlm, heads).eval(), name=name)
