"""Display text for the audit report: file names, untrusted text, numbers and times in the clinic's zone.

Text from outside (session names, problems, raw times) is shown as one line: secrets redacted, control and bidi
characters escaped (tools/textsafety.py). Each renderer escapes for its own format.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tools.textsafety import clean_line
from tools.timeparse import parse_time

NONE_TEXT = "—"


_BASENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SPACES = re.compile(r"\s+")


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
