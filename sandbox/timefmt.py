"""Coviu's timestamps: parse ISO-8601 or RFC-1123 input, format output as either.

Times without a zone are refused: a clinic's schedule is ambiguous without one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal

TimeFormat = Literal["iso", "rfc1123"]


class TimeParseError(ValueError):
    """A timestamp that is neither zoned ISO-8601 nor RFC-1123."""


def parse_time(value: str) -> datetime:
    """Parse a zoned ISO-8601 (`2026-11-25T10:00:00Z`) or RFC-1123 (`Wed, 25 Nov 2026 10:00:00 GMT`) time."""
    text = value.strip()
    if not text:
        raise TimeParseError("empty time")
    if text[0].isdigit():
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise TimeParseError(f"not an ISO-8601 time: {value!r}") from exc
        if parsed.tzinfo is None:
            raise TimeParseError(f"time has no zone (add Z or an offset such as +10:00): {value!r}")
        return parsed.astimezone(UTC)
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError) as exc:
        raise TimeParseError(f"not an ISO-8601 or RFC-1123 time: {value!r}") from exc
    if parsed.tzinfo is None:
        # email.utils returns a naive datetime for "-0000", which RFC 2822 defines as UTC.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(moment: datetime, time_format: TimeFormat = "iso") -> str:
    """`2026-11-25T10:00:00.000Z` (iso) or `Wed, 25 Nov 2026 10:00:00 GMT` (rfc1123)."""
    utc = moment.astimezone(UTC)
    if time_format == "rfc1123":
        return format_datetime(utc.replace(microsecond=0), usegmt=True)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def http_date(moment: datetime) -> str:
    """An HTTP-date (`Date`, `Retry-After`), e.g. `Wed, 25 Nov 2026 10:00:00 GMT`."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """`[day 00:00, day+1 00:00)` in UTC."""
    start = day_start(day)
    return start, start + timedelta(days=1)
