"""The one time module: reading times from Coviu and Truto (ISO-8601, RFC-1123, epoch seconds or milliseconds),
writing them into state, requests and reports, showing them in the clinic's zone, and naming time zones.

`parse_time` never raises. A time without a zone is read as UTC and said once per run at WARNING; a value that
cannot be read is None, and callers turn None into "unknown", never into "no".
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger(__name__)

# Actual times outside these years cannot be right for a clinic's session (and stay clear of datetime's limits).
PLAUSIBLE_YEARS = (2000, 2100)
# An epoch number at or above this is milliseconds (1e11 seconds is the year 5138).
_EPOCH_MS_THRESHOLD = 100_000_000_000
_EPOCH_PATTERN = re.compile(r"^[+-]?\d+(\.\d+)?$")

_warned_naive = False


def reset_warnings() -> None:
    """Forget that the naive-time warning was given (a new run, or a test)."""
    global _warned_naive
    _warned_naive = False


def _assume_utc(moment: datetime, raw: Any) -> datetime:
    global _warned_naive
    if not _warned_naive:
        _warned_naive = True
        log.warning("a time without a time zone was read as UTC (e.g. %r); check the account's time format", raw)
    return moment.replace(tzinfo=UTC)


def _from_epoch(number: float) -> datetime | None:
    if not math.isfinite(number):
        return None
    seconds = number / 1000 if abs(number) >= _EPOCH_MS_THRESHOLD else number
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_time(value: Any, *, allow_naive: bool = True) -> datetime | None:
    """An aware datetime from any time form an upstream may send, or None when it cannot be read.

    `allow_naive=False` refuses a time without a zone (arguments we send must carry one).
    """
    try:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                return _assume_utc(value, value) if allow_naive else None
            return value
        if isinstance(value, int | float):
            return _from_epoch(float(value))
        if not isinstance(value, str):
            return None
        text = value.strip()
        if not text or len(text) > 64:
            return None
        if _EPOCH_PATTERN.fullmatch(text):
            return _from_epoch(float(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            try:
                parsed = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
        if parsed.tzinfo is None:
            return _assume_utc(parsed, value) if allow_naive else None
        # Normalising proves the offset is usable (year 1 minus an offset overflows).
        parsed.astimezone(UTC)
        return parsed
    except (OverflowError, ValueError, TypeError, OSError):
        return None


def parse_iso(text: str) -> datetime | None:
    """ISO-8601 as a person types it in a flag or a file (`Z` for UTC), or None when it is not ISO-8601. Nothing is
    assumed about a time without a zone: it comes back naive, and the caller says what that means (an error, or the
    clinic's zone)."""
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


# asctime, the third HTTP-date format: no zone, GMT by definition (RFC 9110 §5.6.7), e.g. `Wed Oct 21 07:28:00 2026`
_ASCTIME = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$")


def parse_http_date(text: str) -> datetime | None:
    """An HTTP date (RFC 9110 §5.6.7: IMF-fixdate `Wed, 21 Oct 2026 07:28:00 GMT`, RFC 850, or asctime, which is
    GMT), or None when it is not one or names no zone."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None and _ASCTIME.fullmatch(text.strip()):
        return when.replace(tzinfo=UTC)
    return when if when.tzinfo is not None else None


def is_plausible(moment: datetime) -> bool:
    """Whether a time can belong to a real session at all (years 2000–2100)."""
    return PLAUSIBLE_YEARS[0] <= moment.year <= PLAUSIBLE_YEARS[1]


def utc_z(moment: datetime | None) -> str:
    """`2026-11-25T09:00:00Z`: the one way times are written into state and reports."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_z_or_own(moment: datetime | None) -> str | None:
    """`utc_z` for state; a time so far out that it cannot be moved to UTC keeps its own offset (None stays None)."""
    if moment is None:
        return None
    try:
        return utc_z(moment)
    except (OverflowError, ValueError):
        return moment.isoformat()


def iso_z(moment: datetime) -> str:
    """ISO-8601 in the moment's own offset, `Z` for UTC: a time as a request to Coviu carries it."""
    return moment.astimezone().astimezone(moment.tzinfo).isoformat().replace("+00:00", "Z")


def clinic_time(moment: datetime, zone: tzinfo) -> str:
    """`2026-11-25 09:00 AEDT`: a time as the clinic reads it."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def known_zone(name: str) -> ZoneInfo | None:
    """The IANA time zone `name` (e.g. Australia/Sydney), or None when there is none by that name; callers say
    which setting or flag named it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
