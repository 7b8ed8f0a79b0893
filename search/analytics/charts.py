"""Small server-rendered SVG charts for the admin (no JavaScript, nothing to load): each has
a <title> and a table of the same figures beside it for screen readers and copying."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD = 720, 220, 36
COLOURS = ("#2f6fdf", "#d9822b")


def line_chart(
    *, title: str, labels: Sequence[str], series: dict[str, Sequence[int]]
) -> SafeString:
    """One line per series over the labels (days), with a legend and the max on the axis."""
    top = max([1, *(max(values, default=0) for values in series.values())])
    count = max(len(labels), 2)
    step = (WIDTH - 2 * PAD) / (count - 1)

    def point(index: int, value: int) -> str:
        x = PAD + index * step
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / top
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="vt-chart" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#999"/>',
        f'<text x="4" y="{PAD}" font-size="11">{top}</text>',
        f'<text x="4" y="{HEIGHT - PAD}" font-size="11">0</text>',
    ]
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(point(i, v) for i, v in enumerate(values))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        parts.append(
            f'<text x="{PAD + index * 140}" y="{HEIGHT - 8}" font-size="12" '
            f'fill="{colour}">■ {escape(name)}</text>'
        )
    if labels:
        parts.append(f'<text x="{PAD}" y="{PAD - 12}" font-size="11">{escape(labels[0])}</text>')
        parts.append(
            f'<text x="{WIDTH - PAD}" y="{PAD - 12}" font-size="11" text-anchor="end">'
            f"{escape(labels[-1])}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every text above is escaped)


def bar_chart(
    *, title: str, labels: Sequence[str], series: dict[str, Sequence[float]]
) -> SafeString:
    """Grouped horizontal bars of rates (0..1), one group per label."""
    rows = len(labels)
    height = PAD + rows * 34 + 24
    top = max([0.0001, *(max(values, default=0) for values in series.values())])
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" role="img" class="vt-chart" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for row, label in enumerate(labels):
        y = PAD + row * 34
        parts.append(f'<text x="0" y="{y + 12}" font-size="12">{escape(label)}</text>')
        for index, (name, values) in enumerate(series.items()):
            width = (WIDTH - 260) * values[row] / top
            colour = COLOURS[index % len(COLOURS)]
            parts.append(
                f'<rect x="170" y="{y + index * 13}" width="{width:.1f}" height="11" '
                f'fill="{colour}"><title>{escape(name)}: {values[row]:.1%}</title></rect>'
            )
            parts.append(
                f'<text x="{175 + width:.1f}" y="{y + index * 13 + 10}" font-size="10">'
                f"{values[row]:.1%}</text>"
            )
    for index, name in enumerate(series):
        parts.append(
            f'<text x="{170 + index * 160}" y="{height - 6}" font-size="12" '
            f'fill="{COLOURS[index % len(COLOURS)]}">■ {escape(name)}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every text above is escaped)
