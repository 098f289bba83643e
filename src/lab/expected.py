"""The expected-results registry: ``experiments/<paper>/expected.yaml``.

Each claim records the paper's value, our measured value, a tolerance, the metric it reads and the
command that produced it. ``python -m lab.expected`` re-reads the metrics the pipeline wrote and prints,
per claim, whether our recorded value is still what the pipeline measures (``recorded``) and whether it
reproduces the paper within tolerance (``reproduced``). A claim the smoke scale cannot show keeps
``paper`` and ``ours`` apart and says so in ``note``; the tolerance is never widened to make it pass.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.config import ConfigError, active_profile, build
from lab.paths import repo_root


@dataclass(frozen=True)
class Claim:
    id: str
    description: str
    metric: str                 # "<metrics.json path>:<dotted.key>" or "" when measured by a bench script
    command: str
    profile: str = "smoke"
    paper: float | None = None  # the paper's value (None: no comparable number in the paper)
    ours: float | None = None   # our last measured value (None: not measured yet)
    tolerance: float = 0.0      # |ours - paper| <= tolerance counts as reproduced
    higher_is_better: bool = True
    target: float | None = None  # a smoke-scale bar (e.g. "above BM25") when the paper value is not comparable
    note: str = ""


@dataclass(frozen=True)
class Expected:
    paper: str
    source: str
    claims: tuple[Claim, ...]


def load(path: str | Path) -> Expected:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    exp = build(Expected, raw, str(path))
    ids = [c.id for c in exp.claims]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ConfigError(f"{path}: duplicate claim ids {sorted(dup)}")
    return exp


def read_metric(ref: str, root: Path) -> float | None:
    """Value of ``file.json:a.b.c`` under ``root``; None if the file or key is absent."""
    file, _, key = ref.partition(":")
    path = root / file
    if not path.is_file():
        return None
    node: Any = json.loads(path.read_text())
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node)


def status(claim: Claim, root: Path, profile: str | None = None) -> dict[str, Any]:
    """A claim against the outputs under ``root``; outputs of another ``profile`` than the claim's are not read
    (a tiny-profile workspace says nothing about a smoke-profile number)."""
    same = profile is None or profile == claim.profile
    measured = read_metric(claim.metric, root) if claim.metric and same else None
    recorded = None if measured is None or claim.ours is None else math.isclose(measured, claim.ours, abs_tol=5e-5)
    reproduced = None
    if claim.ours is not None and claim.paper is not None:
        reproduced = abs(claim.ours - claim.paper) <= claim.tolerance
    elif claim.ours is not None and claim.target is not None:
        reproduced = claim.ours > claim.target if claim.higher_is_better else claim.ours < claim.target
    return {"id": claim.id, "paper": claim.paper, "ours": claim.ours, "measured": measured,
            "recorded": recorded, "reproduced": reproduced}


def all_files(root: Path) -> list[Path]:
    return sorted((root / "experiments").glob("*/expected.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.expected", description=__doc__.splitlines()[0])
    parser.add_argument("papers", nargs="*", help="experiments/<paper> names (default: all)")
    args = parser.parse_args(argv)
    root = repo_root()
    try:
        profile = active_profile(root / "params.yaml")
    except ConfigError:
        profile = None
    print(f"# workspace profile (params.yaml): {profile}; claims of another profile are listed, not measured")
    bad = 0
    for path in all_files(root):
        if args.papers and path.parent.name not in args.papers:
            continue
        exp = load(path)
        print(f"# {path.parent.name}: {exp.paper}")
        for claim in exp.claims:
            s = status(claim, root, profile)
            fmt = lambda v: "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
            print(f"  {s['id']:<40} paper={fmt(s['paper']):>8} ours={fmt(s['ours']):>8} "
                  f"measured={fmt(s['measured']):>8} recorded={fmt(s['recorded']):>5} reproduced={fmt(s['reproduced'])}")
            bad += s["recorded"] is False
    if bad:
        print(f"{bad} recorded value(s) differ from what the pipeline measures now", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
