"""The report (lab.report): tables beside the paper's values, claims with verdicts, a self-contained page that opens
offline, a markdown twin whose marked blocks README.md carries (`make readme`), and README agreeing with it."""

import csv
import json
import re
import struct
import zlib

import pytest

import lab.config
from lab import expected, report
from tests import browser
from tests.conftest import REPO

EXPECTED = {
    "alpha": """paper: "Alpha paper"
source: "arXiv 1"
claims:
  - {id: a-x, description: "x close to the paper", metric: "outputs/s/metrics.json:run.x.m", command: "dvc repro s",
     compare: approx, paper: 0.5, tolerance: 0.02, source: "Table 2"}
  - {id: a-y, description: "y above x", metric: "outputs/s/metrics.json:run.y.m", command: "dvc repro s",
     compare: above, than: a-x, test: {p: "outputs/s/metrics.json:run.y.m_p", alpha: 0.05}}
  - {id: a-paper, description: "a GPU number", metric: "outputs/s/metrics.json:run.z.m", command: "dvc exp run",
     compare: approx, paper: 0.9, tolerance: 0.01, profile: paper}
tables:
  - id: central
    title: "Table 2 | beside ours"
    command: "dvc repro s"
    row_header: run
    rows: {"system x": x, "system y": y, "system z": z}
    columns: {"paper": "paper:a-{row}", "ours": "outputs/s/metrics.json:run.{row}.m"}
    p: {"ours": "outputs/s/metrics.json:run.{row}.m_p"}
figures: [outputs/s/figures/f.png, outputs/s/figures/absent.png]
""",
    "beta": """paper: "Beta paper"
source: "arXiv 2"
claims:
  - {id: b-gap, description: "a difference within noise", metric: "outputs/s/metrics.json:diff",
     command: "dvc repro s", compare: above, target: 0.0, test: {p: "outputs/s/metrics.json:diff_p"}}
  - {id: b-bench, description: "a bench timing", metric: "outputs/bench/b.json:ms", command: "python bench/b.py",
     compare: below, target: 10}
tables:
  - {id: main, title: "Beta main", command: "dvc repro s", rows: {d: diff}, columns: {value: "outputs/s/metrics.json:{row}"}}
""",
}


def png(path, w=4, h=3):
    """A valid RGB PNG (no matplotlib needed)."""
    raw = b"".join(b"\x00" + b"\x80\x20\x20" * w for _ in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: smoke\nseed: 0\n")
    for name, text in EXPECTED.items():
        (tmp_path / "experiments" / name).mkdir(parents=True)
        (tmp_path / "experiments" / name / "expected.yaml").write_text(text)
    out = tmp_path / "outputs" / "s"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"run": {"x": {"m": 0.51}, "y": {"m": 0.60, "m_p": 0.004}},
                                                  "diff": 0.0051, "diff_p": 0.46}))
    (out / "notebook.ipynb").write_text(json.dumps({"metadata": {"papermill": {"parameters": {"profile": "smoke"}}}}))
    png(out / "figures" / "f.png")
    return tmp_path


def test_report_tables_claims_and_files(workspace):
    rep = report.build(workspace, ["alpha", "beta"], title="T")
    assert rep.outputs_profile == "smoke" and [p.name for p in rep.papers] == ["alpha", "beta"]
    alpha = rep.papers[0]
    (central,) = alpha.tables
    assert central.central and central.header == ["run", "paper", "ours"]
    assert central.rows == [["system x", "0.5000", "0.5100"], ["system y", "–", "0.6000 (p = 0.004)"],
                            ["system z", "–", "–"]]
    assert {k: s.verdict for k, s in alpha.statuses.items()} == {
        "a-x": expected.REPRODUCED, "a-y": expected.REPRODUCED, "a-paper": expected.NOT_RUN}
    assert rep.papers[1].statuses["b-gap"].verdict == expected.NOT_REPRODUCED
    assert rep.counts(profile="smoke") == {"reproduced": 2, "not reproduced": 1, "not run": 1}
    assert report.verdict_counts(rep)["beta"]["smoke"] == {"reproduced": 0, "not_reproduced": 1, "not_run": 1}

    paths = report.write(rep, workspace / "outputs" / "report")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["claim"] for r in rows] == ["a-x", "a-y", "a-paper", "b-gap", "b-bench"]
    gap = rows[3]
    assert gap["verdict"] == "not reproduced" and gap["p"] == "0.46" and "within noise" in gap["reason"]
    assert gap["command"] == "dvc repro s" and rows[4]["verdict"] == "not run"

    md = paths["md"].read_text()
    assert set(report.blocks(md)) == {"verdicts", "alpha/central", "alpha/claims", "beta/main", "beta/claims"}
    assert "Table 2 \\| beside ours" not in report.blocks(md)["alpha/central"]      # titles stay outside blocks
    assert "| system y | – | 0.6000 (p = 0.004) |" in md and "![f](figures/alpha--s--f.png)" in md
    assert "`outputs/s/figures/absent.png`: not produced" in md
    assert (workspace / "outputs" / "report" / "figures" / "alpha--s--f.png").is_file()
    assert report.twin_profile(md) == "smoke"

    page = paths["html"].read_text()
    assert page.count('class="results central"') == 2 and page.count("data:image/png;base64,") == 1
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must fetch nothing"
    assert "Table 2 | beside ours" in page      # escaped for HTML, not for markdown
    assert report.write(rep, workspace / "outputs" / "report")["html"].read_text() == page   # byte-stable


README = """# Title
Hand-written prose stays.
<!-- report:verdicts:begin -->
old numbers
<!-- report:verdicts:end -->
More prose | with a pipe.
<!-- report:beta/main:begin -->
| typed | by hand |
<!-- report:beta/main:end -->
"""


def test_readme_rewrites_only_marked_blocks_and_is_idempotent(workspace):
    twin = report.to_markdown(report.build(workspace, ["alpha", "beta"]))
    new = report.render_readme(README, twin)
    assert new != README and "old numbers" not in new and "typed" not in new
    assert new.startswith("# Title\nHand-written prose stays.\n") and "More prose | with a pipe.\n" in new
    assert report.blocks(new)["beta/main"] == report.blocks(twin)["beta/main"]
    assert report.render_readme(new, twin) == new
    with pytest.raises(KeyError, match="gamma/x"):
        report.render_readme(README + "<!-- report:gamma/x:begin -->\n<!-- report:gamma/x:end -->\n", twin)


def test_make_readme_cli(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    report.write(report.build(workspace, ["alpha", "beta"]), workspace / "outputs" / "report")
    (workspace / "README.md").write_text(README)
    assert report.main(["readme", "--check"]) == 1 and "run `make readme`" in capsys.readouterr().err
    assert report.main(["readme"]) == 0
    once = (workspace / "README.md").read_text()
    assert report.main(["readme"]) == 0 and (workspace / "README.md").read_text() == once
    assert report.main(["readme", "--check"]) == 0
    assert report.main(["readme", "--check", "--profile", "tiny"]) == 1      # README's numbers: smoke only
    assert "is of profile smoke" in capsys.readouterr().err


def test_readme_blocks_are_generated_by_the_report():
    """README's markers name blocks the report writes (checked without outputs); when outputs/report exists here,
    README must agree with it (`make readme` fixes a difference)."""
    readme = (REPO / "README.md").read_text()
    marked = report.blocks(readme)
    assert {"verdicts", "foundation/firststage", "first/main", "nanovdr/smoke"} <= set(marked)
    papers = lab.config.load("report").papers   # every paper the report stage shows
    assert {"foundation", "first", "nanovdr", "laser", "specontext"} <= set(papers)
    twin = report.to_markdown(report.build(REPO, papers))
    assert set(marked) <= set(report.blocks(twin)), set(marked) - set(report.blocks(twin))
    generated = REPO / "outputs" / "report" / "index.md"
    if not generated.is_file():
        pytest.skip("no outputs/report/index.md in this checkout: run `dvc repro report` to compare README with it")
    twin = generated.read_text()
    if report.twin_profile(twin) != "smoke":
        pytest.skip(f"outputs/report is of profile {report.twin_profile(twin)}; README holds smoke results")
    differ = [k for k, v in marked.items() if report.blocks(twin).get(k) != v]
    assert not differ, f"README disagrees with outputs/report/index.md in {differ}: run `make readme`"


@pytest.mark.skipif(browser.chromium() is None, reason=browser.SKIP_REASON)
def test_page_opens_offline_in_headless_chromium(workspace, tmp_path):
    page = report.write(report.build(workspace, ["alpha", "beta"]), workspace / "outputs" / "report")["html"]
    seen = browser.open_offline(page, tmp_path / "shot.png")
    assert seen["central"] == ["alpha", "beta"] and seen["sections"] == ["alpha", "beta"]
    assert seen["images"] == 1 and seen["broken"] == 0
    # the check sees a failed image: point one at the network (the dead proxy) and one at a missing file
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text().replace("</section>", '<img src="https://example.org/x.png">'
                                               '<img src="missing.png"></section>', 1))
    assert browser.open_offline(broken, None)["broken"] == 2


# A measured number typed by hand in README.md goes stale at the next run. Outside the generated blocks (and code
# blocks) nothing may look like a result: a 4-decimal score, a ratio like 4.1x, a percentage, a p-value or a duration.
NOT_AFTER = r"(?<![\w.=/-])"                     # not inside a word, a key=value, a path or a version
SCORE = r"0\.\d{4,}"                               # 4 decimals: a measured score, not a config value
P_VALUE = r"p\s?[=<]\s?\d[\d.]*(?:e-?\d+)?"
TYPED_RESULT = re.compile(rf"{NOT_AFTER}(?:{SCORE}|\d+(?:\.\d+)?×|\d+(?:\.\d+)?\s?%|{P_VALUE}"
                          r"|\d+(?:[.,]\d+)?\s?(?:ms|s|min|h)\b)")


def typed_results(text: str) -> list[str]:
    text = report.MARKER.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return [f"line {i}: {m.group(0)!r} in {line.strip()[:90]!r}"
            for i, line in enumerate(text.splitlines(), 1) for m in TYPED_RESULT.finditer(line)]


def test_readme_has_no_typed_result_numbers():
    assert typed_results((REPO / "README.md").read_text()) == []
    # the check itself: each kind is caught, configuration values are not
    caught = typed_results("joint 0.4945 beats it (p = 0.13) at 4.1× in 33 min and 94.3% retention; 7.4 ms.\n"
                           "lr 5e-4, LoRA r=16, top-20, 3 epochs, k1=0.9, 3 decimals")
    assert [c.split("'")[1] for c in caught] == ["0.4945", "p = 0.13", "4.1×", "33 min", "94.3%", "7.4 ms"]


# A claim's note is shown beside its verdict (report page, claims.csv) and goes stale the same way: "0.5002 vs
# 0.5058, p = 0.46 on 2026-11-29" was wrong after the next run. Notes say what a result means; the dated numbers live
# in docs/measurements.md. Ratios, sizes and durations stay allowed here: the paper's "~1.5x", "68.5M parameters" of a
# config and an "8-minute budget" are not our measurements.
NOTE_MEASUREMENT = re.compile(rf"\b20\d\d-[01]\d-[0-3]\d\b|{NOT_AFTER}(?:{SCORE}|{P_VALUE}|p\s?~\s?\d[\d.]*)")


def measured_in_note(note: str) -> list[str]:
    return [m.group(0) for m in NOTE_MEASUREMENT.finditer(note)]


def test_claim_notes_carry_no_measured_numbers():
    found = [f"{path.relative_to(REPO)}: {kind} {item.id}: {hit!r} in {item.note[:90]!r}"
             for path in expected.all_files(REPO) for exp in [expected.load(path)]
             for kind, items in (("claim", exp.claims), ("table", exp.tables))
             for item in items for hit in measured_in_note(item.note)]
    assert found == [], "move dated numbers to docs/measurements.md:\n" + "\n".join(found)
    # the check itself: dates, 4-decimal scores and p-values are caught; paper values and config values are not
    assert measured_in_note("below BM25 in the 2026-11-29 run (0.5002 vs 0.5058, p = 0.46); +0.0047, p ~ 0.5; "
                            "2026-12-02: 1.52x, p = 4.7e-5") == [
        "2026-11-29", "0.5002", "0.5058", "p = 0.46", "0.0047", "p ~ 0.5", "2026-12-02", "p = 4.7e-5"]
    assert measured_in_note("paper: 0.951 on ViDoRe; read as 1.5x; ~300x; 68.5M parameters, 2.13B; bm25s (k1=0.9, "
                            "b=0.4); lr 2e-3, target -1e-6; 14-27 LoRA steps; Llama-3.1-8B, 32k; 3 decimals; the "
                            "8-minute budget; claims.<row>_ndcg_10_mteb_1x_compat; median teacher cosine 0.27") == []
