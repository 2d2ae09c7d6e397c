"""The audit's window arithmetic, in one place: the audited [since, until) from a day or explicit bounds (the
clinic's time zone), checked before any request; the wider spans the audit lists sessions and submissions over; and
back, the day a window is (the rerun command staff are told).

Used by the audit graph (`prepare`, the list nodes), `agent.runs` (thread ids, the failure message), the CLI's
`audit` and `recordings` (a bad window named before anything is sent) and `agent.notify`. No LangGraph here: the
CLI checks a window without loading the graphs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tools.errors import RunInputError
from tools.timeparse import is_plausible, parse_iso, parse_time

MAX_WINDOW = timedelta(days=31)
SESSION_LOOKBACK = timedelta(hours=24)  # longest session we expect: widen the API's start filter by this
FORM_SLACK = timedelta(days=7)  # forms filed up to a week before or after the window still count


class WindowError(RunInputError):
    """A date or window the audit cannot use (exit 2, nothing sent)."""


def resolve_window(
    zone: ZoneInfo, now: datetime, *, day: str | None = None, since: str | None = None, until: str | None = None
) -> tuple[datetime, datetime, str]:
    """(since, until, label) per the contract: a clinic-local day, or an explicit [since, until)."""
    if day is not None and not day.strip():
        raise WindowError("--date: expected YYYY-MM-DD, 'today' or 'yesterday', got an empty value")
    if day and (since or until):
        raise WindowError("give either a date or since/until, not both")
    if since or until:
        if not (since and until):
            raise WindowError("since and until go together: give both")
        start = _parse_bound("since", since, zone)
        end = _parse_bound("until", until, zone)
        if end <= start:
            raise WindowError(f"until ({until}) must be after since ({since})")
        if end - start > MAX_WINDOW:
            raise WindowError("the window is longer than 31 days; audit a month at a time")
        return start, end, start.astimezone(zone).date().isoformat()
    today = now.astimezone(zone).date()
    if day is None or day.strip().lower() == "yesterday":
        the_day = today - timedelta(days=1)
    elif day.strip().lower() == "today":
        the_day = today
    else:
        the_day = parse_day("--date", day)
    if not PLAUSIBLE_YEARS_FOR_DAYS[0] <= the_day.year <= PLAUSIBLE_YEARS_FOR_DAYS[1]:
        raise WindowError(f"--date: expected a day between the years 2000 and 2100, got {day!r}")
    start, end = day_window(the_day, zone)
    return start, end, the_day.isoformat()


def day_window(the_day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """A clinic day: midnight to midnight in its time zone (23 or 25 hours on a daylight-saving change)."""
    return (
        datetime.combine(the_day, time(0), tzinfo=zone),
        datetime.combine(the_day + timedelta(days=1), time(0), tzinfo=zone),
    )


def day_of_window(since: datetime, until: datetime, zone: Any) -> date | None:
    """The clinic day a window is (midnight to the next midnight in `zone`: `day_window`), or None for any other
    window. Compared as instants: where daylight saving skips midnight (Chile, Cuba, Lebanon) a day starts at 01:00."""
    the_day = since.astimezone(zone).date()
    start, end = day_window(the_day, zone)
    if since.timestamp() == start.timestamp() and until.timestamp() == end.timestamp():
        return the_day
    return None


def window_of(window: Mapping[str, str]) -> tuple[datetime, datetime]:
    """The audited [since, until) a run resolved (its state's `window`)."""
    since, until = parse_time(window.get("since")), parse_time(window.get("until"))
    if since is None or until is None:
        raise WindowError("the audit window is missing from state")
    return since, until


def sessions_span(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """What the session list is asked for: sessions starting up to `SESSION_LOOKBACK` before the window (a long
    session that ends in it), to its end; the rows are then kept by their scheduled end."""
    return since - SESSION_LOOKBACK, until


def submissions_span(since: datetime, until: datetime, now: datetime) -> tuple[datetime, datetime]:
    """What the submission list is asked for: forms filed up to `FORM_SLACK` before the window or after it (but no
    later than now, or the window's end when that is later)."""
    return since - FORM_SLACK, min(until + FORM_SLACK, max(now, until))


PLAUSIBLE_YEARS_FOR_DAYS = (2000, 2100)
_DAY_SHAPE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def parse_day(flag: str, value: str) -> date:
    """A calendar day given as YYYY-MM-DD, checked as a date: `2026-02-30` has the shape but is no day."""
    text = value.strip()
    shape = _DAY_SHAPE.match(text)
    if shape is None:
        raise WindowError(f"{flag}: expected YYYY-MM-DD, 'today' or 'yesterday', got {value!r}")
    try:
        return date(*(int(part) for part in shape.groups()))
    except ValueError as exc:  # e.g. "day is out of range for month"
        raise WindowError(f"{flag}: {text} is not a day of the calendar ({exc}); expected YYYY-MM-DD") from None


def _parse_bound(name: str, value: str, zone: ZoneInfo) -> datetime:
    parsed = parse_iso(value)
    if parsed is None:
        raise WindowError(f"--{name}: expected an ISO-8601 date-time, got {value!r}")
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
    if not is_plausible(parsed):
        raise WindowError(f"--{name}: expected a time between the years 2000 and 2100, got {value!r}")
    return parsed
