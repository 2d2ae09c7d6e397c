"""The report as one view that Markdown, HTML and the message to staff render: rows, the "To do" groups,
the summary's sentences and the totals, which are read from the report (counted once by the audit,
reporting/audit_flags.py `count_totals`), never counted again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from reporting.audit_flags import FLAG_ORDER, TOTALS_KEYS, Flag, count_totals
from reporting.audit_report.text import (
    NONE_TEXT,
    _as_int,
    _fmt_count,
    _fmt_minutes,
    _fmt_setting,
    _fmt_span,
    _fmt_time,
    _number,
    _plural,
    _text,
    _window_day,
    _window_text,
)
from tools.timeparse import parse_time

# The report's `source` on the embedded sandbox (agent.settings.SANDBOX_SOURCE); its title then says DEMO.
SANDBOX_SOURCE = "sandbox"


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
