"""The expected-results registry: ``experiments/<paper>/expected.yaml``; ``python -m lab.expected [--strict]``.

A claim keeps the paper's value and where the paper gives it (``paper``, ``source``), the metric path of the
pipeline output that measures ours (``metric``: ``<json file>:<dotted.key>``, a stage's ``metrics.json`` or the
JSON a ``bench/`` script writes), the comparison (``compare``: ``approx`` = within ``tolerance`` of the reference,
``above`` / ``below`` = strictly beyond it; the reference is ``than``, another claim's id or a metric path, else
``target``, else ``paper``) and, for a difference between two systems, the paired test the pipeline computed
(``test``: the metric path of its two-sided p-value and ``alpha``). There is no hand-typed "ours": every value
is read from the outputs, so nothing passes or fails on a number somebody typed.

Verdicts: ``reproduced`` (the comparison holds, and p < alpha when a test is named), ``not reproduced`` (with the
reason: the gap, or ``within noise: p = ...``), ``not run`` (the claim is of another profile than the outputs, or
an output it needs is absent). ``--strict`` exits 1 unless every claim of the active profile (params.yaml) is
``reproduced``: on a clean clone before ``dvc repro`` every claim is ``not run`` and it fails.

Profiles: an output's profile is the ``profile`` papermill gave the stage's notebook (``notebook.ipynb`` beside
``metrics.json``) or the ``profile`` key a bench JSON carries; outputs of another profile than the claim's are not
read (a tiny-profile workspace says nothing about a smoke-profile number).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lab.config import PROFILES, ConfigError, active_profile, build
from lab.paths import repo_root

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_RUN)


@dataclass(frozen=True)
class PairedTest:
    p: str                      # metric path of the two-sided p-value the pipeline computed for this difference
    alpha: float = 0.05
    name: str = "paired t-test"  # what was tested, for the reader (test, pairing, n)


@dataclass(frozen=True)
class Claim:
    id: str
    description: str
    metric: str                 # "<json path>:<dotted.key>": where the pipeline (or a bench script) writes ours
    command: str                # the command that writes ``metric``
    compare: Literal["approx", "above", "below"]
    profile: Literal["smoke", "paper", "tiny"] = "smoke"
    paper: float | None = None  # the paper's value (None: the paper has no comparable number)
    source: str = ""            # where the paper gives it: table / figure / section
    tolerance: float = 0.0      # approx: |ours - reference| <= tolerance
    target: float | None = None  # a fixed bar (a smoke-scale threshold) instead of the paper's value
    than: str = ""              # the reference is another claim's measured value (its id) or a metric path
    test: PairedTest | None = None  # a difference between two systems: must also pass this test
    note: str = ""


@dataclass(frozen=True)
class TableSpec:
    """A results table of the report: rows x columns of cells read from the outputs (or the claims)."""
    id: str                     # README marker: <!-- report:<paper>/<id>:begin -->
    title: str
    command: str
    rows: dict[str, str]        # label -> row key, substituted for {row} in the cell templates
    columns: dict[str, str]     # header -> cell: "<json>:<key>", "paper:<claim id>", "ours:<claim id>" or ""
    p: dict[str, str] = field(default_factory=dict)  # header -> metric path of a p-value shown beside the cell
    row_header: str = ""        # the header of the label column
    source: str = ""            # the paper's table this one mirrors
    note: str = ""


@dataclass(frozen=True)
class Expected:
    paper: str
    source: str
    claims: tuple[Claim, ...]
    tables: tuple[TableSpec, ...] = ()
    figures: tuple[str, ...] = ()   # PNGs the report embeds (paths relative to the repo root)


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
    for c in exp.claims:
        where = f"{path}: claim {c.id}"
        if ":" not in c.metric or not c.metric.partition(":")[2]:
            raise ConfigError(f"{where}: metric must be '<json file>:<dotted.key>' (a stage's metrics.json or a "
                              f"bench JSON), got {c.metric!r}: every claim is measured")
        if c.than and ":" not in c.than and c.than not in ids:
            raise ConfigError(f"{where}: than {c.than!r} is neither a claim id of this file nor a metric path")
        if c.than == c.id:
            raise ConfigError(f"{where}: a claim cannot be its own reference")
        if not c.than and c.target is None and c.paper is None:
            raise ConfigError(f"{where}: compare {c.compare} needs a reference: than, target or paper")
        if c.test is not None and c.compare == "approx":
            raise ConfigError(f"{where}: a paired test backs a difference (compare above/below), not approx")
        if c.test is not None and not 0 < c.test.alpha < 1:
            raise ConfigError(f"{where}: test.alpha must be in (0, 1), got {c.test.alpha}")
        if c.tolerance < 0:
            raise ConfigError(f"{where}: tolerance must be >= 0")
    for t in exp.tables:
        for col, cell in t.columns.items():
            kind, _, ref = cell.partition(":")
            if cell and kind in ("paper", "ours") and not any(ref.replace("{row}", r) in ids for r in t.rows.values()):
                raise ConfigError(f"{path}: table {t.id}: column {col!r} names no claim id ({cell!r})")
    return exp


# ---------------------------------------------------------------------------------------------------- reading
class Outputs:
    """Reads metric paths under ``root`` (JSON files cached) and the profile each output was produced with."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._json: dict[Path, Any] = {}
        self._profile: dict[Path, str | None] = {}

    def _load(self, path: Path) -> Any:
        if path not in self._json:
            try:
                self._json[path] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            except (OSError, json.JSONDecodeError):
                self._json[path] = None
        return self._json[path]

    def read(self, ref: str) -> tuple[float | None, str]:
        """``(value, why)`` of ``file.json:a.b.c``: value None with the reason when the file or key is absent."""
        file, _, key = ref.partition(":")
        node = self._load(self.root / file)
        if node is None:
            return None, f"{file} absent"
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None, f"{key} absent from {file}"
            node = node[part]
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            return None, f"{ref} is not a number"
        if not math.isfinite(node):
            return None, f"{ref} is {node}"
        return float(node), ""

    def profile_of(self, ref: str) -> str | None:
        """The profile the output holding ``ref`` was produced with; None when it does not say."""
        path = self.root / ref.partition(":")[0]
        if path not in self._profile:
            found = None
            data = self._load(path)
            if isinstance(data, dict) and isinstance(data.get("profile"), str):
                found = data["profile"]                      # a bench JSON
            else:
                nb = self._load(path.parent / "notebook.ipynb")   # a stage: papermill's parameters
                if isinstance(nb, dict):
                    found = ((nb.get("metadata") or {}).get("papermill") or {}).get("parameters", {}).get("profile")
            self._profile[path] = found if isinstance(found, str) else None
        return self._profile[path]


@dataclass(frozen=True)
class Status:
    paper_name: str             # experiments/<paper_name>
    claim: Claim
    ours: float | None
    reference: float | None     # the value ours is compared with
    reference_label: str        # "paper", "target", a claim id or a metric path
    p: float | None
    verdict: str
    reason: str

    @property
    def id(self) -> str:
        return self.claim.id

    def comparison(self) -> str:
        """``≈ 0.5058 ± 0.0001``, ``> 0.0``, ``< smoke-cosine (0.9432)``."""
        c = self.claim
        sign = {"approx": "≈", "above": ">", "below": "<"}[c.compare]
        ref = fmt(self.reference)
        if self.reference_label not in ("paper", "target"):
            ref = f"{self.reference_label.rpartition(':')[2]} ({ref})"
        tail = f" ± {c.tolerance:g}" if c.compare == "approx" else ""
        test = f", p < {c.test.alpha:g}" if c.test else ""
        return f"{sign} {ref}{tail}{test}"


def fmt(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "-"
    if float(v).is_integer() and abs(v) >= 10:
        return str(int(v))
    if abs(v) >= 100:
        return f"{v:.1f}"
    if v != 0 and abs(v) < 10 ** -digits:
        return f"{v:.2g}"
    return f"{v:.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}"


def evaluate(claims: dict[str, Claim], outputs: Outputs, profile: str | None, paper_name: str = "") -> dict[str, Status]:
    """Every claim of one expected.yaml against ``outputs``; ``profile``: the workspace's (params.yaml), used for
    outputs that do not record their own."""
    done: dict[str, Status] = {}

    def one(claim: Claim, seen: tuple[str, ...] = ()) -> Status:
        if claim.id in done:
            return done[claim.id]

        label = claim.than or ("target" if claim.target is not None else "paper")
        fixed = claim.target if claim.target is not None else claim.paper

        def result(verdict, reason, ours=None, ref=None, p=None):
            done[claim.id] = Status(paper_name, claim, ours, fixed if ref is None and not claim.than else ref,
                                    label, p, verdict, reason)
            return done[claim.id]

        made = outputs.profile_of(claim.metric)
        if (made or profile) != claim.profile:
            where = f"outputs: {made}" if made else f"workspace profile: {profile or 'unknown'}"
            return result(NOT_RUN, f"a {claim.profile}-profile claim; {where}")
        ours, why = outputs.read(claim.metric)
        if ours is None:
            return result(NOT_RUN, why)
        if claim.than and ":" not in claim.than:
            if claim.than in seen:
                raise ConfigError(f"claim {claim.id}: circular 'than' through {claim.than}")
            other = one(claims[claim.than], (*seen, claim.id))
            ref, why = other.ours, f"reference claim {claim.than} is not run ({other.reason})"
        elif claim.than:
            ref, why = outputs.read(claim.than)
            why = f"reference: {why}"
        else:
            ref, why = fixed, ""
        if ref is None:
            return result(NOT_RUN, why, ours)
        p = None
        if claim.test is not None:
            p, why = outputs.read(claim.test.p)
            if p is None:
                return result(NOT_RUN, f"p-value: {why}", ours, ref)
        gap, name = ours - ref, label if label in ("paper", "target") else "reference"
        if claim.compare == "approx":
            ok = abs(gap) <= claim.tolerance + 1e-12
            reason = f"|ours - {name}| = {fmt(abs(gap))} {'<=' if ok else '>'} {fmt(claim.tolerance)}"
        else:
            ok = gap > 0 if claim.compare == "above" else gap < 0
            reason = f"ours - {name} = {gap:+.1f}" if abs(gap) >= 100 else f"ours - {name} = {gap:+.4f}"
            if not ok:
                reason += f", not {claim.compare} it"
        if ok and claim.test is not None:
            if p < claim.test.alpha:
                reason += f", p = {fmt_p(p)} < {claim.test.alpha:g}"
            else:
                ok, reason = False, reason + f": within noise, p = {fmt_p(p)} >= {claim.test.alpha:g}"
        elif claim.test is not None:
            reason += f" (p = {fmt_p(p)})"
        return result(REPRODUCED if ok else NOT_REPRODUCED, reason, ours, ref, p)

    for claim in claims.values():
        one(claim)
    return {cid: done[cid] for cid in claims}


def all_files(root: Path) -> list[Path]:
    return sorted((root / "experiments").glob("*/expected.yaml"))


def workspace_profile(root: Path) -> str | None:
    try:
        return active_profile(root / "params.yaml")
    except ConfigError:
        return None


def collect(root: Path, papers: list[str] | None = None) -> dict[str, tuple[Expected, dict[str, Status]]]:
    """``{paper: (expected, {claim id: status})}`` for every ``experiments/*/expected.yaml`` (or ``papers``)."""
    outputs, profile = Outputs(root), workspace_profile(root)
    out = {}
    for path in all_files(root):
        name = path.parent.name
        if papers and name not in papers:
            continue
        exp = load(path)
        out[name] = (exp, evaluate({c.id: c for c in exp.claims}, outputs, profile, name))
    return out


def strict_failures(results: dict[str, tuple[Expected, dict[str, Status]]], profile: str | None) -> list[Status]:
    """Claims of the active profile that are not ``reproduced``."""
    return [s for _, statuses in results.values() for s in statuses.values()
            if s.claim.profile == profile and s.verdict != REPRODUCED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.expected", description=__doc__.splitlines()[0])
    parser.add_argument("papers", nargs="*", help="experiments/<paper> names (default: all)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 unless every claim of the active profile is reproduced")
    args = parser.parse_args(argv)
    root = repo_root()
    profile = workspace_profile(root)
    print(f"# workspace profile (params.yaml): {profile}; claims of another profile are `not run`")
    try:
        results = collect(root, args.papers or None)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = dict.fromkeys(VERDICTS, 0)
    for name, (exp, statuses) in results.items():
        print(f"# {name}: {exp.paper}")
        for s in statuses.values():
            counts[s.verdict] += 1
            c = s.claim
            print(f"  {s.id:<42} [{c.profile}] paper={fmt(c.paper):>8} ours={fmt(s.ours):>8} "
                  f"{s.comparison():<34} -> {s.verdict}: {s.reason}")
            print(f"  {'':<42} $ {c.command}   ({c.metric})")
    print("# " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if args.strict:
        bad = strict_failures(results, profile)
        if bad:
            print(f"--strict: {len(bad)} claim(s) of profile {profile} not reproduced: "
                  + ", ".join(f"{s.id} ({s.verdict})" for s in bad), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
