"""Quiet hours: a daily span in the clinic's time zone (`22:00-07:00`) when queue alerts are not sent."""

from __future__ import annotations

import re
from datetime import datetime, time
from zoneinfo import ZoneInfo

_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_quiet_hours(text: str, source: str = "COVIU_AGENT_QUIET_HOURS") -> tuple[time, time]:
    """`HH:MM-HH:MM` (may cross midnight); ValueError names the setting and what was expected."""
    match = _SPAN.match(text)
    if match is None:
        raise ValueError(f"{source}={text!r}: expected HH:MM-HH:MM in the clinic's time zone, e.g. 22:00-07:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60) or (h1, m1) == (h2, m2):
        raise ValueError(f"{source}={text!r}: expected two different times of day between 00:00 and 23:59")
    return time(h1, m1), time(h2, m2)


def in_quiet_hours(text: str | None, now: datetime, zone: ZoneInfo) -> bool:
    """Whether `now` (aware) falls in the quiet hours `text` (None: never), read in the clinic's zone."""
    if not text:
        return False
    start, end = parse_quiet_hours(text)
    local = now.astimezone(zone).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end  # across midnight
