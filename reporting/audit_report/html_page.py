"""The report as a self-contained HTML page (Jinja2, autoescaped) with an inline pygal chart: no scripts,
comments or external URLs, so it renders offline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import pygal
from markupsafe import Markup
from pygal.etree import etree as pygal_etree
from pygal.style import Style

from reporting.audit_flags import Flag
from reporting.audit_report.text import _plural
from reporting.audit_report.view import ALL_HEADER, Narrative, Row, View, _build_view, _has

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
HTML_TEMPLATE = "report.html.j2"


# Up to this many sessions the chart has one row of bars per session (labels on the vertical axis, one line
# each, so they never overlap); beyond it, totals per time bucket (hour of the day, else day, month, year).
PER_SESSION_CHART_MAX = 24
CHART_BUCKETS_MAX = 48
# At most this many x-axis labels are written (the others are minor ticks), so rotated labels never collide.
CHART_X_LABELS_MAX = 24
CHART_LABEL_MAX = 32
# Neutral colours for scheduled and actual time; the accent marks overruns. Red is never used: it reads "bad".
CHART_COLORS = ("#a9b8c9", "#2f5d8a", "#d9822b")
CHART_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"


_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_SVG_NS_DECL = re.compile(r'\sxmlns(?::\w+)?="[^"]*"')


# --- HTML and its chart --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # names, problems and raw times are untrusted data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _short(text: str, limit: int = CHART_LABEL_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class ChartData:
    labels: list[str]
    scheduled: list[float | None]
    actual: list[float | None]
    overrun: list[float | None]
    caption: str
    per_session: bool


def _overrun_bar(row: Row) -> float | None:
    """The accent bar: the time past the scheduled end of a session flagged as an overrun at the threshold in force
    (a 1- or 5-minute overtime under a 10-minute threshold is not an overrun: its actual bar shows it)."""
    if row.overrun_value is None or Flag.OVERRUN in row.codes:
        return row.overrun_value
    return 0.0


def _chart_data(rows: Sequence[Row], zone: ZoneInfo, day: date | None, threshold_text: str = "10") -> ChartData:
    """What the chart shows: one row per session when there are few, else totals per time bucket."""
    zone_name = str(zone.key)
    overrun_words = (
        f"Overrun is the time past the scheduled end of a session more than {threshold_text} min late (the threshold); "
        "shorter overtime shows in its actual bar only."
    )
    if len(rows) <= PER_SESSION_CHART_MAX:
        labels = [_short(f"{r.scheduled.split('–')[0]} {r.name}".strip()) for r in rows]
        caption = (
            f"Scheduled, actual and overrun minutes of each of the {_plural(len(rows), 'session')}, in order of "
            f"scheduled start ({zone_name}). {overrun_words}"
        )
        missing = sum(1 for r in rows if r.actual_value is None)
        if missing:
            caption += f" {_plural(missing, 'session')} without a usable end {_has(missing)} no actual bar."
        return ChartData(
            labels,
            [r.scheduled_value for r in rows],
            [r.actual_value for r in rows],
            [_overrun_bar(r) for r in rows],
            caption,
            per_session=True,
        )

    local = [(r.start.astimezone(zone).replace(tzinfo=None), r) for r in rows if r.start is not None]
    step_hour = timedelta(hours=1)
    grains: list[tuple[str, Callable[[datetime], datetime], Callable[[datetime], datetime]]] = [
        ("hour", lambda d: d.replace(minute=0, second=0, microsecond=0), lambda d: d + step_hour),
        ("day", lambda d: d.replace(hour=0, minute=0, second=0, microsecond=0), lambda d: d + timedelta(days=1)),
        (
            "month",
            lambda d: d.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
            lambda d: (d + timedelta(days=32)).replace(day=1),
        ),
        (
            "year",
            lambda d: d.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0),
            lambda d: d.replace(year=d.year + 1),
        ),
    ]
    keys: list[datetime] = []
    grain, floor = grains[-1][0], grains[-1][1]
    for name, floor_fn, step in grains:
        present = sorted({floor_fn(d) for d, _ in local})
        if not present:
            break
        # Every bucket from the first to the last, so quiet hours show as gaps, if they fit.
        span: list[datetime] = [present[0]]
        while span[-1] < present[-1] and len(span) <= CHART_BUCKETS_MAX:
            span.append(step(span[-1]))
        if len(span) <= CHART_BUCKETS_MAX:
            grain, floor, keys = name, floor_fn, span
            break
        if len(present) <= CHART_BUCKETS_MAX:
            grain, floor, keys = name, floor_fn, present
            break
    else:
        keys = sorted({floor(d) for d, _ in local})[-CHART_BUCKETS_MAX:]
    sums: dict[datetime, list[float]] = {k: [0.0, 0.0, 0.0] for k in keys}
    for d, r in local:
        bucket = sums.get(floor(d))
        if bucket is not None:
            bucket[0] += r.scheduled_value or 0.0
            bucket[1] += r.actual_value or 0.0
            bucket[2] += _overrun_bar(r) or 0.0

    def label(key: datetime) -> str:
        if grain == "hour":
            return f"{key:%H}:00" if day is not None and key.date() == day else f"{key:%m-%d %H}:00"
        return key.strftime({"day": "%Y-%m-%d", "month": "%Y-%m"}.get(grain, "%Y"))

    charted = sum(1 for d, _ in local if floor(d) in sums)
    caption = (
        f"Total scheduled, actual and overrun minutes per {grain} of scheduled start ({zone_name}), "
        f"over {_plural(charted, 'session')}. {overrun_words}"
    )
    missing = sum(1 for r in rows if r.actual_value is None)
    if missing:
        caption += f" {_plural(missing, 'session')} without a usable end add scheduled minutes only."
    if len(rows) - charted:
        caption += f" {_plural(len(rows) - charted, 'session')} outside the charted range are left out."
    return ChartData(
        [label(k) for k in keys],
        [round(sums[k][0], 1) for k in keys],
        [round(sums[k][1], 1) for k in keys],
        [round(sums[k][2], 1) for k in keys],
        caption,
        per_session=False,
    )


def _inline_svg(chart: Any, label: str) -> str:
    """The chart's SVG for inlining in HTML: no scripts, comments or URLs, so it renders offline."""
    root = chart.render_tree()
    for parent in list(root.iter()):
        for child in list(parent):
            tag = child.tag
            local_name = tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""
            if tag is pygal_etree.Comment or tag is pygal_etree.PI or local_name == "script":
                parent.remove(child)
    for element in root.iter():
        tag = element.tag
        if isinstance(tag, str) and tag.rsplit("}", 1)[-1] == "style" and element.text:
            element.text = _CSS_COMMENT.sub("", element.text)
    root.set("role", "img")
    root.set("aria-label", label)
    svg = str(pygal_etree.tostring(root, encoding="unicode"))
    # Inline <svg> in HTML gets its namespace from the parser; the declaration is only a URL-shaped string.
    opening, rest = svg.split(">", 1)
    return _SVG_NS_DECL.sub("", opening) + ">" + rest


def _chart_style() -> Style:
    return Style(
        background="white",
        plot_background="white",
        foreground="#1f2328",
        foreground_strong="#1f2328",
        foreground_subtle="#d0d7de",
        opacity="1",
        opacity_hover=".85",
        colors=CHART_COLORS,
        font_family=CHART_FONT,
        label_font_family=CHART_FONT,
        major_label_font_family=CHART_FONT,
        legend_font_family=CHART_FONT,
        value_font_family=CHART_FONT,
        tooltip_font_family=CHART_FONT,
        title_font_family=CHART_FONT,
        label_font_size=12,
        major_label_font_size=12,
        legend_font_size=13,
    )


def _chart(view: View, zone: ZoneInfo) -> tuple[Markup, str] | None:
    if not view.rows:
        return None
    data = _chart_data(view.rows, zone, view.day, view.threshold_text)
    if not data.labels:
        return None
    options: dict[str, Any] = {
        "js": [],  # the default is a tooltip script on a CDN; the page must render offline
        "disable_xml_declaration": True,
        "style": _chart_style(),
        "width": 960,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 3,
        "truncate_label": -1,
        "truncate_legend": -1,
        "margin": 16,
        "print_values": False,
        "value_formatter": lambda value: f"{value:,g}",  # axis: 40,000
    }
    if data.per_session:
        # Horizontal bars: one line of label per session, first session at the top.
        chart = pygal.HorizontalBar(height=max(200, 110 + 48 * len(data.labels)), x_title="minutes", **options)
        labels, series = data.labels[::-1], [s[::-1] for s in (data.scheduled, data.actual, data.overrun)]
    else:
        every = max(1, math.ceil(len(data.labels) / CHART_X_LABELS_MAX))
        chart = pygal.Bar(
            height=400,
            y_title="minutes",
            x_label_rotation=0 if len(data.labels) <= 12 else 45,
            x_labels_major_every=every,
            show_minor_x_labels=every == 1,
            **options,
        )
        labels, series = data.labels, [data.scheduled, data.actual, data.overrun]
    chart.x_labels = labels
    for title, values in zip(("Scheduled", "Actual", "Overrun"), series, strict=True):
        chart.add(title, values)
    # The SVG is built by (lxml|xml).etree, which escapes every label; scripts and comments are stripped.
    return Markup(_inline_svg(chart, data.caption)), data.caption


def render_html(
    report: Mapping[str, Any], *, narrative: Narrative | str | None, zone: ZoneInfo, overrun_threshold_minutes: float
) -> str:
    """The Markdown report's content as a self-contained page (no external URLs), with a pygal chart inline."""
    view = _build_view(report, narrative=narrative, zone=zone, overrun_threshold_minutes=overrun_threshold_minutes)
    chart = _chart(view, zone)
    template = _environment().get_template(HTML_TEMPLATE)
    return template.render(
        view=view,
        all_header=ALL_HEADER,
        chart_svg=chart[0] if chart else None,
        chart_caption=chart[1] if chart else "",
    )
