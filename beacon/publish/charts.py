"""Static SVG charts for the status page, drawn when the page is rendered.

Two shapes are enough: bars per bucket (stacked or side by side) and a
timeline of covered time and gaps. Each returns SVG markup (``markupsafe.Markup``)
whose text is escaped here; sizes are in a fixed viewBox that scales to the
page's width, so the charts fit a 375 px screen. No script, nothing fetched:
they show with JavaScript off. Every chart also has a ``<title>`` and the page
prints its figures as a table, so colour is never the only carrier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["COLOURS", "Series", "bar_chart", "timeline"]

WIDTH = 640
HEIGHT = 180
LEFT = 52  # room for the y labels
BOTTOM = 22  # room for the x labels
TOP = 8

#: Fill colours by series name, chosen to be told apart in greyscale too (with the legend's words).
COLOURS = {
    "quantum-hardware": "#1b6ac9",
    "quantum-simulator": "#7aa6e0",
    "os-fallback": "#d98b00",
    "pulses": "#2e7d32",
    "missed": "#c62828",
    "fallbacks": "#d98b00",
    "external missing": "#6a1b9a",
    "p50": "#1b6ac9",
    "p99": "#c62828",
}
_OTHER = "#888888"


@dataclass(frozen=True, slots=True)
class Series:
    """One named series of values, one per bucket."""

    name: str
    values: Sequence[float]


def _nice_max(value: float) -> float:
    """A round number at or above ``value`` for the top of the y axis."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for mult in (1, 2, 2.5, 5, 10):
        if step * mult >= value:
            return step * mult
    return step * 10


def _fmt(value: float) -> str:
    return f"{value:g}"


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    stacked: bool,
    unit: str = "",
    label_every: int = 1,
) -> Markup:
    """Bars per bucket: ``labels[i]`` names bucket i; every ``label_every``-th label is shown."""
    n = max(1, len(labels))
    plot_w = WIDTH - LEFT - 4
    plot_h = HEIGHT - TOP - BOTTOM
    if stacked:
        top = max((sum(s.values[i] for s in series) for i in range(len(labels))), default=0)
    else:
        top = max((v for s in series for v in s.values), default=0)
    y_max = _nice_max(top)
    slot = plot_w / n
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for frac in (0, 0.5, 1):
        y = TOP + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="14" '
            f'fill="#444">{escape(_fmt(y_max * frac) + unit)}</text>'
        )
    for i in range(len(labels)):
        x0 = LEFT + i * slot
        base = 0.0
        for j, s in enumerate(series):
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / y_max
            colour = COLOURS.get(s.name, _OTHER)
            if stacked:
                x, w = x0 + slot * 0.1, slot * 0.8
                y = TOP + plot_h - plot_h * base / y_max - h
                base += value
            else:
                w = slot * 0.8 / len(series)
                x, y = x0 + slot * 0.1 + j * w, TOP + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" '
                f'height="{max(h, 0.5):.1f}" fill="{colour}">'
                f"<title>{escape(f'{labels[i]}: {s.name} {_fmt(value)}{unit}')}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x0 + slot / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                f'font-size="14" fill="#444">{escape(labels[i])}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it is escaped above)


def timeline(
    title: str,
    *,
    start_ms: int,
    end_ms: int,
    since_ms: int | None,
    last_ms: int | None,
    gaps: Sequence[tuple[int, int]],
    ticks: Sequence[tuple[int, str]],
) -> Markup:
    """A band from ``start_ms`` to ``end_ms``: green where pulses came out, red in gaps,
    grey before the history began and after the last pulse; ``ticks`` label times."""
    height = 60
    plot_w = WIDTH - LEFT - 4
    span = max(1, end_ms - start_ms)

    def x_of(t: int) -> float:
        return LEFT + plot_w * (min(max(t, start_ms), end_ms) - start_ms) / span

    parts = [
        f'<svg class="chart timeline" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<rect x="{LEFT}" y="6" width="{plot_w}" height="26" fill="#e0e0e0">'
        "<title>no data</title></rect>",
    ]
    if since_ms is not None and last_ms is not None and last_ms >= start_ms:
        a, b = x_of(since_ms), x_of(last_ms)
        parts.append(
            f'<rect x="{a:.1f}" y="6" width="{max(b - a, 1):.1f}" height="26" '
            f'fill="{COLOURS["pulses"]}"><title>pulses published</title></rect>'
        )
    for before, after in gaps:
        if after < start_ms or before > end_ms:
            continue
        a, b = x_of(before), x_of(after)
        parts.append(
            f'<rect class="gap" x="{a:.1f}" y="6" width="{max(b - a, 2):.1f}" height="26" '
            f'fill="{COLOURS["missed"]}"><title>gap: no pulse between these times</title></rect>'
        )
    for t, text in ticks:
        x = x_of(t)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="32" y2="38" stroke="#444"/>'
            f'<text x="{x:.1f}" y="52" text-anchor="middle" font-size="14" '
            f'fill="#444">{escape(text)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it is escaped above)
