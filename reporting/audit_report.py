"""The end-of-day audit report as files: Markdown for the clinic manager, HTML with an inline pygal chart, and JSON.

The JSON is the audit's report as given (keys in the contract's order). Markdown and HTML render one view of it:
a banner when the report is incomplete, a summary, a "To do" section grouped by what the manager has to do, a
chart, then every session. Text from outside (session names, problems, raw times, the clinic's name) is untrusted:
control and bidi characters are shown escaped, Markdown metacharacters and bare URLs are neutralised, and the HTML
template autoescapes. Files hold patient data, so they are written atomically and owner-only
(tools/private_files.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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

from reporting.audit_flags import FLAG_ORDER, TOTALS_KEYS, Flag, count_totals
from tools.private_files import private_dir, write_private
from tools.textsafety import clean_line, redact_value
from tools.timeparse import parse_time

# The report's `source` on the embedded sandbox (agent.settings.SANDBOX_SOURCE); its title then says DEMO.
SANDBOX_SOURCE = "sandbox"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
HTML_TEMPLATE = "report.html.j2"

# Key order of the contract's JSON report (README: "The audit report"); keys it does not name follow, in input order.
REPORT_KEYS = (
    "schema_version",
    "complete",
    "source",
    "team_id",
    "collection_id",
    "window",
    "generated_at",
    "totals",
    "sessions",
)
WINDOW_KEYS = ("since", "until")
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
    "problem",
)

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

NONE_TEXT = "—"

_BASENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SPACES = re.compile(r"\s+")
# Markdown: `\` and `|` are escaped so table cells stay intact; `<`, `>`, backticks, brackets, `*` and `_` so
# text never becomes raw HTML, a code span, a link or emphasis.
_MD_ESCAPES = str.maketrans({ord(c): "\\" + c for c in "\\|<>`[]*_"})
# A line that would start a heading, a quote, a list or a thematic break when it begins a paragraph.
_MD_LEADING = re.compile(r"^([#>]|[-+=~](?=[\s=~-]|$)|\d+[.)](?=\s|$))")
# Bare URLs and `www.` hosts become links in GitHub-flavoured Markdown: defang them (`https[:]//`, `www[.]`).
_MD_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)|\b(www)\.")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_SVG_NS_DECL = re.compile(r'\sxmlns(?::\w+)?="[^"]*"')


# --- names -------------------------------------------------------------------------------------------


def report_basename(team_id: str, day_label: str) -> str:
    """`audit-<team_id>-<day_label>`; characters unsafe in a file name (`/`, `:`, spaces...) become `_`."""
    return f"audit-{_safe_name_part(team_id)}-{_safe_name_part(day_label)}"


def _safe_name_part(text: str) -> str:
    return _BASENAME_UNSAFE.sub("_", str(text)) or "_"


# --- untrusted text and numbers --------------------------------------------------------------------------


def _text(value: Any) -> str:
    """Text from outside as one display line: secrets redacted, control and bidi characters shown escaped."""
    if value is None:
        return ""
    return clean_line(_SPACES.sub(" ", str(value)).strip())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt_minutes(value: Any) -> str:
    """Measured minutes (scheduled, actual, overrun): always one decimal, so columns read alike."""
    number = _number(value)
    if number is None:
        return NONE_TEXT if value is None else _text(value)
    return f"{number:,.1f}"


def _fmt_count(value: Any) -> str:
    """Counts and billable minutes (whole minutes by definition): integers with thousands separators."""
    number = _number(value)
    if number is None:
        return NONE_TEXT if value is None else _text(value)
    return f"{math.ceil(number) if number != int(number) else int(number):,}"


def _fmt_setting(value: float) -> str:
    """A threshold as the user gave it: `10`, `7.5`."""
    return f"{int(value):,}" if value == int(value) else f"{value:,.1f}"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else (plural or singular + 's')}"


def _as_int(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


# --- times -----------------------------------------------------------------------------------------------


def _fmt_time(value: Any, zone: ZoneInfo, *, day: date | None, also: date | None = None) -> str:
    """`HH:MM` in the clinic's zone, with the date when it is neither the report's `day` nor `also`."""
    parsed = parse_time(value)
    if parsed is None:
        return NONE_TEXT if value is None or value == "" else _text(value)
    local = parsed.astimezone(zone)
    hh_mm = f"{local.hour:02d}:{local.minute:02d}"
    return hh_mm if local.date() in (day, also) else f"{local.date().isoformat()} {hh_mm}"


def _fmt_span(start: Any, end: Any, zone: ZoneInfo, *, day: date | None) -> str:
    """`09:00–09:30`; a time off the report's day carries its date (the end's: unless it is the start's date)."""
    first = _fmt_time(start, zone, day=day)
    if end is None or end == "":
        return f"{first} – no recorded end"
    parsed_start = parse_time(start)
    start_day = parsed_start.astimezone(zone).date() if parsed_start is not None else None
    return f"{first}–{_fmt_time(end, zone, day=day, also=start_day)}"


def _window_day(since: datetime | None, until: datetime | None, zone: ZoneInfo) -> date | None:
    """The clinic-local day the window covers, when it lies within one calendar day."""
    if since is None or until is None or until <= since:
        return None
    first = since.astimezone(zone).date()
    last = (until - timedelta(microseconds=1)).astimezone(zone).date()
    return first if first == last else None


def _window_text(since_raw: Any, until_raw: Any, zone: ZoneInfo) -> str:
    since, until = parse_time(since_raw), parse_time(until_raw)
    zone_name = str(zone.key)
    day = _window_day(since, until, zone)
    if since is not None and until is not None and day is not None:
        local_since, local_until = since.astimezone(zone), until.astimezone(zone)
        if local_since.time() == local_until.time() == datetime.min.time():
            return f"{day.isoformat()} ({zone_name})"
        return f"{day.isoformat()} {local_since:%H:%M}–{local_until:%H:%M} ({zone_name})"
    first = _fmt_time(since_raw, zone, day=None)
    last = _fmt_time(until_raw, zone, day=None)
    return f"{first} → {last} ({zone_name})"


# --- the view both Markdown and HTML render -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One session, formatted for display (text is cleaned but not escaped: each renderer escapes its format)."""

    session_id: str
    name: str
    scheduled: str
    actual: str
    scheduled_minutes: str
    actual_minutes: str
    billable_minutes: str
    overrun_minutes: str
    codes: tuple[str, ...]
    flags: tuple[str, ...]
    submission_ids: tuple[str, ...]
    problem: str
    raw_start: str
    raw_end: str
    # for the chart
    start: datetime | None
    scheduled_value: float | None
    actual_value: float | None
    overrun_value: float | None

    @property
    def flagged(self) -> bool:
        return bool(self.codes)

    @property
    def flags_text(self) -> str:
        return "; ".join(self.flags)

    @property
    def submissions_text(self) -> str:
        return ", ".join(self.submission_ids)


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    numeric: bool = False
    code: bool = False  # ids: monospace


@dataclass(frozen=True, slots=True)
class TodoGroup:
    """One action of the "To do" section: the sessions it concerns, as table rows of display text."""

    code: str
    title: str
    action: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]

    @property
    def heading(self) -> str:
        return f"{self.title} ({_plural(len(self.rows), 'session')})"


@dataclass(frozen=True, slots=True)
class View:
    title: str
    source: str  # "sandbox" or the integrated account
    clinic: str
    team_id: str
    collection_id: str
    window_text: str
    generated_text: str
    zone_name: str
    cache_text: str  # how many summaries came from the cache; empty when the report does not say
    threshold_text: str
    incomplete: str  # the banner's text; empty when the report is complete
    incomplete_detail: str
    sentences: tuple[str, ...]
    narrative: tuple[str, ...]
    narrative_note: str  # who wrote the paragraph and that its figures were checked, or why it was left out
    totals: tuple[tuple[str, str], ...]
    todo: tuple[TodoGroup, ...]
    rows: tuple[Row, ...]
    flagged: tuple[Row, ...]
    day: date | None


def _flag_words(threshold_text: str) -> dict[str, str]:
    return {
        Flag.MISSING_FORM: "no intake form",
        Flag.PENDING_FORM: "intake form not locked",
        Flag.OVERRUN: f"over time by more than {threshold_text} min",
        Flag.NO_ACTUAL_END: "no recorded end",
        Flag.SUMMARY_UNAVAILABLE: "could not be checked",
        Flag.IMPLAUSIBLE_TIMES: "implausible times",
    }


def _codes(value: Any) -> tuple[str, ...]:
    """The row's flag codes: known ones in FLAG_ORDER, then any others as given (cleaned)."""
    if not isinstance(value, Iterable) or isinstance(value, str | bytes | Mapping):
        return ()
    present = [_text(code) for code in value]
    ordered = [code for code in FLAG_ORDER if code in present]
    return tuple(ordered + [c for c in dict.fromkeys(present) if c and c not in FLAG_ORDER])


def _totals(report: Mapping[str, Any], sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The totals the audit counted (`reporting.audit_flags.count_totals`, when it reconciled), read, never counted
    again; only a report that lacks them (not written by the audit) is counted here, by that same function."""
    given = report.get("totals")
    given = given if isinstance(given, Mapping) else {}
    if all(key in given for key in TOTALS_KEYS):
        return {key: given[key] for key in TOTALS_KEYS}
    counted = count_totals(sessions)
    return {key: given.get(key, counted[key]) for key in TOTALS_KEYS}


def _has(count: int, singular: str = "has", plural: str = "have") -> str:
    return singular if count == 1 else plural


def _sentences(totals: Mapping[str, Any], flagged: int, threshold_text: str) -> tuple[str, ...]:
    sessions = _as_int(totals["sessions"])
    if sessions == 0:
        return ("No sessions were scheduled to end in this window.",)
    # the audit takes the sessions whose scheduled end is in the window (one that ran early may have ended before it)
    were = "was" if sessions == 1 else "were"
    out = [
        f"{_plural(sessions, 'session')} {were} scheduled to end in this window; "
        f"{flagged:,} {_has(flagged, 'needs', 'need')} attention."
    ]
    unavailable = _as_int(totals["summary_unavailable"])
    if unavailable:
        out.append(
            f"{_plural(unavailable, 'session')} could not be checked (the summary could not be read), "
            "so the totals below leave {} out.".format("it" if unavailable == 1 else "them")
        )
    missing, pending = _as_int(totals["missing_forms"]), _as_int(totals["pending_forms"])
    if missing == 0 and pending == 0:
        out.append("Every session has a locked intake form.")
    else:
        if missing:
            out.append(f"{_plural(missing, 'session')} {_has(missing)} no intake form.")
        if pending:
            out.append(f"{_plural(pending, 'session')} {_has(pending)} an intake form that is not locked yet.")
    overruns = _as_int(totals["overruns"])
    if overruns:
        out.append(f"{_plural(overruns, 'session')} ran more than {threshold_text} minutes past the scheduled end.")
    else:
        out.append(f"No session ran more than {threshold_text} minutes past the scheduled end.")
    no_end = _as_int(totals["no_actual_end"])
    if no_end:
        out.append(
            f"{_plural(no_end, 'session')} {_has(no_end)} no recorded end time, so {{}} not billable yet.".format(
                "it is" if no_end == 1 else "they are"
            )
        )
    implausible = _as_int(totals["implausible_times"])
    if implausible:
        out.append(
            f"{_plural(implausible, 'session')} {_has(implausible)} recorded times that cannot be right, "
            "so {} not billable.".format("it is" if implausible == 1 else "they are")
        )
    billable = _number(totals["billable_minutes"])
    if billable is not None:
        hours, minutes = divmod(round(billable), 60)
        duration = f" ({hours:,} h {minutes} min)" if hours else ""
        out.append(f"Billable time: {_fmt_count(billable)} minutes{duration}.")
    return tuple(out)


def summary_line(report: Mapping[str, Any]) -> str:
    """One line for a terminal: `8 sessions: 2 missing forms, 1 pending form, 1 overrun, ...`."""
    raw = report.get("sessions")
    sessions = [s for s in raw if isinstance(s, Mapping)] if isinstance(raw, list | tuple) else []
    t = _totals(report, sessions)
    parts = [
        _plural(_as_int(t["missing_forms"]), "missing form"),
        _plural(_as_int(t["pending_forms"]), "pending form"),
        _plural(_as_int(t["overruns"]), "overrun"),
        f"{_as_int(t['no_actual_end']):,} without an end",
    ]
    if _as_int(t["summary_unavailable"]):
        parts.append(f"{_as_int(t['summary_unavailable']):,} could not be checked")
    if _as_int(t["implausible_times"]):
        parts.append(f"{_as_int(t['implausible_times']):,} with implausible times")
    billable = _number(t["billable_minutes"])
    minutes = _plural(_as_int(billable), "billable minute") if billable is not None else "billable minutes unknown"
    return f"{_plural(_as_int(t['sessions']), 'session')}: {', '.join(parts)}; {minutes}"


@dataclass(frozen=True)
class Narrative:
    """The optional paragraph a model wrote from the report's aggregates (graphs/audit_narrative.py `narrate`): the
    model's name, and the text (every figure in it checked against the report's totals), or why it was left out."""

    model: str
    text: str | None = None
    left_out: str | None = None

    @property
    def note(self) -> str:
        if self.text:
            return (
                f"The paragraph above was written by the model {self.model} from the report's totals only; "
                "every figure in it was checked against them."
            )
        if self.left_out:
            return f"A summary paragraph by the model {self.model} was left out: {self.left_out}."
        return ""


def _narrative_note(narrative: Narrative | str | None) -> str:
    return _text(narrative.note) if isinstance(narrative, Narrative) else ""


def _narrative(narrative: Narrative | str | None) -> tuple[str, ...]:
    if isinstance(narrative, Narrative):
        narrative = narrative.text
    if not narrative or not narrative.strip():
        return ()
    paragraphs = re.split(r"\n\s*\n", narrative.replace("\r\n", "\n").strip())
    return tuple(_text(p) for p in paragraphs if p.strip())


_TIME, _NAME, _ID = Column("Time"), Column("Name"), Column("Session ID", code=True)


def _todo_groups(flagged: Sequence[Row], threshold_text: str) -> tuple[TodoGroup, ...]:
    specs: dict[Flag, tuple[str, str, tuple[Column, ...], Callable[[Row], tuple[str, ...]]]] = {
        Flag.MISSING_FORM: (
            "Chase intake forms",
            "No intake form names these sessions: ask the patient (or the clinician) to fill it in.",
            (_TIME, _NAME, _ID),
            lambda r: (r.scheduled, r.name, r.session_id),
        ),
        Flag.PENDING_FORM: (
            "Lock pending forms",
            "An intake form exists but none is locked: review it and lock it.",
            (_TIME, _NAME, _ID, Column("Submissions", code=True)),
            lambda r: (r.scheduled, r.name, r.session_id, r.submissions_text),
        ),
        Flag.OVERRUN: (
            "Check overruns",
            f"These sessions ran more than {threshold_text} minutes past the scheduled end: check the billing "
            "and the schedule.",
            (_TIME, Column("Actual"), _NAME, _ID, Column("Overrun (min)", True), Column("Billable (min)", True)),
            lambda r: (r.scheduled, r.actual, r.name, r.session_id, r.overrun_minutes, r.billable_minutes),
        ),
        Flag.NO_ACTUAL_END: (
            "Check missing ends",
            "The session's summary has no end time, so it is not billable yet: check whether the call ended.",
            (_TIME, Column("Actual"), _NAME, _ID),
            lambda r: (r.scheduled, r.actual, r.name, r.session_id),
        ),
        Flag.SUMMARY_UNAVAILABLE: (
            "Could not be checked",
            "The session's summary could not be read, so nothing about it is counted (not billable, not "
            '"no recorded end"): run the audit again later.',
            (_TIME, _NAME, _ID, Column("Problem")),
            lambda r: (r.scheduled, r.name, r.session_id, r.problem or NONE_TEXT),
        ),
        Flag.IMPLAUSIBLE_TIMES: (
            "Implausible times",
            "The recorded times cannot be right, so they are not billable: check the session in Coviu.",
            (_TIME, _NAME, _ID, Column("Recorded start"), Column("Recorded end")),
            lambda r: (r.scheduled, r.name, r.session_id, r.raw_start, r.raw_end),
        ),
    }
    groups: list[TodoGroup] = []
    for code, (title, action, columns, cells) in specs.items():
        rows = tuple(cells(r) for r in flagged if code in r.codes)
        if rows:
            groups.append(TodoGroup(code, title, action, columns, rows))
    others = tuple(
        (r.scheduled, r.name, r.session_id, "; ".join(c for c in r.codes if c not in specs))
        for r in flagged
        if any(c not in specs for c in r.codes)
    )
    if others:
        groups.append(
            TodoGroup(
                "other",
                "Other flags",
                "Flags this report does not know: see the JSON report.",
                (_TIME, _NAME, _ID, Column("Flags")),
                others,
            )
        )
    return tuple(groups)


def _row(session: Mapping[str, Any], zone: ZoneInfo, day: date | None, words: Mapping[str, str]) -> Row:
    codes = _codes(session.get("flags"))
    raw_times = session.get("raw_times")
    raw_times = raw_times if isinstance(raw_times, Mapping) else {}
    submission_ids = session.get("submission_ids")
    if Flag.SUMMARY_UNAVAILABLE in codes:
        actual = "not checked"
    elif Flag.IMPLAUSIBLE_TIMES in codes and session.get("actual_end") is None:
        actual = "implausible (see To do)"
    else:
        actual = _fmt_span(session.get("actual_start"), session.get("actual_end"), zone, day=day)
    return Row(
        session_id=_text(session.get("session_id")) or NONE_TEXT,
        name=_text(session.get("session_name")),
        scheduled=_fmt_span(session.get("scheduled_start"), session.get("scheduled_end"), zone, day=day),
        actual=actual,
        scheduled_minutes=_fmt_minutes(session.get("scheduled_minutes")),
        actual_minutes=_fmt_minutes(session.get("actual_minutes")),
        billable_minutes=_fmt_count(session.get("billable_minutes")),
        overrun_minutes=_fmt_minutes(session.get("overrun_minutes")),
        codes=codes,
        flags=tuple(words.get(code, code.replace("_", " ")) for code in codes),
        submission_ids=tuple(_text(s) for s in submission_ids) if isinstance(submission_ids, list | tuple) else (),
        problem=_text(session.get("problem")),
        raw_start=_text(raw_times.get("actual_start")) or NONE_TEXT,
        raw_end=_text(raw_times.get("actual_end")) or NONE_TEXT,
        start=parse_time(session.get("scheduled_start")),
        scheduled_value=_number(session.get("scheduled_minutes")),
        actual_value=_number(session.get("actual_minutes")),
        overrun_value=_number(session.get("overrun_minutes")),
    )


def _cache_text(report: Mapping[str, Any]) -> str:
    """How many summaries came from the cache, when the report says."""
    if "summaries_from_cache" not in report:
        return ""
    cached = _as_int(report.get("summaries_from_cache"))
    return (
        f"Summaries from the cache: {cached} (each unchanged in the session list since it was read; "
        "`--refresh` reads every one again); the others were read now"
    )


def _build_view(
    report: Mapping[str, Any], *, narrative: Narrative | str | None, zone: ZoneInfo, overrun_threshold_minutes: float
) -> View:
    raw_sessions = report.get("sessions")
    sessions = [s for s in raw_sessions if isinstance(s, Mapping)] if isinstance(raw_sessions, list | tuple) else []
    window = report.get("window")
    window = window if isinstance(window, Mapping) else {}
    day = _window_day(parse_time(window.get("since")), parse_time(window.get("until")), zone)
    threshold_text = _fmt_setting(overrun_threshold_minutes)
    words = _flag_words(threshold_text)

    keyed: list[tuple[tuple[int, datetime | int], Row]] = []
    for index, session in enumerate(sessions):
        row = _row(session, zone, day, words)
        # By scheduled start; sessions without a readable start keep their order, last.
        keyed.append(((0, row.start) if row.start is not None else (1, index), row))
    keyed.sort(key=lambda item: item[0])
    rows = tuple(row for _, row in keyed)
    flagged = tuple(row for row in rows if row.flagged)

    totals = _totals(report, sessions)
    unavailable = _as_int(totals["summary_unavailable"])
    incomplete = incomplete_detail = ""
    if report.get("complete") is False:
        incomplete = (
            f"Incomplete: {_plural(unavailable, 'session')} could not be checked"
            if unavailable
            else "Incomplete: some records could not be read"
        )
        incomplete_detail = (
            "{} could not be read, so {} left out of the totals and the billable minutes. {} listed under "
            '"Could not be checked"; run the audit again later.'
        ).format(
            *(("Its summary", "it is", "It is") if unavailable == 1 else ("Their summaries", "they are", "They are"))
        )
    team_id = _text(report.get("team_id"))
    clinic = _text(report.get("clinic_name")) or f"team {team_id}"
    window_text = _window_text(window.get("since"), window.get("until"), zone)
    generated = report.get("generated_at")
    source = _text(report.get("source"))
    # a person opening a report made on the embedded sandbox sees at once that it is demo data, not the clinic's
    demo = "DEMO (embedded sandbox, not a real clinic): " if source == SANDBOX_SOURCE else ""
    return View(
        title=f"{demo}End-of-day audit: {clinic}, {window_text}",
        source=source or NONE_TEXT,
        clinic=clinic,
        team_id=team_id,
        collection_id=_text(report.get("collection_id")) or NONE_TEXT,
        window_text=window_text,
        generated_text=f"{_fmt_time(generated, zone, day=None)} ({zone.key})" if generated else NONE_TEXT,
        zone_name=str(zone.key),
        cache_text=_cache_text(report),
        threshold_text=threshold_text,
        incomplete=incomplete,
        incomplete_detail=incomplete_detail,
        sentences=_sentences(totals, len(flagged), threshold_text),
        narrative=_narrative(narrative),
        narrative_note=_narrative_note(narrative),
        totals=(
            ("Sessions", _fmt_count(totals["sessions"])),
            ("Missing intake forms", _fmt_count(totals["missing_forms"])),
            ("Intake forms not locked", _fmt_count(totals["pending_forms"])),
            (f"Overruns (more than {threshold_text} min)", _fmt_count(totals["overruns"])),
            ("No recorded end", _fmt_count(totals["no_actual_end"])),
            ("Could not be checked", _fmt_count(totals["summary_unavailable"])),
            ("Implausible times", _fmt_count(totals["implausible_times"])),
            ("Billable minutes", _fmt_count(totals["billable_minutes"])),
        ),
        todo=_todo_groups(flagged, threshold_text),
        rows=rows,
        flagged=flagged,
        day=day,
    )


# --- Markdown ----------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Text safe in Markdown (a table cell, a heading, a paragraph): no unescaped `|`, raw HTML, code span,
    link, leading block marker or bare URL."""
    escaped = _MD_URL.sub(lambda m: f"{m.group(1)}[:]" if m.group(1) else f"{m.group(2)}[.]", text)
    escaped = escaped.translate(_MD_ESCAPES).strip()
    return _MD_LEADING.sub(r"\\\1", escaped)


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], out: list[str]) -> None:
    out.append("| " + " | ".join(_md(h) for h in header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    out.extend("| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows)


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


def _all_cells(r: Row) -> tuple[str, ...]:
    return (
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


def render_markdown(
    report: Mapping[str, Any], *, narrative: Narrative | str | None, zone: ZoneInfo, overrun_threshold_minutes: float
) -> str:
    """The report for a clinic manager: banner, summary, what to do (grouped by action), then every session."""
    view = _build_view(report, narrative=narrative, zone=zone, overrun_threshold_minutes=overrun_threshold_minutes)
    out: list[str] = [f"# {_md(view.title)}", ""]
    if view.incomplete:
        out += [f"> **{_md(view.incomplete)}.** {_md(view.incomplete_detail)}", ""]
    out.append(
        f"Source: {_md(view.source)} · Team: {_md(view.team_id)} · Intake collection: {_md(view.collection_id)}  "
    )
    out.append(
        f"Window: {_md(view.window_text)} · Times are in {_md(view.zone_name)} · Generated {_md(view.generated_text)}"
    )
    if view.cache_text:
        out[-1] += "  "
        out.append(_md(view.cache_text))
    from_list = _as_int(report.get("summaries_from_list"))
    if from_list:  # summaries not needed: the session list carried their facts
        out += [
            "",
            f"Summaries not needed: {_fmt_count(from_list)} (the session list carried the actual end and the "
            "participants' entry times).",
        ]
    out += ["", "## Summary", "", " ".join(_md(s) for s in view.sentences), ""]
    for paragraph in view.narrative:
        out += [_md(paragraph), ""]
    if view.narrative_note:
        out += [f"*{_md(view.narrative_note)}*", ""]
    _md_table(("Total", "Value"), view.totals, out)

    out += ["", "## To do", ""]
    if not view.todo:
        out.append("Nothing to do: no session needs attention.")
    for group in view.todo:
        out += [f"### {_md(group.heading)}", "", _md(group.action), ""]
        _md_table([c.title for c in group.columns], group.rows, out)
        out.append("")

    out += ["", "## All sessions", ""]
    if view.rows:
        _md_table(ALL_HEADER, (_all_cells(r) for r in view.rows), out)
    else:
        out.append("No sessions in this window.")
    out.append("")
    return "\n".join(out)


# --- the message to staff ----------------------------------------------------------------------------

MESSAGE_ROWS_PER_GROUP = 10  # sessions listed per To-do group in a message (the report has them all)


def render_message(
    report: Mapping[str, Any],
    *,
    zone: ZoneInfo,
    overrun_threshold_minutes: float,
    names: bool,
    rerun: str | None = None,
    report_path: str | None = None,
) -> tuple[str, str]:
    """The audit's message to staff (title, Markdown body): the totals and the To-do list, for email or chat.
    `names`: the channel may carry patient data (the sessions' names); else time and session id only. `rerun`: the
    command that runs the audit again (for an incomplete report)."""
    view = _build_view(report, narrative=None, zone=zone, overrun_threshold_minutes=overrun_threshold_minutes)
    title = view.title if not view.incomplete else f"INCOMPLETE: {view.title}"
    out = [f"**{summary_line(report)}**", ""]
    if view.incomplete:
        out += [f"**{view.incomplete}.** {view.incomplete_detail}", ""]
        if rerun:
            out += [f"Run it again: `{rerun}`", ""]
    out += [f"- {label}: {value}" for label, value in view.totals]
    out += ["", "**To do**", ""]
    if not view.todo:
        out.append("Nothing to do: no session needs attention.")
    for group in view.todo:
        out.append(f"- **{group.heading}**: {group.action}")
        for row in [r for r in view.flagged if group.code in r.codes][:MESSAGE_ROWS_PER_GROUP]:
            who = f"{row.name} · " if names and row.name else ""
            out.append(f"    - {row.scheduled} · {who}`{row.session_id}`")
        if len(group.rows) > MESSAGE_ROWS_PER_GROUP:
            out.append(f"    - and {len(group.rows) - MESSAGE_ROWS_PER_GROUP} more (see the report)")
    if report_path:
        out += ["", f"The full report: `{report_path}` (on the machine that ran the audit)."]
    return title, "\n".join(out) + "\n"


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
    """The report as JSON: indent 2, keys in the contract's order, strict (no NaN), trailing newline; redacted."""
    top = _ordered(report, REPORT_KEYS)
    if isinstance(top.get("window"), Mapping):
        top["window"] = _ordered(top["window"], WINDOW_KEYS)
    if isinstance(top.get("totals"), Mapping):
        top["totals"] = _ordered(top["totals"], TOTALS_KEYS)
    sessions = top.get("sessions")
    if isinstance(sessions, list | tuple):
        top["sessions"] = [_ordered(s, SESSION_KEYS) if isinstance(s, Mapping) else s for s in sessions]
    document = redact_value(_plain(top))
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"


# --- files ---------------------------------------------------------------------------------------------


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
    narrative: Narrative | str | None,
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
    private_dir(out_dir)
    base = report_basename(_text(report.get("team_id")), day_label)
    paths: dict[str, Path] = {}
    for suffix, text in texts.items():
        path = out_dir / f"{base}.{suffix}"
        write_private(path, text)
        paths[suffix] = path
    _fsync_dir(out_dir)
    return paths
