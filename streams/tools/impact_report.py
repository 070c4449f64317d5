"""The impact report's files (`claims-pipeline shadow --report DIR`): one CSV file per table
of `streams.pipeline.impact` and one self-contained HTML page (inline CSS and SVG, no script, nothing
fetched: it opens from disk without a network) with the summary, bar charts of the
difference by rule and by provider, the four tables, and each provider's changed lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from pathlib import Path

from streams.pipeline.impact import COLUMNS, DIMENSIONS, Impact, LineImpact, Row

TITLES = {"rule": "By rule", "provider_npi": "By provider NPI", "procedure_code": "By procedure code",
          "service_month": "By month of service"}
HEADINGS = {"lines": "lines", "changed": "changed", "share": "share changed", "allowed_before": "allowed before",
            "allowed_after": "allowed after", "difference": "difference", "newly_denied": "newly denied",
            "newly_paid": "newly paid", "newly_pended": "newly pended"}
#: providers drawn in the chart (all of them are in the table)
CHART_ROWS = 15


@dataclass(frozen=True)
class ReportInfo:
    """What the page says about the run: the policies compared and where the claims came from."""

    live_versions: str
    candidate_version: str
    source: str


def csv_name(dimension: str) -> str:
    return f"impact-by-{dimension}.csv"


def csv_text(impact: Impact, dimension: str) -> str:
    """One table as CSV: a header, a row per group, then the TOTAL row."""
    table = impact.table(dimension)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([dimension, *COLUMNS])
    for row in [*table["rows"], table["total"]]:
        writer.writerow([row["group"], *(row[c] for c in COLUMNS)])
    return out.getvalue()


def write_report(directory: Path, impact: Impact, info: ReportInfo) -> list[Path]:
    """The CSV files and `impact.html` in `directory` (created if missing); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for dimension in impact.dimensions:
        path = directory / csv_name(dimension)
        path.write_text(csv_text(impact, dimension), encoding="utf-8")
        written.append(path)
    page = directory / "impact.html"
    page.write_text(html_page(impact, info), encoding="utf-8")
    return [*written, page]


# --- the page ---------------------------------------------------------------------------------------


def money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def signed(amount: Decimal) -> str:
    return f"{amount:+,.2f}" if amount else "0.00"


def percent(share: Decimal | str) -> str:
    return f"{Decimal(share) * 100:.2f}%"


def provider_anchor(npi: str) -> str:
    return "provider-" + "".join(ch if ch.isalnum() else "-" for ch in npi)


def bar_chart(title: str, rows: Sequence[Row], note: str = "") -> str:
    """A horizontal bar per row: its difference in allowed dollars, left of zero when the
    candidate pays less, right when it pays more."""
    width, label_w, value_w, bar_h, gap = 600, 230, 100, 18, 6
    area = width - label_w - value_w
    low = min([Decimal(0), *(r.difference for r in rows)])
    high = max([Decimal(0), *(r.difference for r in rows)])
    span = (high - low) or Decimal(1)
    zero = label_w + float(-low / span) * area
    height = len(rows) * (bar_h + gap) + 24
    parts = [f'<figure><figcaption>{escape(title)}</figcaption>'
             f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}" viewBox="0 0 {width} {height}">']
    for i, row in enumerate(rows):
        y = 4 + i * (bar_h + gap)
        x_end = label_w + float((row.difference - low) / span) * area
        x, w = min(zero, x_end), max(abs(x_end - zero), 1.0 if row.difference else 0.0)
        colour = "#b03a2e" if row.difference < 0 else "#2e7d32"
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h - 5}" text-anchor="end">{escape(row.group[:34])}</text>'
                     f'<rect class="bar" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                     f'<title>{escape(row.group)}: {signed(row.difference)}</title></rect>'
                     f'<text x="{width - value_w + 8}" y="{y + bar_h - 5}">{signed(row.difference)}</text>')
    axis_y = len(rows) * (bar_h + gap) + 4
    parts.append(f'<line x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{axis_y}" stroke="#333"/>'
                 f'<text x="{zero:.1f}" y="{axis_y + 16}" text-anchor="middle">0</text></svg>')
    if note:
        parts.append(f"<p class=note>{escape(note)}</p>")
    parts.append("</figure>")
    return "".join(parts)


def _cells(row: dict, dimension: str, drill: set[str]) -> str:
    group = escape(row["group"])
    if dimension == "provider_npi" and row["group"] in drill:
        group = f'<a href="#{provider_anchor(row["group"])}">{group}</a>'
    cells = [f"<th scope=row>{group}</th>"]
    for column in COLUMNS:
        value = row[column]
        text = (percent(value) if column == "share" else signed(Decimal(value)) if column == "difference"
                else money(Decimal(value)) if column.startswith("allowed") else str(value))
        negative = " class=neg" if column == "difference" and Decimal(value) < 0 else ""
        cells.append(f"<td{negative}>{text}</td>")
    return "".join(cells)


def table_html(impact: Impact, dimension: str, drill: set[str]) -> str:
    table = impact.table(dimension)
    head = "".join(f"<th scope=col>{HEADINGS[c]}</th>" for c in COLUMNS)
    body = "".join(f"<tr>{_cells(row, dimension, drill)}</tr>" for row in table["rows"])
    share_note = ("share changed: of every line compared (each rule is checked on every line)" if dimension == "rule"
                  else "share changed: of the group's own lines")
    return (f'<section id="by-{dimension}"><h2>{TITLES[dimension]}</h2>'
            f'<table data-dimension="{dimension}"><thead><tr><th scope=col>{dimension}</th>{head}</tr></thead>'
            f'<tbody>{body}</tbody><tfoot><tr>{_cells(table["total"], dimension, set())}</tr></tfoot></table>'
            f"<p class=note>{share_note}; every line compared is in one row, so the rows add up to the total.</p></section>")


def _outcome(status: str, allowed: Decimal, carcs: Sequence[str]) -> str:
    return f"{status} {money(allowed)}" + (f" ({'/'.join(carcs)})" if carcs else "")


def drill_down(lines: Sequence[LineImpact]) -> str:
    """Each provider's changed lines, one collapsible section per provider (the provider
    table links to it)."""
    by_provider: dict[str, list[LineImpact]] = {}
    for line in lines:
        by_provider.setdefault(line.group("provider_npi"), []).append(line)
    parts = ['<section id="changed-lines"><h2>Changed lines by provider</h2>']
    for npi in sorted(by_provider, key=lambda n: (sum(x.difference for x in by_provider[n]), n)):
        mine = by_provider[npi]
        total = sum((x.difference for x in mine), Decimal("0.00"))
        rows = "".join(
            f"<tr><td>{escape(str(x.claim_id))}</td><td>{x.line_number}</td><td>{escape(x.procedure_code)}</td>"
            f"<td>{escape(x.service_date)}</td><td>{escape(_outcome(x.status_before, x.allowed_before, x.carcs_before))}</td>"
            f"<td>{escape(_outcome(x.status_after, x.allowed_after, x.carcs_after))}</td>"
            f"<td{' class=neg' if x.difference < 0 else ''}>{signed(x.difference)}</td>"
            f"<td>{escape(', '.join(x.rules))}</td></tr>" for x in mine)
        parts.append(f'<details id="{provider_anchor(npi)}" data-npi="{escape(npi)}"><summary>{escape(npi)}: '
                     f"{len(mine)} changed line{'s' if len(mine) != 1 else ''}, {signed(total)}</summary>"
                     "<table><thead><tr><th>claim</th><th>line</th><th>code</th><th>date of service</th>"
                     "<th>live</th><th>candidate</th><th>difference</th><th>rules</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table></details>")
    if not by_provider:
        parts.append("<p>No line is decided differently.</p>")
    parts.append("</section>")
    return "".join(parts)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d1d1d;max-width:1240px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555;margin:0 0 12px}.summary{font-size:16px;background:#f3f5f8;padding:10px 14px;border-radius:6px}
table{border-collapse:collapse;margin:4px 0}th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
th[scope=row],thead th:first-child{text-align:left;white-space:nowrap}tfoot td,tfoot th{font-weight:bold;border-top:2px solid #333}
.neg{color:#b03a2e}.note{color:#666;font-size:12px;margin:2px 0 0}
figure{margin:8px 0}figcaption{font-weight:bold;margin-bottom:4px}svg text{font:12px system-ui,sans-serif}
details{margin:4px 0}summary{cursor:pointer}details td,details th{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:24px}
"""


def html_page(impact: Impact, info: ReportInfo) -> str:
    total = impact.total
    drill = {line.group("provider_npi") for line in impact.changed_lines}
    summary = (f"{total.changed} of {total.lines} lines changed ({percent(total.share(total.lines))}); allowed "
               f"{money(total.allowed_before)} &rarr; {money(total.allowed_after)} ({signed(total.difference)}); "
               f"newly denied {total.newly_denied}, newly paid {total.newly_paid}, newly pended {total.newly_pended}")
    rules = [r for r in impact.rows("rule") if r.changed]
    providers = [r for r in impact.rows("provider_npi") if r.changed]
    more = len(providers) - CHART_ROWS
    charts = (bar_chart("Difference in allowed dollars by rule", rules)
              + bar_chart("Difference in allowed dollars by provider NPI", providers[:CHART_ROWS],
                          f"the {CHART_ROWS} providers with the largest differences of {len(providers)}; "
                          "all are in the table below" if more > 0 else ""))
    tables = "".join(table_html(impact, d, drill) for d in impact.dimensions if d in DIMENSIONS)
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>Monitor Mode impact: {escape(info.candidate_version)}</title><style>{STYLE}</style></head><body>"
            f"<h1>Monitor Mode impact of {escape(info.candidate_version)}</h1>"
            f"<p class=meta>live policy {escape(info.live_versions)}; claims: {escape(info.source)}</p>"
            f'<p class=summary id=summary>{summary}</p><div class=charts>{charts}</div>{tables}'
            f"{drill_down(impact.changed_lines)}</body></html>\n")
