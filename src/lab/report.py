"""The results report: every paper's claims, central table, results tables and figures, read from the outputs.

    python -m lab.report build [--out outputs/report]            # what the `report` stage writes, without MLflow
    python -m lab.report readme [--readme README.md] [--report outputs/report/index.md] [--profile smoke] [--check]

The ``report`` stage (``notebooks/report/01-report-claims.py``) calls :func:`build` and :func:`write`:
``outputs/report/index.html`` (one self-contained page: CSS inline, figures embedded as data URIs, no script or
style fetched from anywhere, so it opens offline), its markdown twin ``index.md`` (figures copied to
``figures/``) and ``claims.csv`` (one row per claim: paper value, ours, comparison, p, verdict, command). Verdicts
come from :mod:`lab.expected`; tables from the ``tables:`` of each ``experiments/<paper>/expected.yaml`` (the first
is the paper's central table, laid out as in the paper, with ours beside it where this scale has the rows).

The twin wraps each generated block in ``<!-- report:<paper>/<block>:begin -->`` ... ``:end -->`` markers; README.md
carries the same markers around its results tables, and ``readme`` rewrites exactly those blocks from the twin
(``make readme``), so no number in them is typed by hand. ``--check`` exits 1 when README differs from the report.
Core module: no ML imports (matplotlib only inside :func:`verdict_figure`).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lab import config, expected as ex
from lab.paths import repo_root, write_text

MARKER = re.compile(r"<!-- report:(?P<id>[\w./-]+):begin -->\n(?P<body>.*?)<!-- report:(?P=id):end -->", re.S)
PROFILE_MARK = re.compile(r"<!-- report:profile=(\w+) -->")
VERDICT_CLASS = {ex.REPRODUCED: "ok", ex.NOT_REPRODUCED: "bad", ex.NOT_RUN: "none"}


@dataclass
class Table:
    paper: str
    spec: ex.TableSpec
    header: list[str]
    rows: list[list[str]]        # formatted cells, row label first
    central: bool = False

    @property
    def block(self) -> str:
        return f"{self.paper}/{self.spec.id}"


@dataclass
class PaperReport:
    name: str
    expected: ex.Expected
    statuses: dict[str, ex.Status]
    tables: list[Table]
    figures: list[Path]          # existing PNGs (absolute)
    missing_figures: list[str]   # listed in expected.yaml, not produced


@dataclass
class Report:
    root: Path
    profile: str | None          # the workspace's (params.yaml)
    outputs_profile: str | None  # what the outputs say they were made with (stage notebooks); None: no outputs
    papers: list[PaperReport]
    title: str = "Did it reproduce?"
    extra_figures: list[Path] = field(default_factory=list)   # e.g. the stage's own verdict figure

    def statuses(self) -> list[ex.Status]:
        return [s for p in self.papers for s in p.statuses.values()]

    def counts(self, paper: str | None = None, profile: str | None = None) -> dict[str, int]:
        out = dict.fromkeys(ex.VERDICTS, 0)
        for s in self.statuses():
            if (paper is None or s.paper_name == paper) and (profile is None or s.claim.profile == profile):
                out[s.verdict] += 1
        return out


# ---------------------------------------------------------------------------------------------------- building
def _cell(template: str, row: str, outputs: ex.Outputs, statuses: dict[str, ex.Status],
          claims: dict[str, ex.Claim]) -> tuple[str, float | None]:
    """``(text, value)`` of one table cell."""
    if not template:
        return "", None
    ref = template.replace("{row}", row)
    kind, _, rest = ref.partition(":")
    if kind == "paper":
        value = claims[rest].paper if rest in claims else None
        return (ex.fmt(value) if value is not None else "–"), value
    if kind == "ours":
        s = statuses.get(rest)
        if s is None:
            return "–", None
        return (ex.fmt(s.ours) if s.ours is not None else "not run"), s.ours
    value, _ = outputs.read(ref)
    return (ex.fmt(value) if value is not None else "–"), value


def build_table(paper: str, spec: ex.TableSpec, outputs: ex.Outputs, statuses: dict[str, ex.Status],
                claims: dict[str, ex.Claim], central: bool = False) -> Table:
    rows = []
    for label, key in spec.rows.items():
        cells = [label]
        for col, template in spec.columns.items():
            text, value = _cell(template, key, outputs, statuses, claims)
            if value is not None and col in spec.p:
                p, _ = outputs.read(spec.p[col].replace("{row}", key))
                if p is not None:
                    text += f" (p = {ex.fmt_p(p)})"
            cells.append(text)
        rows.append(cells)
    return Table(paper, spec, [spec.row_header, *spec.columns], rows, central)


def outputs_profile(root: Path) -> str | None:
    """The profile of the stage outputs under ``root/outputs`` (papermill's parameter in each notebook); the most
    common one when they disagree; None when no stage has run."""
    outputs = ex.Outputs(root)
    found = [outputs.profile_of(f"outputs/{p.parent.name}/metrics.json:x")
             for p in sorted((root / "outputs").glob("*/notebook.ipynb")) if not p.parent.name.startswith(".")]
    found = [f for f in found if f]
    return max(sorted(set(found)), key=found.count) if found else None


def build(root: str | Path | None = None, papers: list[str] | tuple[str, ...] | None = None,
          title: str = "Did it reproduce?") -> Report:
    root = Path(root or repo_root())
    results = ex.collect(root, list(papers) if papers else None)
    order = list(papers) if papers else list(results)
    missing = [p for p in order if p not in results]
    if missing:
        raise ex.ConfigError(f"report.papers: no experiments/<paper>/expected.yaml for {missing}")
    outputs = ex.Outputs(root)
    reports = []
    for name in order:
        exp, statuses = results[name]
        claims = {c.id: c for c in exp.claims}
        tables = [build_table(name, spec, outputs, statuses, claims, central=i == 0) for i, spec in enumerate(exp.tables)]
        figures = [root / f for f in exp.figures if (root / f).is_file()]
        absent = [f for f in exp.figures if not (root / f).is_file()]
        reports.append(PaperReport(name, exp, statuses, tables, figures, absent))
    return Report(root, ex.workspace_profile(root), outputs_profile(root), reports, title)


def claim_rows(report: Report) -> list[dict]:
    """One dict per claim: the columns of ``claims.csv``."""
    rows = []
    for p in report.papers:
        for s in p.statuses.values():
            c = s.claim
            rows.append({"paper": p.name, "claim": c.id, "profile": c.profile, "description": c.description,
                         "source": c.source, "paper_value": c.paper, "ours": s.ours, "compare": c.compare,
                         "reference": s.reference, "reference_is": s.reference_label, "tolerance": c.tolerance,
                         "p": s.p, "alpha": c.test.alpha if c.test else None, "test": c.test.name if c.test else "",
                         "verdict": s.verdict, "reason": s.reason, "metric": c.metric, "command": c.command,
                         "note": c.note})
    return rows


def verdict_counts(report: Report) -> dict:
    """metrics.json of the stage: ``{paper: {profile: {reproduced, not_reproduced, not_run}}}``."""
    out: dict = {}
    for p in report.papers:
        for s in p.statuses.values():
            node = out.setdefault(p.name, {}).setdefault(s.claim.profile, dict.fromkeys(
                (v.replace(" ", "_") for v in ex.VERDICTS), 0))
            node[s.verdict.replace(" ", "_")] += 1
    return out


def verdict_figure(report: Report):
    """Stacked bars: claims per paper and profile by verdict (matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = [], {v: [] for v in ex.VERDICTS}
    for p in report.papers:
        for profile in ex.PROFILES:
            c = report.counts(p.name, profile)
            if sum(c.values()):
                labels.append(f"{p.name} [{profile}]")
                for v in ex.VERDICTS:
                    values[v].append(c[v])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    left = [0] * len(labels)
    for v, color in zip(ex.VERDICTS, ("#2e7d32", "#c62828", "#9e9e9e")):
        ax.barh(labels, values[v], left=left, color=color, label=v)
        left = [a + b for a, b in zip(left, values[v])]
    ax.invert_yaxis()
    ax.set_xlabel("claims")
    ax.set_title(f"Verdicts per paper and profile (outputs: {report.outputs_profile or 'none'})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------- markdown
def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """A markdown table; columns ``left`` are left-aligned, the others (numbers) right-aligned."""
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" if i in left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _claims_table(statuses: list[ex.Status], with_paper: bool = False) -> tuple[list[str], list[list[str]]]:
    header = (["paper"] if with_paper else []) + ["claim", "paper", "ours", "comparison", "p", "verdict"]
    rows = []
    for s in statuses:
        row = [s.id, ex.fmt(s.claim.paper), ex.fmt(s.ours), s.comparison(), ex.fmt_p(s.p), s.verdict]
        rows.append(([s.paper_name] if with_paper else []) + row)
    return header, rows


def _block(block_id: str, body: str) -> str:
    return f"<!-- report:{block_id}:begin -->\n{body}<!-- report:{block_id}:end -->\n"


def verdicts_md(report: Report) -> str:
    header = ["paper", "profile", *ex.VERDICTS]
    rows: list[list[str]] = []
    for p in report.papers:
        for profile in ex.PROFILES:
            c = report.counts(p.name, profile)
            if sum(c.values()):
                rows.append([p.name, profile, *(str(c[v]) for v in ex.VERDICTS)])
    return md_table(header, rows, left=(0, 1))


def to_markdown(report: Report, figure_names: dict[Path, str] | None = None) -> str:
    """The markdown twin. ``figure_names``: figure path -> its name under ``figures/`` beside the page."""
    figure_names = figure_names or {}
    active = report.outputs_profile or report.profile
    out = [f"# {report.title}\n", f"<!-- report:profile={active} -->\n",
           f"Outputs of profile **{report.outputs_profile or 'none'}** (params.yaml: {report.profile}). "
           f"Verdicts from `python -m lab.expected`: `reproduced`, `not reproduced` (with the gap or the p-value), "
           f"`not run` (a claim of another profile, or its output absent). Regenerate: `dvc repro report`; "
           f"README's tables: `make readme`.\n",
           _block("verdicts", verdicts_md(report))]
    for fig in report.extra_figures:
        if fig in figure_names:
            out.append(f"![{fig.stem}](figures/{figure_names[fig]})\n")
    for p in report.papers:
        exp = p.expected
        out.append(f"\n## {p.name}: {exp.paper}\n\nSource: {exp.source}\n")
        for t in p.tables:
            kind = "central table" if t.central else "table"
            out.append(f"\n### {t.spec.title}\n\n{kind} `{t.block}`; command: `{t.spec.command}`"
                       + (f"; paper: {t.spec.source}" if t.spec.source else "") + "\n\n")
            out.append(_block(t.block, md_table(t.header, t.rows)))
            if t.spec.note:
                out.append(f"\n{t.spec.note}\n")
        active_claims = [s for s in p.statuses.values() if s.claim.profile == active]
        others = len(p.statuses) - len(active_claims)
        out.append(f"\n### Claims ({active} profile)\n\n")
        header, rows = _claims_table(active_claims)
        out.append(_block(f"{p.name}/claims", md_table(header, rows, left=(0, 3, 5)) if rows
                          else f"No {active}-profile claims.\n"))
        if others:
            out.append(f"\n{others} claim(s) of other profiles: all claims with their reasons and commands are below"
                       f" and in `claims.csv`.\n")
        out.append("\n<details><summary>All claims: reason and command</summary>\n\n")
        out.append(md_table(["claim", "profile", "verdict", "reason", "command", "metric"],
                            [[s.id, s.claim.profile, s.verdict, s.reason, s.claim.command, s.claim.metric]
                             for s in p.statuses.values()], left=tuple(range(6))))
        out.append("\n</details>\n")
        if p.figures or p.missing_figures:
            out.append("\n### Figures\n\n")
            for fig in p.figures:
                out.append(f"![{fig.stem}](figures/{figure_names.get(fig, fig.name)})\n\n")
            for f in p.missing_figures:
                out.append(f"- `{f}`: not produced (its stage has not run)\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------------- html
def to_html(report: Report) -> str:
    """The one self-contained page (:mod:`lab.report_html`)."""
    from lab.report_html import to_html as render

    return render(report)


# ---------------------------------------------------------------------------------------------------- writing
def write(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write ``index.html``, ``index.md`` (+ ``figures/``) and ``claims.csv`` under ``out_dir``."""
    out_dir = Path(out_dir)
    figdir = out_dir / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    names: dict[Path, str] = {}
    for p in report.papers:
        for fig in p.figures:
            names[fig] = f"{p.name}--{fig.parent.parent.name}--{fig.name}"
            shutil.copyfile(fig, figdir / names[fig])
    for fig in report.extra_figures:
        names[fig] = fig.name
        if fig.resolve() != (figdir / fig.name).resolve():
            shutil.copyfile(fig, figdir / fig.name)
    paths = {"html": write_text(out_dir / "index.html", to_html(report)),
             "md": write_text(out_dir / "index.md", to_markdown(report, names))}
    buf = io.StringIO()
    rows = claim_rows(report)
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["paper", "claim"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    paths["csv"] = write_text(out_dir / "claims.csv", buf.getvalue())
    return paths


# ---------------------------------------------------------------------------------------------------- README
def blocks(text: str) -> dict[str, str]:
    """``{block id: body}`` of every ``<!-- report:<id>:begin -->`` ... ``:end -->`` in ``text``."""
    return {m["id"]: m["body"] for m in MARKER.finditer(text)}


def render_readme(readme: str, twin: str) -> str:
    """``readme`` with every marked block replaced by the twin's block of the same id. Raises ``KeyError`` naming
    the README blocks the twin lacks; unmarked text is left exactly as it was."""
    generated = blocks(twin)
    wanted = list(blocks(readme))
    missing = [b for b in wanted if b not in generated]
    if missing:
        raise KeyError(f"README blocks not in the report: {missing} (report blocks: {sorted(generated)})")
    return MARKER.sub(lambda m: f"<!-- report:{m['id']}:begin -->\n{generated[m['id']]}<!-- report:{m['id']}:end -->",
                      readme)


def twin_profile(twin: str) -> str | None:
    m = PROFILE_MARK.search(twin)
    return m.group(1) if m else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.report", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the report from the outputs (what the report stage writes, no MLflow)")
    b.add_argument("--out", default="outputs/report")
    b.add_argument("papers", nargs="*")
    r = sub.add_parser("readme", help="rewrite README's marked blocks from the report's markdown twin")
    r.add_argument("--readme", default="README.md")
    r.add_argument("--report", default="outputs/report/index.md")
    r.add_argument("--profile", default="smoke", help="the profile the README's numbers must come from")
    r.add_argument("--check", action="store_true", help="exit 1 if README differs from the report; write nothing")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        root = repo_root()
        try:
            cfg = config.load("report", path=root / "params.yaml")
            papers, title = list(args.papers or cfg.papers), cfg.title
        except config.ConfigError:
            papers, title = args.papers or None, "Did it reproduce?"
        paths = write(build(root, papers, title), args.out)
        print("\n".join(f"wrote {p}" for p in paths.values()))
        return 0
    twin_path, readme_path = Path(args.report), Path(args.readme)
    if not twin_path.is_file():
        print(f"error: {twin_path} not found: run `dvc repro report` first", file=sys.stderr)
        return 1
    twin, readme = twin_path.read_text(encoding="utf-8"), readme_path.read_text(encoding="utf-8")
    made = twin_profile(twin)
    if made != args.profile:
        print(f"error: {twin_path} is of profile {made}, README's results must come from {args.profile} "
              f"(--profile to override)", file=sys.stderr)
        return 1
    try:
        new = render_readme(readme, twin)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1
    n = len(blocks(readme))
    if args.check:
        if new != readme:
            changed = [k for k, v in blocks(readme).items() if blocks(new)[k] != v]
            print(f"{readme_path} differs from {twin_path} in {changed}: run `make readme`", file=sys.stderr)
            return 1
        print(f"{readme_path}: {n} block(s) agree with {twin_path}")
        return 0
    if new != readme:
        write_text(readme_path, new)
    print(f"{readme_path}: {n} block(s) {'rewritten' if new != readme else 'already up to date'} from {twin_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
