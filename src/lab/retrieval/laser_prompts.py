"""LaSER's wrapper and reasoning prompt as versioned YAML (``lab/retrieval/prompts/<name>.yaml``); no ML imports."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources

import yaml

__all__ = ["LaserPrompt", "load_laser_prompt"]


@dataclass(frozen=True)
class LaserPrompt:
    name: str
    version: int
    task: str                 # the instruction of the query wrapper
    query: str                # fields {task}, {query}
    document: str             # field {text}
    think: str                # appended after the chat template's generation prompt (code: empty think block)
    reasoning_system: str     # the rewriter's system turn
    reasoning_user: str       # field {query}

    def query_text(self, query: str, task: str | None = None) -> str:
        return self.query.format(task=self.task if task is None else task, query=query)

    def document_text(self, text: str) -> str:
        return self.document.format(text=text)


@lru_cache(maxsize=None)
def load_laser_prompt(name: str = "laser_v1") -> LaserPrompt:
    """Load ``lab/retrieval/prompts/<name>.yaml``: every field present, no unknown one, ``name`` = file name."""
    path = resources.files("lab.retrieval").joinpath("prompts", f"{name}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no LaSER prompt {name!r} (looked for {path})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    want = [f.name for f in fields(LaserPrompt)]
    missing, extra = [f for f in want if f not in data], sorted(set(data) - set(want))
    if missing or extra:
        raise ValueError(f"{path}: missing fields {missing}, unknown fields {extra}")
    prompt = LaserPrompt(**{f: (int(data[f]) if f == "version" else str(data[f])) for f in want})
    if prompt.name != name:
        raise ValueError(f"{path} declares name {prompt.name!r}")
    return prompt
