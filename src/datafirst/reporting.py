"""Small HTML helpers shared by the reports: inline SVG charts and number formatting.

Reports are single self-contained HTML files (no scripts, no web fonts, no network), so they
open inside a trusted research environment as they are.
"""

from __future__ import annotations

import html

PAGE_STYLE = ("body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px}table{border-collapse:collapse;"
              "margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f2f1}"
              ".alert{color:#d4351c;font-weight:bold}.num{text-align:right}.internal{background:#d4351c;color:#fff;"
              "padding:.5rem 1rem;font-weight:bold}")


def bar_chart(rows: list[tuple[str, float | None]], title: str, percent: bool = True) -> str:
    """A horizontal bar chart as inline SVG (no scripts, no network: fine inside a TRE)."""
    height = 22 * len(rows) + 30
    top = max((v or 0) for _, v in rows) if not percent and rows else 1.0
    parts = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}" width="640" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>']
    for i, (label, value) in enumerate(rows):
        y = 20 + 22 * i
        v = 0.0 if value is None else float(value)
        w = 0 if top == 0 else 380 * v / top
        shown = "n/a" if value is None else (f"{v:.1%}" if percent else f"{v:,.0f}")
        colour = "#1d70b8" if (not percent or v >= 0.9) else ("#f47738" if v >= 0.5 else "#d4351c")
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{html.escape(label)}</text>'
                     f'<rect x="200" y="{y}" width="{w:.1f}" height="16" fill="{colour}"/>'
                     f'<text x="{205 + w:.1f}" y="{y + 13}" font-size="12">{shown}</text>')
    parts.append("</svg>")
    return "".join(parts)


def pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1%}"
