"""SpeContext's paper-profile data: LongBench and RULER from the Hugging Face Hub, decoded under every selector.

The paper evaluates on long-context benchmarks; which ones beyond its abstract's "long-context reasoning" is not
retrievable, so LongBench (Bai et al., ACL 2024, arXiv 2308.14508) and RULER (Hsieh et al., arXiv 2404.06654) are
*(our choice)*, in the exports kvpress 0.4.1's evaluation registry names (``evaluation/evaluate_registry.py``:
``simonjegou/ruler`` with one folder per context length, ``Xnhyacinth/LongBench`` with one folder per task), whose
rows hold ``context``, ``question``, ``answer_prefix``, ``answer`` (one string or a list), ``max_new_tokens`` and
``task``. Files resolve through :func:`lab.data.sources.hub_dataset_folder` (mirror ``hf-datasets/<repo>/``, then the
Hub, then its parquet-converter branch); without either the error names the set, the key and what was tried.

Scoring: RULER's ``string_match_all`` (the fraction of reference strings found in the output, case-insensitive;
RULER ``eval/synthetic/constants.py``); LongBench's ``qa_f1_score`` (token F1 after lower-casing and removing
punctuation and articles, the best over the references; LongBench ``metrics.py``).
"""

from __future__ import annotations

import copy
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPOS = {"ruler": "simonjegou/ruler", "longbench": "Xnhyacinth/LongBench"}
REQUIRED = ("context", "question", "answer")
PARQUET_BRANCH = "refs/convert/parquet"


@dataclass(frozen=True)
class LongSample:
    set: str                      # e.g. "ruler/4096"
    index: int
    task: str
    context: str
    question: str
    answer_prefix: str
    answers: tuple[str, ...]
    max_new_tokens: int


def _patterns(subset: str, split: str) -> list[str]:
    return [f"{subset}/{split}-*.parquet", f"{subset}/{split}/*.parquet", f"data/{subset}/{split}-*.parquet",
            f"{subset}/*.parquet"]


def _files(folder: Path, subset: str, split: str) -> list[Path]:
    for pattern in _patterns(subset, split):
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if files:
            return files
    return []


def load(name: str, samples: int = 0, *, split: str = "test", root=None) -> list[LongSample]:
    """Rows of benchmark set ``name`` (``ruler/4096``, ``longbench/hotpotqa``; ``specontext.bench.sets``), the first
    ``samples`` (0 = all). ``root``: a folder holding ``<owner>/<repo>/`` (tests, offline copies)."""
    import pyarrow.parquet as pq

    from lab.data.sources import hub_dataset_folder

    source, _, subset = name.partition("/")
    if source not in REPOS or not subset:
        raise ValueError(f"specontext.bench.sets: {name!r} is not <source>/<subset> with source in {list(REPOS)}")
    repo = REPOS[source]
    folder = hub_dataset_folder(repo, patterns=_patterns(subset, split),
                                has_files=lambda f: bool(_files(f, subset, split)),
                                what=f"SpeContext benchmark {name} (specontext.bench.sets, {repo} folder {subset})",
                                root=root, revisions=(None, PARQUET_BRANCH))
    out: list[LongSample] = []
    for path in _files(folder, subset, split):
        table = pq.read_table(path)
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} (columns: {sorted(table.column_names)}); "
                             f"expected kvpress's export of {repo}")
        for row in table.to_pylist():
            ans = row["answer"]
            answers = tuple(str(a) for a in ans) if isinstance(ans, (list, tuple)) else (str(ans),)
            out.append(LongSample(name, len(out), str(row.get("task") or subset), str(row["context"]),
                                  str(row["question"] or ""), str(row.get("answer_prefix") or ""), answers,
                                  int(row.get("max_new_tokens") or 0)))
            if samples and len(out) >= samples:
                return out
    if not out:
        raise ValueError(f"{folder}: benchmark {name} has no rows in {split}")
    return out


# ------------------------------------------------------------------------------------------------ scoring
def string_match_all(prediction: str, answers) -> float:
    """RULER: fraction of ``answers`` contained in ``prediction`` (case-insensitive)."""
    pred = prediction.lower()
    return sum(a.lower() in pred for a in answers) / len(answers)


def _normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def qa_f1(prediction: str, answers) -> float:
    """LongBench ``qa_f1_score``: token F1 of the normalised strings, best over ``answers``."""
    best = 0.0
    pred = _normalize(prediction).split()
    for ans in answers:
        ref = _normalize(ans).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            p, r = common / len(pred), common / len(ref)
            best = max(best, 2 * p * r / (p + r))
    return best


def score(sample: LongSample, prediction: str) -> float:
    return (string_match_all if sample.set.startswith("ruler/") else qa_f1)(prediction, sample.answers)


# ------------------------------------------------------------------------------------------------ decoding
def prompt_ids(tokenizer, sample: LongSample, max_context: int) -> tuple[list[int], list[int]]:
    """``(context ids, question ids)``: the question (and answer prefix) is decoded under selection like the
    needles' (``specontext.eval.question_decoded``); a context longer than ``max_context`` minus the question
    loses its middle (LongBench ``pred.py``: keep the first and last halves)."""
    q = tokenizer(" " + (sample.question + " " + sample.answer_prefix).strip(), add_special_tokens=False)["input_ids"]
    ctx = tokenizer(sample.context, add_special_tokens=False)["input_ids"]
    room = max(1, max_context - len(q))
    if len(ctx) > room:
        ctx = ctx[: room // 2] + ctx[len(ctx) - (room - room // 2):]
    return ctx, q


def benchmark_eval(target, tokenizer, samples, selectors: dict, budgets, cfg, progress: bool = True) -> list[dict]:
    """Rows (set, task, index, method, budget, score, answer) for every sample; ``full`` first (one prefill of the
    context per sample, each method decodes from a copy)."""
    import torch
    from tqdm.auto import tqdm

    from lab.kv import selective
    from lab.methods.specontext.evaluate import _prefill

    b, s = cfg.bench, cfg.selection
    rows = []
    for sample in tqdm(samples, desc="benchmarks", disable=not progress):
        ctx, q = prompt_ids(tokenizer, sample, b.max_context)
        n_answer = b.answer_tokens or sample.max_new_tokens or cfg.eval.answer_tokens
        tokens = torch.tensor([q + [0] * n_answer])
        cache, _ = _prefill(target, torch.tensor([ctx]), selectors)
        for method, proto, budget in [("full", None, 0)] + [(m, x, k) for k in budgets for m, x in selectors.items()]:
            out, _, _ = selective.decode(target, selective.copy_cache(cache), tokens, copy.deepcopy(proto),
                                         budget=max(budget, 1), sinks=s.sinks, window=s.window, greedy_after=len(q))
            answer = tokenizer.decode(out[0, len(q) - 1:].argmax(-1).tolist())
            rows.append({"set": sample.set, "task": sample.task, "index": sample.index, "method": method,
                         "budget": budget, "context": len(ctx), "score": score(sample, answer), "answer": answer})
    return rows
