"""Typed records shared by every layer: queries, candidates, rankings, runs and qrels.

Ids are always ``str`` (the rank_llm RepLLaMA files store qids as str, the others as int; mixing the two
silently drops every query on a join). Reading and writing files is in :mod:`lab.data.formats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Mapping


@dataclass(frozen=True)
class Query:
    qid: str
    text: str

    def __post_init__(self):
        if not isinstance(self.qid, str):
            object.__setattr__(self, "qid", str(self.qid))


@dataclass(frozen=True)
class Candidate:
    """One retrieved passage for one query. ``text`` is kept byte for byte (MS MARCO mojibake included)."""

    docid: str
    score: float
    rank: int = 0           # 1-based position in the source ranking; 0 = unknown
    text: str | None = None

    def __post_init__(self):
        if not isinstance(self.docid, str):
            object.__setattr__(self, "docid", str(self.docid))


@dataclass
class Ranking:
    """A query and its candidates in ranked order (best first)."""

    query: Query
    candidates: list[Candidate] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.candidates)

    def top(self, k: int) -> "Ranking":
        return Ranking(self.query, self.candidates[:k])

    def reranked(self, order: Iterable[int], scores: Iterable[float] | None = None) -> "Ranking":
        """A new ranking with candidates in ``order`` (indices into ``self.candidates``).

        Scores default to ``len - position`` so that trec_eval, which sorts by score and breaks ties
        by docid, sees exactly this order.
        """
        order = list(order)
        if sorted(order) != list(range(len(self.candidates))):
            raise ValueError(f"query {self.query.qid}: order is not a permutation of {len(self.candidates)} items")
        scores = list(scores) if scores is not None else [float(len(order) - i) for i in range(len(order))]
        cands = [
            replace(self.candidates[j], rank=i + 1, score=float(s)) for i, (j, s) in enumerate(zip(order, scores))
        ]
        return Ranking(self.query, cands)


@dataclass
class Run:
    """A named set of rankings keyed by qid (insertion order kept)."""

    name: str
    rankings: dict[str, Ranking] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Ranking]:
        return iter(self.rankings.values())

    def __len__(self) -> int:
        return len(self.rankings)

    def __getitem__(self, qid: str) -> Ranking:
        return self.rankings[qid]

    def __contains__(self, qid: object) -> bool:
        return qid in self.rankings

    def add(self, ranking: Ranking) -> None:
        self.rankings[ranking.query.qid] = ranking

    def scores(self) -> dict[str, dict[str, float]]:
        """``{qid: {docid: score}}``, the form trec_eval / ir-measures take."""
        return {qid: {c.docid: float(c.score) for c in r.candidates} for qid, r in self.rankings.items()}

    def top(self, k: int) -> "Run":
        return Run(self.name, {q: r.top(k) for q, r in self.rankings.items()})

    def subset(self, qids: Iterable[str]) -> "Run":
        return Run(self.name, {q: self.rankings[q] for q in qids if q in self.rankings})

    @property
    def queries(self) -> list[Query]:
        return [r.query for r in self.rankings.values()]


@dataclass
class Qrels:
    """Graded relevance judgements ``{qid: {docid: grade}}``."""

    judgements: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.judgements)

    def __contains__(self, qid: object) -> bool:
        return qid in self.judgements

    def __getitem__(self, qid: str) -> Mapping[str, int]:
        return self.judgements[qid]

    @property
    def qids(self) -> list[str]:
        return list(self.judgements)

    def n_pairs(self) -> int:
        return sum(len(d) for d in self.judgements.values())

    def subset(self, qids: Iterable[str]) -> "Qrels":
        return Qrels({q: dict(self.judgements[q]) for q in qids if q in self.judgements})
