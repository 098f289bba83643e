"""Listwise reranking prompts as versioned YAML data (``lab/rerank/prompts/<name>.yaml``).

The prompt text lives only in the YAML files; this module loads them and fills the templates.
No ML imports here: turning messages into token ids is :mod:`lab.rerank.listwise`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

import yaml

DEFAULT_PROMPT = "first_alpha_v1"
_FIELDS = (
    "name", "version", "system", "prefix", "passage", "suffix", "identifiers", "response_prefix",
    "ranking_item", "ranking_separator", "system_fallback_separator", "passage_sanitize",
)


@dataclass(frozen=True)
class ListwisePrompt:
    name: str
    version: int
    system: str
    prefix: str                     # fields: {num}, {query}
    passage: str                    # fields: {identifier}, {text}
    suffix: str                     # fields: {num}, {query}
    identifiers: tuple[str, ...]    # identifier of passage i (A, B, ...)
    response_prefix: str            # appended after the generation prompt ("[")
    ranking_item: str               # field: {identifier}
    ranking_separator: str
    system_fallback_separator: str
    sanitize_pattern: str
    sanitize_replacement: str

    @property
    def max_passages(self) -> int:
        return len(self.identifiers)

    def check_num(self, num: int) -> None:
        if not 1 <= num <= self.max_passages:
            raise ValueError(f"prompt {self.name}: {num} passages; it has identifiers for 1..{self.max_passages}")

    def clean_passage(self, text: str, max_words: int | None) -> str:
        """Whitespace-normalise, keep the first ``max_words`` words, neutralise bracketed identifiers."""
        words = text.split()
        if max_words is not None:
            words = words[:max_words]
        return re.sub(self.sanitize_pattern, self.sanitize_replacement, " ".join(words))

    def user_message(self, query: str, passages: Sequence[str], max_words: int | None = 300) -> str:
        num = len(passages)
        self.check_num(num)
        parts = [self.prefix.format(num=num, query=query)]
        for ident, text in zip(self.identifiers, passages):
            parts.append(self.passage.format(identifier=ident, text=self.clean_passage(text, max_words)))
        parts.append(self.suffix.format(num=num, query=query))
        return "".join(parts)

    def messages(
        self, query: str, passages: Sequence[str], max_words: int | None = 300, system_supported: bool = True
    ) -> list[dict[str, str]]:
        """Chat messages (system + user), or one user message when the template has no system role."""
        user = self.user_message(query, passages, max_words)
        if system_supported:
            return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
        return [{"role": "user", "content": self.system + self.system_fallback_separator + user}]

    def ranking_text(self, order: Sequence[int]) -> str:
        """The permutation string for ``order`` (passage indices, best first): ``[B] > [A] > [C]``."""
        return self.ranking_separator.join(self.ranking_item.format(identifier=self.identifiers[i]) for i in order)


def _parse(data: dict) -> ListwisePrompt:
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise ValueError(f"prompt {data.get('name', '?')}: missing fields {missing}")
    extra = sorted(set(data) - set(_FIELDS))
    if extra:
        raise ValueError(f"prompt {data['name']}: unknown fields {extra}")
    idents = tuple(str(x) for x in data["identifiers"])
    if len(set(idents)) != len(idents) or any(len(x) != 1 for x in idents):
        raise ValueError(f"prompt {data['name']}: identifiers must be distinct single characters")
    san = data["passage_sanitize"]
    return ListwisePrompt(
        name=str(data["name"]), version=int(data["version"]), system=data["system"], prefix=data["prefix"],
        passage=data["passage"], suffix=data["suffix"], identifiers=idents,
        response_prefix=data["response_prefix"], ranking_item=data["ranking_item"],
        ranking_separator=data["ranking_separator"], system_fallback_separator=data["system_fallback_separator"],
        sanitize_pattern=san["pattern"], sanitize_replacement=san["replacement"],
    )


@lru_cache(maxsize=None)
def load_prompt(name: str = DEFAULT_PROMPT) -> ListwisePrompt:
    """Load ``lab/rerank/prompts/<name>.yaml``; the file's ``name`` must match its file name."""
    path = resources.files("lab.rerank").joinpath("prompts", f"{name}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no prompt {name!r} (looked for {path})")
    prompt = _parse(yaml.safe_load(path.read_text(encoding="utf-8")))
    if prompt.name != name:
        raise ValueError(f"prompt file {name}.yaml declares name {prompt.name!r}")
    return prompt
