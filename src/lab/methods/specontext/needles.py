"""Passkey retrieval and RULER-style needle tasks written by us on real passages (TREC DL 2020 text).

Passkey: Mohtashami & Jaggi, "Landmark Attention" (arXiv 2305.16300), the 5-digit pass key hidden in filler; here
the filler is real passages. RULER (Hsieh et al., arXiv 2404.06654, §3.1 Table 1): NIAH single (one key-value
needle), multi-key (distractor needles with other keys), multi-value (several values for one key, all asked).
Keys are common words, values 7-digit numbers (RULER's "special magic numbers"); every draw comes from ``seed``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WORDS = ("apple", "river", "garden", "window", "silver", "forest", "candle", "marble", "harbor", "violet",
         "falcon", "meadow", "copper", "lantern", "thunder", "pepper")


@dataclass(frozen=True)
class Needle:
    task: str
    depth: float
    needles: tuple[str, ...]          # sentences inserted
    question: str
    answers: tuple[str, ...]          # all must appear in the output (multi-value: the fraction found counts)


def make(task: str, depth: float, seed: int) -> Needle:
    rng = random.Random(f"{task}-{depth}-{seed}")
    num = lambda n: "".join(rng.choice("123456789") for _ in range(n))   # noqa: E731
    if task == "passkey":
        key = num(5)
        return Needle(task, depth, (f"The pass key is {key}. Remember it. {key} is the pass key.",),
                      "What is the pass key? The pass key is", (key,))
    words = rng.sample(WORDS, 4)
    ask = words[0]
    question = (f"What is the special magic number for {ask} mentioned in the provided text? "
                f"The special magic number for {ask} mentioned in the provided text is")
    if task == "single":
        value = num(7)
        return Needle(task, depth, (f"One of the special magic numbers for {ask} is: {value}.",), question, (value,))
    if task == "multikey":
        values = [num(7) for _ in words]
        sents = tuple(f"One of the special magic numbers for {w} is: {v}." for w, v in zip(words, values))
        return Needle(task, depth, sents, question, (values[0],))
    if task == "multivalue":
        values = tuple(num(7) for _ in range(3))
        sents = tuple(f"One of the special magic numbers for {ask} is: {v}." for v in values)
        q = (f"What are all the special magic numbers for {ask} mentioned in the provided text? "
             f"The special magic numbers for {ask} mentioned in the provided text are")
        return Needle(task, depth, sents, q, values)
    raise ValueError(f"unknown needle task {task!r}")


def haystack_ids(tokenizer, texts: list[str], length: int, needle: Needle) -> list[int]:
    """``length`` tokens of passages with the needle sentences inserted at ``depth`` (multi-needle: spread from
    ``depth`` to the end evenly), each at a passage boundary."""
    need_ids = [tokenizer(" " + s + "\n\n", add_special_tokens=False)["input_ids"] for s in needle.needles]
    budget = length - sum(map(len, need_ids))
    filler: list[list[int]] = []
    total = 0
    for text in texts:
        ids = tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]
        filler.append(ids)
        total += len(ids)
        if total >= budget:
            break
    flat_bounds, pos = [], 0
    for ids in filler:
        flat_bounds.append(pos)
        pos += len(ids)
    out: list[int] = []
    spots = [needle.depth + (1 - needle.depth) * i / len(need_ids) for i in range(len(need_ids))]
    targets = [min(range(len(flat_bounds)), key=lambda j: abs(flat_bounds[j] - s * budget)) for s in spots]
    for j, ids in enumerate(filler):
        for t, nid in zip(targets, need_ids):
            if t == j:
                out += nid
        out += ids
    # trim filler from the end to exactly ``length`` (the needles sit before depth 1.0 so they survive)
    return out[:length]


def score(text: str, needle: Needle) -> float:
    """Fraction of the answers present in ``text`` (1.0 / 0.0 for one answer)."""
    return sum(a in text for a in needle.answers) / len(needle.answers)
