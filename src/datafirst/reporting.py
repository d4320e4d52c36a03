"""Small HTML helpers shared by the reports: inline SVG charts and number formatting.

Reports are single self-contained HTML files (no scripts, no web fonts, no network), so they
open inside a trusted research environment as they are.
"""

from __future__ import annotations

import html
import math
import textwrap

PAGE_STYLE = ("body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px}table{border-collapse:collapse;"
              "margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f2f1}"
              ".alert{color:#d4351c;font-weight:bold}.num{text-align:right}.internal{background:#d4351c;color:#fff;"
              "padding:.5rem 1rem;font-weight:bold}")


# Chart layout, in pixels. A label wraps at LABEL_CHARS characters so that it fits its column
# (12px text runs under 7px a character); it is never cut, and the row's tooltip holds it whole.
LABEL_WIDTH = 270
LABEL_CHARS = 38
PLOT_WIDTH = 300
LINE_HEIGHT = 14


def bar_chart(rows: list[tuple[str, float | None]], title: str, percent: bool = True, start: float = 0.0) -> str:
    """A horizontal bar chart as inline SVG (no scripts, no network: fine inside a TRE). Bars are
    to scale from a zero line: negative values extend left of it. `start` (percent charts) begins
    the axis above 0 so that close shares differ visibly (see axis_start); the axis then says where
    it starts."""
    values = [float(v) for _, v in rows if v is not None]
    low = start if percent else min([0.0, *values])
    high = 1.0 if percent else max([0.0, *values])
    scale = PLOT_WIDTH / (high - low) if high > low else 0.0
    zero = LABEL_WIDTH + scale * (max(low, 0.0) - low)  # where bars begin: 0, or the axis start
    parts, y = [], 20
    for label, value in rows:
        lines = textwrap.wrap(label, LABEL_CHARS, break_long_words=True) or [""]
        height = max(22, LINE_HEIGHT * len(lines) + 8)
        v = None if value is None else float(value)
        shown = "n/a" if v is None else (f"{v:.1%}" if percent else f"{v:,.0f}" if v == int(v) else f"{v:,.3f}")
        end = zero if v is None else LABEL_WIDTH + scale * (v - low)
        left, width = min(zero, end), abs(end - zero)
        colour = "#1d70b8" if (not percent or (v or 0) >= 0.9) else ("#f47738" if (v or 0) >= 0.5 else "#d4351c")
        text = "".join(f'<tspan x="0" dy="{0 if i == 0 else LINE_HEIGHT}">{html.escape(line)}</tspan>'
                       for i, line in enumerate(lines))
        parts.append(f'<g class="bar"><title>{html.escape(label)}: {shown}</title>'
                     f'<text class="label" x="0" y="{y + 13}" font-size="12">{text}</text>'
                     f'<rect x="{left:.1f}" y="{y}" width="{width:.1f}" height="16" fill="{colour}"/>'
                     f'<text class="value" x="{max(zero, end) + 5:.1f}" y="{y + 13}" font-size="12">{shown}</text></g>')
        y += height
    if low < 0 or start:  # the line bars start from, marked: 0 between negative and positive, or the cut axis
        parts.append(f'<line class="axis" x1="{zero:.1f}" y1="16" x2="{zero:.1f}" y2="{y}" stroke="#0b0c0c"/>'
                     f'<text class="axis" x="{zero:.1f}" y="{y + 14}" font-size="11" text-anchor="middle">'
                     f'{f"{low:.0%}" if percent else "0"}</text>')
        if percent:
            parts.append(f'<text class="axis" x="{LABEL_WIDTH + PLOT_WIDTH}" y="{y + 14}" font-size="11" '
                         'text-anchor="middle">100%</text>')
        y += 18
    described = f"{title} (axis from {start:.0%})" if percent and start else title
    return (f'<svg class="chart" role="img" aria-label="{html.escape(described)}" width="{LABEL_WIDTH + PLOT_WIDTH + 70}" '
            f'height="{y + 10}" xmlns="http://www.w3.org/2000/svg"><title>{html.escape(described)}</title>'
            + "".join(parts) + "</svg>")


def axis_start(shares: list[float | None]) -> float:
    """Where a percent chart's axis should start so that shares all near 100% (F1 of 98.1% and
    99.9%) differ visibly: a whole percent a quarter of the gap below the smallest; 0 when any
    share is under a half, where a cut axis would mislead more than it shows."""
    present = [s for s in shares if s is not None]
    if not present or min(present) < 0.5:
        return 0.0
    smallest = min(present)
    start = math.floor((smallest - (1 - smallest) / 4) * 100) / 100
    return start if start < smallest else start - 0.01  # all at 100%: still a bar to see


def significant(x: float | None, digits: int = 4) -> str:
    """A probability or other measure to `digits` significant digits (m and u: 0.8749, 1.089e-06)."""
    return "" if x is None else f"{x:.{digits}g}"


def pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1%}"
