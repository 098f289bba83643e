"""The report's self-contained HTML page (``outputs/report/index.html``): CSS inline, figures as data URIs, one
script that only counts broken images for the headless-browser test; nothing is fetched from anywhere, so it opens
offline. Split from :mod:`lab.report` (which builds the report and writes its markdown twin) to keep both short.
Core module: no ML imports.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from lab import expected as ex
from lab.report import VERDICT_CLASS, Report, _claims_table

__all__ = ["to_html", "html_table", "CSS"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#212121;line-height:1.4}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
thead th{background:#f5f5f5}
table.central{border:2px solid #555}
td.ok{background:#e8f5e9;color:#1b5e20} td.bad{background:#ffebee;color:#b71c1c} td.none{color:#757575}
code{background:#f5f5f5;padding:0 .2rem;font-size:.85rem}
img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
details{margin:.5rem 0 1rem} .small{font-size:.8rem;color:#555}
table.claims td{text-align:left} table.claims td:nth-child(4){white-space:nowrap}
table.claims td:nth-child(n+8){font-size:.78rem;color:#424242}
"""

CHECK_IMAGES = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-broken-images', String(broken));
});
"""


def _h(text) -> str:
    return html.escape(str(text), quote=True)


def html_table(header: list[str], rows: list[list[str]], cls: str = "", attrs: str = "",
               verdict_col: int | None = None) -> str:
    out = [f'<table class="{cls}"{attrs}><thead><tr>' + "".join(f"<th>{_h(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            klass = f' class="{VERDICT_CLASS.get(c, "")}"' if i == verdict_col else ""
            cells.append(f"<td{klass}>{_h(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_h(path.stem)}" src="data:image/png;base64,{data}">'


def to_html(report: Report) -> str:
    active = report.outputs_profile or report.profile
    header, rows = [], []
    out = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{_h(report.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{_h(report.title)}</h1>",
           f"<p>Outputs of profile <b>{_h(report.outputs_profile or 'none')}</b> (params.yaml: {_h(report.profile)}). "
           "Verdicts from <code>python -m lab.expected</code>: <i>reproduced</i>, <i>not reproduced</i> (with the gap "
           "or the p-value), <i>not run</i> (a claim of another profile, or its output absent). Regenerate with "
           "<code>dvc repro report</code>.</p>"]
    vh = ["paper", "profile", *ex.VERDICTS]
    vrows = [[p.name, prof, *(str(report.counts(p.name, prof)[v]) for v in ex.VERDICTS)]
             for p in report.papers for prof in ex.PROFILES if sum(report.counts(p.name, prof).values())]
    out.append(html_table(vh, vrows, "verdicts"))
    out += [_img(f) for f in report.extra_figures if f.is_file()]
    for p in report.papers:
        exp = p.expected
        out.append(f'<section class="paper" id="{_h(p.name)}" data-paper="{_h(p.name)}">')
        out.append(f"<h2>{_h(p.name)}: {_h(exp.paper)}</h2><p class=\"small\">Source: {_h(exp.source)}</p>")
        for t in p.tables:
            out.append(f"<h3>{_h(t.spec.title)}</h3><p class=\"small\">{'central table; ' if t.central else ''}"
                       f"command: <code>{_h(t.spec.command)}</code>"
                       + (f"; paper: {_h(t.spec.source)}" if t.spec.source else "") + "</p>")
            cls = "results central" if t.central else "results"
            out.append(html_table(t.header, t.rows, cls, f' data-paper="{_h(p.name)}" data-table="{_h(t.spec.id)}"'))
            if t.spec.note:
                out.append(f"<p>{_h(t.spec.note)}</p>")
        ordered = sorted(p.statuses.values(), key=lambda s: s.claim.profile != active)   # the outputs' profile first
        header, rows = _claims_table(ordered)
        header = [*header, "profile", "reason", "command"]
        rows = [[*r, s.claim.profile, s.reason, s.claim.command] for r, s in zip(rows, ordered)]
        out.append(f"<h3>Claims</h3><p class=\"small\">{len([s for s in p.statuses.values() if s.claim.profile == active])}"
                   f" of {len(p.statuses)} of the {_h(active)} profile</p>")
        out.append(html_table(header, rows, "claims", f' data-paper="{_h(p.name)}"', verdict_col=5))
        if p.figures or p.missing_figures:
            out.append("<h3>Figures</h3>")
            out += [_img(f) for f in p.figures]
            out += [f"<p class=\"small\"><code>{_h(f)}</code>: not produced (its stage has not run)</p>"
                    for f in p.missing_figures]
        out.append("</section>")
    out.append(f"<script>{CHECK_IMAGES}</script></body></html>\n")
    return "".join(out)


