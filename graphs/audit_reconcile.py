"""The audit's reconciliation, pure (no I/O, no LangGraph): Coviu's records read into the audit's rows (a listed
session, a summary's facts, a submission's session), the summary facts that can be cached for good, and each
session's report row with its flags (`reporting.audit_flags.Flag`) and the report's totals, per the contract's
definitions: unknown is never "no".

The nodes that fetch the records and keep them in side rows are graphs/audit.py; the report's files are
reporting/audit_report/, which reads the totals counted here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from graphs.audit_store import CachedSummary
from reporting.audit_flags import Flag, count_totals
from tools.timeparse import is_plausible, parse_time, utc_z
from tools.timeparse import utc_z_or_own as _iso_or_raw

REPORT_SCHEMA_VERSION = 2
DEFAULT_OVERRUN_THRESHOLD = 10.0
# An actual time more than this far from the session's schedule cannot be right (never billable).
PLAUSIBLE_DISTANCE = timedelta(days=1)
# A no-show (nobody entered, no end) fetched this long after its scheduled end is kept in the summary cache: by then
# the session has long been finished (Coviu takes no participants on a finished session) and nobody will enter.
NO_SHOW_SETTLED = timedelta(hours=12)


def one_decimal(minutes: float) -> float:
    return float(Decimal(str(minutes)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def threshold_of(state: Mapping[str, Any]) -> float:
    """The overrun threshold as given: 0 means 0 (only a missing value takes the default)."""
    value = state.get("overrun_threshold_minutes")
    return DEFAULT_OVERRUN_THRESHOLD if value is None else float(value)


def row_order(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row.get("scheduled_start") or "", row.get("session_id") or "")


def session_row(session: Any, since: datetime, until: datetime) -> dict[str, Any] | None:
    """The derived row for one listed session; None when it is outside the window or canceled.

    A listed session the audit cannot read (not an object, no id, unreadable schedule) is kept with a `problem`:
    it cannot be checked, and the report says so instead of dropping it.
    """
    if not isinstance(session, Mapping):
        return _unchecked_row(None, "", None, None, f"the session list held a {type(session).__name__}, not a session")
    if session.get("canceled_time"):
        return None
    raw_id = session.get("session_id")
    session_id = str(raw_id) if raw_id not in (None, "") else None
    name = str(session.get("session_name") or "")
    end = parse_time(session.get("end_time"))
    start = parse_time(session.get("start_time"))
    if end is None or start is None or not (is_plausible(start) and is_plausible(end)):
        raw = {"start_time": _raw(session.get("start_time")), "end_time": _raw(session.get("end_time"))}
        return _unchecked_row(session_id, name, None, None, f"scheduled times could not be read: {raw}")
    if not (since <= end < until):
        return None
    if session_id is None:
        return _unchecked_row(None, name, start, end, "the session list gave this session no id")
    row: dict[str, Any] = {
        "session_id": session_id,
        "session_name": name,
        "scheduled_start": utc_z(start),
        "scheduled_end": utc_z(end),
    }
    if session.get("actual_end_time") not in (None, ""):  # some accounts list it (Coviu's OAS): a no-show it is not
        row["listed_actual_end"] = True
        facts = summary_facts_from_list(session)
        if facts is not None:
            row["listed_facts"] = facts
    row["listed"] = listed_digest(session)
    return row


def summary_facts_from_list(session: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the summary would tell, when the listed session carries all of it: an actual end, and every participant
    (canceled ones too: the list is asked for them) with its `entry_time` field, null or a time. Anything missing or
    unreadable is not guessed: None, and the summary is fetched."""
    participants = session.get("participants")
    if not isinstance(participants, list):
        return None
    if not all(isinstance(p, Mapping) and "entry_time" in p for p in participants):
        return None
    facts = summary_facts({"actual_end_time": session.get("actual_end_time"), "participants": participants})
    return None if facts.get("unavailable") or not facts.get("actual_end") else facts


# What the list shows about a person rather than the session's timing: left out of the digest (a renamed patient
# does not refetch a summary, and no name goes into a digest).
LISTED_PERSONAL = re.compile(r"(name|picture|phone|email)", re.IGNORECASE)


def _listed_facts(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every scalar the list shows, at any depth (objects and lists flattened by path), less personal fields."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if not LISTED_PERSONAL.search(str(key)):
                yield from _listed_facts(inner, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            yield from _listed_facts(inner, f"{path}.{i}")
    else:
        yield path, value


def listed_digest(session: Mapping[str, Any]) -> str:
    """A digest of everything the list shows about this session but names (times under any name, state, status,
    update time, its participants, at any depth): a cached summary is reused only while it is unchanged (a
    correction upstream, a new state, a later update time: fetched again)."""
    facts = dict(_listed_facts(session, ""))
    text = json.dumps(facts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _unchecked_row(
    session_id: str | None, name: str, start: datetime | None, end: datetime | None, problem: str
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "session_name": name,
        "scheduled_start": utc_z(start) or None,
        "scheduled_end": utc_z(end) or None,
        "problem": problem,
    }


def _raw(value: Any) -> str | None:
    return None if value is None else str(value)[:64]


def summary_facts(summary: Any) -> dict[str, Any]:
    """actual_start (earliest participant entry) and actual_end from a summary, or why they cannot be known.

    `unavailable` is set when the summary is not a summary object or a time in it cannot be read: the session is
    then "could not be checked", never "no recorded end".
    """
    if not isinstance(summary, Mapping):
        return unavailable(f"the summary is a {type(summary).__name__}, not an object")
    participants = summary.get("participants") or []
    if not isinstance(participants, list):
        return unavailable(f"the summary's participants are a {type(participants).__name__}, not a list")
    entries = []
    for participant in participants:
        if not isinstance(participant, Mapping):
            return unavailable("a participant in the summary is not an object")
        raw_entry = participant.get("entry_time")
        if raw_entry in (None, ""):
            continue
        entered = parse_time(raw_entry)
        if entered is None:
            return unavailable(f"a participant's entry_time could not be read: {_raw(raw_entry)!r}")
        entries.append(entered)
    raw_end = summary.get("actual_end_time")
    actual_end = parse_time(raw_end)
    if raw_end not in (None, "") and actual_end is None:
        return unavailable(f"actual_end_time could not be read: {_raw(raw_end)!r}")
    earliest = min(entries, key=_sort_key) if entries else None
    return {
        "actual_start": _iso_or_raw(earliest),
        "actual_end": _iso_or_raw(actual_end),
    }


def _sort_key(moment: datetime) -> float:
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):
        return float("-inf") if moment.year < 2000 else float("inf")


def unavailable(problem: str) -> dict[str, Any]:
    return {"actual_start": None, "actual_end": None, "unavailable": problem}


def cacheable(row: Mapping[str, Any], facts: Mapping[str, Any], fetched_at: datetime) -> CachedSummary | None:
    """The facts to keep for good, or None. What can no longer change: a readable summary with an actual end and
    plausible times, or a no-show (nobody entered, no end) fetched `NO_SHOW_SETTLED` after its scheduled end, when
    the session has long been finished. An unavailable summary, one with implausible times, a call someone entered
    that has no end yet, and a no-show too fresh to be sure of are fetched again."""
    if facts.get("unavailable"):
        return None
    scheduled_start, scheduled_end = parse_time(row.get("scheduled_start")), parse_time(row.get("scheduled_end"))
    if scheduled_start is None or scheduled_end is None:
        return None
    if not facts.get("actual_end"):
        nobody_entered = not facts.get("actual_start")
        if nobody_entered and fetched_at - scheduled_end >= NO_SHOW_SETTLED and not row.get("listed_actual_end"):
            return {"actual_start": None, "actual_end": None}
        return None
    actual_end = parse_time(facts["actual_end"])
    if actual_end is None:
        return None
    actual_start = parse_time(facts.get("actual_start")) or scheduled_start
    if implausible_reason(scheduled_start, scheduled_end, actual_start, actual_end):
        return None
    return {"actual_start": facts.get("actual_start"), "actual_end": str(facts["actual_end"])}


def submission_session_id(submission: Mapping[str, Any]) -> str | None:
    """The session a submission names: `session_id`, `sessionId`, or a nested `session` object."""
    for key in ("session_id", "sessionId"):
        value = submission.get(key)
        if value not in (None, ""):
            return str(value)
    nested = submission.get("session")
    if isinstance(nested, Mapping):
        for key in ("session_id", "id"):
            if nested.get(key) not in (None, ""):
                return str(nested[key])
    elif isinstance(nested, str) and nested:
        return nested
    return None


def implausible_reason(
    scheduled_start: datetime, scheduled_end: datetime, actual_start: datetime, actual_end: datetime | None
) -> str | None:
    """Why actual times cannot be right (outside 2000–2100, a day away from the schedule, end before start)."""
    for label, moment in (("actual start", actual_start), ("actual end", actual_end)):
        if moment is None:
            continue
        if not is_plausible(moment):
            return f"{label} is outside the years 2000–2100"
        if moment < scheduled_start - PLAUSIBLE_DISTANCE or moment > scheduled_end + PLAUSIBLE_DISTANCE:
            return f"{label} is more than a day away from the schedule"
    if actual_end is not None and actual_end < actual_start:
        return "actual end is before actual start"
    return None


def reconcile_row(
    row: Mapping[str, Any], facts: Mapping[str, Any], submissions: list[list[Any]], threshold: float
) -> dict[str, Any]:
    """One session's report row per the contract's definitions. Unknown is never "no": a row that could not be
    checked gets `summary_unavailable`, times that cannot be right get `implausible_times`; neither is billable.
    """
    flags: list[str] = []
    if not submissions:
        flags.append(Flag.MISSING_FORM.value)
    elif not any(locked for _, locked in submissions):
        flags.append(Flag.PENDING_FORM.value)
    out: dict[str, Any] = {
        "session_id": row["session_id"],
        "session_name": row["session_name"],
        "scheduled_start": row["scheduled_start"],
        "scheduled_end": row["scheduled_end"],
        "actual_start": None,
        "actual_end": None,
        "scheduled_minutes": None,
        "actual_minutes": None,
        "billable_minutes": None,
        "overrun_minutes": None,
        "submission_ids": sorted(str(s) for s, _ in submissions),
        "flags": flags,
        "problem": None,
    }
    scheduled_start = parse_time(row["scheduled_start"])
    scheduled_end = parse_time(row["scheduled_end"])
    if scheduled_start is not None and scheduled_end is not None:
        out["scheduled_minutes"] = one_decimal((scheduled_end - scheduled_start).total_seconds() / 60)
    problem = row.get("problem") or facts.get("unavailable")
    if problem or scheduled_start is None or scheduled_end is None:
        flags.append(Flag.SUMMARY_UNAVAILABLE.value)
        out["problem"] = problem or "the session's schedule could not be read"
        return out
    if not facts:
        flags.append(Flag.SUMMARY_UNAVAILABLE.value)
        out["problem"] = "the summary was not fetched"
        return out
    actual_start = parse_time(facts.get("actual_start")) or scheduled_start
    actual_end = parse_time(facts.get("actual_end"))
    reason = implausible_reason(scheduled_start, scheduled_end, actual_start, actual_end)
    if reason:
        flags.append(Flag.IMPLAUSIBLE_TIMES.value)
        out["problem"] = reason
        out["raw_times"] = {"actual_start": facts.get("actual_start"), "actual_end": facts.get("actual_end")}
        return out
    out["actual_start"] = utc_z(actual_start)
    if actual_end is None:
        flags.append(Flag.NO_ACTUAL_END.value)
        return out
    actual_minutes = one_decimal(max(0.0, (actual_end - actual_start).total_seconds() / 60))
    overrun = one_decimal(max(0.0, (actual_end - scheduled_end).total_seconds() / 60))
    out.update(
        actual_end=utc_z(actual_end),
        actual_minutes=actual_minutes,
        billable_minutes=math.ceil(actual_minutes),
        overrun_minutes=overrun,
    )
    if overrun > threshold:
        flags.append(Flag.OVERRUN.value)
    return out


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's totals, counted once here (`reporting.audit_flags.count_totals`): the report reads them."""
    return count_totals(rows)
