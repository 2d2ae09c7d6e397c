"""The end-of-day audit report as files: Markdown for the clinic manager, HTML with an inline pygal chart, and JSON.

Session names are untrusted (escaped everywhere); files hold patient data, so they are written atomically, mode 0o600.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import pygal
from markupsafe import Markup
from pygal.etree import etree as pygal_etree

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
HTML_TEMPLATE = "report.html.j2"

# Key order of the contract's JSON report (CONTRACT.md §4); keys it does not name follow, in input order.
REPORT_KEYS = ("team_id", "collection_id", "window", "generated_at", "totals", "sessions")
WINDOW_KEYS = ("since", "until")
TOTALS_KEYS = ("sessions", "missing_forms", "pending_forms", "overruns", "no_actual_end", "billable_minutes")
SESSION_KEYS = (
    "session_id",
    "session_name",
    "scheduled_start",
    "scheduled_end",
    "actual_start",
    "actual_end",
    "scheduled_minutes",
    "actual_minutes",
    "billable_minutes",
    "overrun_minutes",
    "submission_ids",
    "flags",
)
FLAG_ORDER = ("missing_form", "pending_form", "overrun", "no_actual_end")

# Up to this many sessions the chart has one pair of bars per session; beyond it, totals per time bucket.
PER_SESSION_CHART_MAX = 40
# At most this many buckets (two bars each) in the aggregate chart.
CHART_BUCKETS_MAX = 48
CHART_LABEL_MAX = 28

FILE_MODE = 0o600
DIR_MODE = 0o700
NONE_TEXT = "—"

_BASENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
# Markdown: line breaks and other control characters become spaces; `\` and `|` are escaped so table cells
# stay intact; `<`, `>`, backticks and brackets so names never become raw HTML, code spans or links.
_MD_TABLE = str.maketrans(
    {
        **{c: " " for c in [*range(0x20), 0x7F, 0x85, 0x2028, 0x2029]},
        **{ord(c): "\\" + c for c in "\\|<>`[]"},
    }
)
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_SVG_NS_DECL = re.compile(r'\sxmlns(?::\w+)?="[^"]*"')


# --- names -------------------------------------------------------------------------------------------


def report_basename(team_id: str, day_label: str) -> str:
    """`audit-<team_id>-<day_label>`; characters unsafe in a file name (`/`, `:`, spaces...) become `_`."""
    return f"audit-{_safe_name_part(team_id)}-{_safe_name_part(day_label)}"


def _safe_name_part(text: str) -> str:
    return _BASENAME_UNSAFE.sub("_", str(text)) or "_"


# --- the view both Markdown and HTML render -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One session, formatted for display (text is raw: each renderer escapes for its own format)."""

    session_id: str
    name: str
    scheduled: str
    actual: str
    scheduled_minutes: str
    actual_minutes: str
    billable_minutes: str
    overrun_minutes: str
    flags: tuple[str, ...]
    submission_ids: tuple[str, ...]
    # for the chart
    start: datetime | None
    scheduled_value: float | None
    actual_value: float | None

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def flags_text(self) -> str:
        return "; ".join(self.flags)

    @property
    def submissions_text(self) -> str:
        return ", ".join(self.submission_ids)


@dataclass(frozen=True, slots=True)
class View:
    title: str
    team_id: str
    collection_id: str
    window_text: str
    generated_text: str
    zone_name: str
    threshold_text: str
    with_date: bool  # times show the date too when the window spans more than one clinic-local day
    sentences: tuple[str, ...]
    narrative: tuple[str, ...]
    totals: tuple[tuple[str, str], ...]
    rows: tuple[Row, ...]
    flagged: tuple[Row, ...]


def _parse_time(value: Any) -> datetime | None:
    """An aware datetime from an ISO-8601 string (or datetime); naive times are taken as UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _fmt_time(value: Any, zone: ZoneInfo, *, with_date: bool) -> str:
    parsed = _parse_time(value)
    if parsed is None:
        return NONE_TEXT if value is None or value == "" else str(value)
    local = parsed.astimezone(zone)
    hh_mm = f"{local.hour:02d}:{local.minute:02d}"
    return f"{local.date().isoformat()} {hh_mm}" if with_date else hh_mm


def _fmt_span(start: Any, end: Any, zone: ZoneInfo, *, with_date: bool) -> str:
    first = _fmt_time(start, zone, with_date=with_date)
    if end is None or end == "":
        return f"{first} – no recorded end"
    return f"{first}–{_fmt_time(end, zone, with_date=with_date)}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt_number(value: Any) -> str:
    if value is None:
        return NONE_TEXT
    number = _number(value)
    if number is None:
        return str(value)
    if number == int(number):
        return f"{int(number):,}"
    return f"{number:,.1f}"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else (plural or singular + 's')}"


def _flag_words(threshold_text: str) -> dict[str, str]:
    return {
        "missing_form": "no intake form",
        "pending_form": "intake form not locked",
        "overrun": f"over time by more than {threshold_text} min",
        "no_actual_end": "no recorded end",
    }


def _flags(codes: Any, words: Mapping[str, str]) -> tuple[str, ...]:
    if not isinstance(codes, Iterable) or isinstance(codes, str | bytes):
        return ()
    present = [str(code) for code in codes]
    ordered = [code for code in FLAG_ORDER if code in present]
    ordered += [code for code in dict.fromkeys(present) if code not in FLAG_ORDER]
    return tuple(words.get(code, code.replace("_", " ")) for code in ordered)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _window_days(since: datetime | None, until: datetime | None, zone: ZoneInfo) -> date | None:
    """The clinic-local day the window covers, when it lies within one calendar day."""
    if since is None or until is None or until <= since:
        return None
    first = since.astimezone(zone).date()
    last = (until - timedelta(microseconds=1)).astimezone(zone).date()
    return first if first == last else None


def _window_text(since_raw: Any, until_raw: Any, zone: ZoneInfo) -> str:
    since, until = _parse_time(since_raw), _parse_time(until_raw)
    zone_name = str(zone.key)
    day = _window_days(since, until, zone)
    if since is not None and until is not None and day is not None:
        local_since, local_until = since.astimezone(zone), until.astimezone(zone)
        full_day = local_since.time() == local_until.time() == datetime.min.time()
        if full_day:
            return f"{day.isoformat()} ({zone_name})"
        return f"{day.isoformat()} {local_since:%H:%M}–{local_until:%H:%M} ({zone_name})"
    first = _fmt_time(since_raw, zone, with_date=True)
    last = _fmt_time(until_raw, zone, with_date=True)
    return f"{first} → {last} ({zone_name})"


def _totals(report: Mapping[str, Any], sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The report's totals; any the report lacks are counted from its sessions."""
    given = report.get("totals")
    given = given if isinstance(given, Mapping) else {}

    def count(flag: str) -> int:
        return sum(1 for s in sessions if flag in (s.get("flags") or ()))

    computed: dict[str, Any] = {
        "sessions": len(sessions),
        "missing_forms": count("missing_form"),
        "pending_forms": count("pending_form"),
        "overruns": count("overrun"),
        "no_actual_end": count("no_actual_end"),
        "billable_minutes": sum(_number(s.get("billable_minutes")) or 0 for s in sessions),
    }
    return {key: given.get(key, computed[key]) for key in TOTALS_KEYS}


def _as_int(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


def _sentences(totals: Mapping[str, Any], flagged: int, threshold_text: str) -> tuple[str, ...]:
    sessions = _as_int(totals["sessions"])
    if sessions == 0:
        return ("No sessions ended in this window.",)
    out = [
        f"{_plural(sessions, 'session')} ended in this window; "
        f"{flagged:,} {'needs' if flagged == 1 else 'need'} attention."
    ]
    missing, pending = _as_int(totals["missing_forms"]), _as_int(totals["pending_forms"])
    if missing == 0 and pending == 0:
        out.append("Every session has a locked intake form.")
    else:
        if missing:
            out.append(f"{_plural(missing, 'session')} {'has' if missing == 1 else 'have'} no intake form.")
        if pending:
            out.append(
                f"{_plural(pending, 'session')} {'has' if pending == 1 else 'have'} "
                "an intake form that is not locked yet."
            )
    overruns = _as_int(totals["overruns"])
    if overruns:
        out.append(f"{_plural(overruns, 'session')} ran more than {threshold_text} minutes past the scheduled end.")
    else:
        out.append(f"No session ran more than {threshold_text} minutes past the scheduled end.")
    no_end = _as_int(totals["no_actual_end"])
    if no_end:
        out.append(
            f"{_plural(no_end, 'session')} {'has' if no_end == 1 else 'have'} no recorded end time, "
            "so {} not billable yet.".format("it is" if no_end == 1 else "they are")
        )
    billable = _number(totals["billable_minutes"])
    if billable is not None:
        hours, minutes = divmod(round(billable), 60)
        duration = f" ({hours:,} h {minutes} min)" if hours else ""
        out.append(f"Billable time: {_fmt_number(billable)} minutes{duration}.")
    return tuple(out)


def _narrative(narrative: str | None) -> tuple[str, ...]:
    if not narrative or not narrative.strip():
        return ()
    paragraphs = re.split(r"\n\s*\n", narrative.replace("\r\n", "\n").strip())
    return tuple(" ".join(p.split()) for p in paragraphs if p.strip())


def _build_view(
    report: Mapping[str, Any], *, narrative: str | None, zone: ZoneInfo, overrun_threshold_minutes: float
) -> View:
    raw_sessions = report.get("sessions") or []
    sessions = [s for s in raw_sessions if isinstance(s, Mapping)]
    window = report.get("window")
    window = window if isinstance(window, Mapping) else {}
    since, until = _parse_time(window.get("since")), _parse_time(window.get("until"))
    with_date = _window_days(since, until, zone) is None
    threshold_text = _fmt_number(overrun_threshold_minutes)
    words = _flag_words(threshold_text)

    rows: list[tuple[tuple[int, datetime | int], Row]] = []
    for index, session in enumerate(sessions):
        start = _parse_time(session.get("scheduled_start"))
        submission_ids = session.get("submission_ids") or ()
        row = Row(
            session_id=_text(session.get("session_id")),
            name=_text(session.get("session_name")),
            scheduled=_fmt_span(
                session.get("scheduled_start"), session.get("scheduled_end"), zone, with_date=with_date
            ),
            actual=_fmt_span(session.get("actual_start"), session.get("actual_end"), zone, with_date=with_date),
            scheduled_minutes=_fmt_number(session.get("scheduled_minutes")),
            actual_minutes=_fmt_number(session.get("actual_minutes")),
            billable_minutes=_fmt_number(session.get("billable_minutes")),
            overrun_minutes=_fmt_number(session.get("overrun_minutes")),
            flags=_flags(session.get("flags"), words),
            submission_ids=tuple(str(s) for s in submission_ids) if not isinstance(submission_ids, str) else (),
            start=start,
            scheduled_value=_number(session.get("scheduled_minutes")),
            actual_value=_number(session.get("actual_minutes")),
        )
        # By scheduled start; sessions without a readable start keep their order, last.
        rows.append(((0, start) if start is not None else (1, index), row))
    rows.sort(key=lambda item: item[0])
    ordered = tuple(row for _, row in rows)
    flagged = tuple(row for row in ordered if row.flagged)

    totals = _totals(report, sessions)
    team_id = _text(report.get("team_id"))
    window_text = _window_text(window.get("since"), window.get("until"), zone)
    generated = report.get("generated_at")
    return View(
        title=f"End-of-day audit: team {team_id}, {window_text}",
        team_id=team_id,
        collection_id=_text(report.get("collection_id")) or NONE_TEXT,
        window_text=window_text,
        generated_text=f"{_fmt_time(generated, zone, with_date=True)} ({zone.key})" if generated else NONE_TEXT,
        zone_name=str(zone.key),
        threshold_text=threshold_text,
        with_date=with_date,
        sentences=_sentences(totals, len(flagged), threshold_text),
        narrative=_narrative(narrative),
        totals=(
            ("Sessions", _fmt_number(totals["sessions"])),
            ("Missing intake forms", _fmt_number(totals["missing_forms"])),
            ("Intake forms not locked", _fmt_number(totals["pending_forms"])),
            (f"Overruns (more than {threshold_text} min)", _fmt_number(totals["overruns"])),
            ("No recorded end", _fmt_number(totals["no_actual_end"])),
            ("Billable minutes", _fmt_number(totals["billable_minutes"])),
        ),
        rows=ordered,
        flagged=flagged,
    )


# --- Markdown ----------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell or heading: one line, no unescaped `|`, no raw HTML."""
    return text.translate(_MD_TABLE).strip()


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], out: list[str]) -> None:
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    out.extend("| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows)


FLAGGED_HEADER = ("Time", "Name", "Session ID", "Flags", "Overrun (min)", "Billable (min)", "Submissions")
ALL_HEADER = (
    "Time",
    "Actual",
    "Name",
    "Session ID",
    "Scheduled (min)",
    "Actual (min)",
    "Billable (min)",
    "Overrun (min)",
    "Flags",
    "Submissions",
)


def render_markdown(
    report: Mapping[str, Any], *, narrative: str | None, zone: ZoneInfo, overrun_threshold_minutes: float
) -> str:
    """The report for a clinic manager: summary, the sessions needing attention, then every session."""
    view = _build_view(report, narrative=narrative, zone=zone, overrun_threshold_minutes=overrun_threshold_minutes)
    out: list[str] = [f"# {_md(view.title)}", ""]
    out.append(f"Team: {_md(view.team_id)} · Intake collection: {_md(view.collection_id)}  ")
    out.append(
        f"Window: {_md(view.window_text)} · Times are in {_md(view.zone_name)} · Generated {view.generated_text}"
    )
    out += ["", "## Summary", "", " ".join(view.sentences), ""]
    for paragraph in view.narrative:
        out += [_md(paragraph), ""]
    _md_table(("Total", "Value"), view.totals, out)

    out += ["", "## Sessions needing attention", ""]
    if view.flagged:
        _md_table(
            FLAGGED_HEADER,
            (
                (
                    r.scheduled,
                    r.name,
                    r.session_id,
                    r.flags_text,
                    r.overrun_minutes,
                    r.billable_minutes,
                    r.submissions_text,
                )
                for r in view.flagged
            ),
            out,
        )
    else:
        out.append("No session needs attention.")

    out += ["", "## All sessions", ""]
    if view.rows:
        _md_table(
            ALL_HEADER,
            (
                (
                    r.scheduled,
                    r.actual,
                    r.name,
                    r.session_id,
                    r.scheduled_minutes,
                    r.actual_minutes,
                    r.billable_minutes,
                    r.overrun_minutes,
                    r.flags_text,
                    r.submissions_text,
                )
                for r in view.rows
            ),
            out,
        )
    else:
        out.append("No sessions in this window.")
    out.append("")
    return "\n".join(out)


# --- HTML and its chart --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # session names are untrusted data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _short(text: str, limit: int = CHART_LABEL_MAX) -> str:
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chart_data(
    rows: Sequence[Row], zone: ZoneInfo, with_date: bool
) -> tuple[list[str], list[float | None], list[float | None], str]:
    """Labels, scheduled and actual series, and a caption saying what is charted."""
    zone_name = str(zone.key)
    if len(rows) <= PER_SESSION_CHART_MAX:
        labels = [_short(f"{r.scheduled.split('–')[0]} {r.name}") for r in rows]
        caption = (
            f"Scheduled vs actual minutes for each of the {_plural(len(rows), 'session')}, in order of "
            f"scheduled start ({zone_name})."
        )
        if any(r.actual_value is None for r in rows):
            caption += " Sessions with no recorded end have no actual bar."
        return labels, [r.scheduled_value for r in rows], [r.actual_value for r in rows], caption

    charted = [r for r in rows if r.start is not None and r.scheduled_value is not None and r.actual_value is not None]
    local = [(r.start.astimezone(zone).replace(tzinfo=None), r) for r in charted if r.start is not None]
    grains: list[tuple[str, Any, str]] = [
        ("hour", lambda d: d.replace(minute=0, second=0, microsecond=0), "%H:00" if not with_date else "%m-%d %H:00"),
        ("day", lambda d: d.replace(hour=0, minute=0, second=0, microsecond=0), "%Y-%m-%d"),
        ("month", lambda d: d.replace(day=1, hour=0, minute=0, second=0, microsecond=0), "%Y-%m"),
        ("year", lambda d: d.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0), "%Y"),
    ]
    grain, floor, label_format = grains[-1]
    for candidate in grains:
        if len({candidate[1](d) for d, _ in local}) <= CHART_BUCKETS_MAX:
            grain, floor, label_format = candidate
            break
    sums: dict[datetime, list[float]] = {}
    for d, r in local:
        bucket = sums.setdefault(floor(d), [0.0, 0.0])
        bucket[0] += r.scheduled_value or 0.0
        bucket[1] += r.actual_value or 0.0
    keys = sorted(sums)[-CHART_BUCKETS_MAX:]
    left_out = len(rows) - len(local)
    caption = (
        f"Total scheduled vs actual minutes per {grain} of scheduled start ({zone_name}), summed over "
        f"{_plural(len(local), 'session')} with a recorded end."
    )
    if left_out:
        caption += f" {_plural(left_out, 'session')} without a recorded end (or readable times) are not charted."
    return (
        [k.strftime(label_format) for k in keys],
        [round(sums[k][0], 1) for k in keys],
        [round(sums[k][1], 1) for k in keys],
        caption,
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


def _chart(view: View, zone: ZoneInfo) -> tuple[Markup, str] | None:
    if not view.rows:
        return None
    labels, scheduled, actual, caption = _chart_data(view.rows, zone, view.with_date)
    if not labels:
        return None
    chart = pygal.Bar(
        js=[],  # the default is a tooltip script on a CDN; the page must render offline
        disable_xml_declaration=True,
        width=960,
        height=380,
        legend_at_bottom=True,
        y_title="minutes",
        x_label_rotation=35 if len(labels) > 8 else 0,
        truncate_label=-1,
        truncate_legend=-1,
        show_minor_x_labels=True,
        margin=16,
    )
    chart.x_labels = labels
    chart.add("Scheduled", scheduled)
    chart.add("Actual", actual)
    # The SVG is built by (lxml|xml).etree, which escapes every label; scripts and comments are stripped.
    return Markup(_inline_svg(chart, caption)), caption


def render_html(
    report: Mapping[str, Any], *, narrative: str | None, zone: ZoneInfo, overrun_threshold_minutes: float
) -> str:
    """The Markdown report's content as a self-contained page (no external URLs), with a pygal chart inline."""
    view = _build_view(report, narrative=narrative, zone=zone, overrun_threshold_minutes=overrun_threshold_minutes)
    chart = _chart(view, zone)
    template = _environment().get_template(HTML_TEMPLATE)
    return template.render(
        view=view,
        chart_svg=chart[0] if chart else None,
        chart_caption=chart[1] if chart else "",
    )


# --- JSON ----------------------------------------------------------------------------------------------


def _ordered(value: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    out = {key: value[key] for key in keys if key in value}
    out.update((key, item) for key, item in value.items() if key not in out)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable in a report: {type(value).__name__}")


def render_json(report: Mapping[str, Any]) -> str:
    """The report as JSON: indent 2, keys in the contract's order, strict (no NaN), trailing newline."""
    top = _ordered(report, REPORT_KEYS)
    if isinstance(top.get("window"), Mapping):
        top["window"] = _ordered(top["window"], WINDOW_KEYS)
    if isinstance(top.get("totals"), Mapping):
        top["totals"] = _ordered(top["totals"], TOTALS_KEYS)
    sessions = top.get("sessions")
    if isinstance(sessions, list | tuple):
        top["sessions"] = [_ordered(s, SESSION_KEYS) if isinstance(s, Mapping) else s for s in sessions]
    return json.dumps(_plain(top), indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"


# --- files ---------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to a 0o600 temp file beside `path`, fsync it, then rename it over `path`."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_dir(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_reports(
    report: Mapping[str, Any],
    out_dir: Path,
    day_label: str,
    *,
    narrative: str | None,
    zone: ZoneInfo,
    overrun_threshold_minutes: float,
) -> dict[str, Path]:
    """Render all three formats, then write `audit-<team_id>-<day_label>.{md,json,html}` into `out_dir`."""
    options: dict[str, Any] = {
        "narrative": narrative,
        "zone": zone,
        "overrun_threshold_minutes": overrun_threshold_minutes,
    }
    # Render everything first: a rendering error leaves no partial set of files behind.
    texts = {
        "md": render_markdown(report, **options),
        "json": render_json(report),
        "html": render_html(report, **options),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    base = report_basename(_text(report.get("team_id")), day_label)
    paths: dict[str, Path] = {}
    for suffix, text in texts.items():
        path = out_dir / f"{base}.{suffix}"
        _write_atomic(path, text)
        paths[suffix] = path
    _fsync_dir(out_dir)
    return paths
