"""Server-rendered SVG charts: pure functions from numbers to markup.

No script, no ``<style>`` and no event attributes; colours come from classes styled by
/static/style.css (``svg.chart .bar``) with presentation attributes as a fallback. Every
piece of text is escaped. The chart names itself with ``<title>`` and ``<desc>`` (pointed to
by ``aria-labelledby``) and every bar carries its own ``<title>`` (a tooltip, read by
screen readers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 220
LEFT = 40  # room for the y-axis labels
RIGHT = 8
TOP = 14
BOTTOM = 30  # room for the month labels


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _day(value: date) -> str:
    return f"{value.day} {value:%b %Y}"


def weekly_bars(weeks: Sequence[tuple[date, int]], *, title: str, element_id: str) -> Markup:
    """A bar chart of (week start, count) pairs, oldest first, as an inline ``<svg>``."""
    ident = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in element_id) or "chart"
    counts = [max(0, int(count)) for _, count in weeks]
    total = sum(counts)
    top = nice_ceiling(max(counts, default=0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(weeks))
    bar_w = max(1.0, slot * 0.72)
    if weeks:
        busiest = max(range(len(weeks)), key=lambda n: (counts[n], n))
        summary = (
            f"{total} items from the week of {_day(weeks[0][0])} to the week of "
            f"{_day(weeks[-1][0])}; busiest week {_day(weeks[busiest][0])} "
            f"with {counts[busiest]}."
        )
    else:
        summary = "No weeks to show."
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{ident}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc">',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">{escape(summary)}</desc>',
    ]
    # Axis: a baseline, the top gridline and their labels.
    base_y = TOP + plot_h
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{base_y}" x2="{WIDTH - RIGHT}" y2="{base_y}" '
        'stroke="#52606d" stroke-width="1"/>'
    )
    parts.append(
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}" '
        'stroke="#d9e2ec" stroke-width="1" stroke-dasharray="3 3"/>'
    )
    parts.append(
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" fill="#52606d" '
        f'font-size="10">{top}</text>'
    )
    parts.append(
        f'<text x="{LEFT - 6}" y="{base_y + 4}" text-anchor="end" fill="#52606d" '
        'font-size="10">0</text>'
    )
    previous_month: int | None = None
    last_label = -10
    for n, ((start, _), count) in enumerate(zip(weeks, counts, strict=True)):
        height = plot_h * count / top
        x = LEFT + n * slot + (slot - bar_w) / 2
        y = base_y - height
        label = f"Week of {_day(start)}: {count} item{'s' if count != 1 else ''}"
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
            f'height="{height:.1f}" fill="#0f3d3e"><title>{escape(label)}</title></rect>'
        )
        if start.month != previous_month:
            previous_month = start.month
            if n - last_label < 3:  # too close to the previous label to be read
                continue
            last_label = n
            parts.append(
                f'<text x="{LEFT + n * slot:.1f}" y="{base_y + 16}" fill="#52606d" '
                f'font-size="10">{escape(f"{start:%b}")}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
