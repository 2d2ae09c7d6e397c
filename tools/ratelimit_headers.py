"""What a response says about the rate limit: Truto's `ratelimit-*` headers, `Retry-After` (seconds or an HTTP
date) and `retry-after-ms`, read into seconds from now with every unusable value ignored (said at DEBUG), and a
429's retry moment (written into the graphs' checkpointed retry state, read back safely).

Only parsing: the governor that acts on it and the run's wait budget are in `tools/ratelimit.py`, which re-exports
these names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from tools.clock import Clock
from tools.timeparse import parse_http_date

# the rate-limit owner's logger: its header lines are said under the same name as the governor's
log = logging.getLogger("tools.ratelimit")

# A reset value at or above this is a Unix timestamp (September 2001 onwards), not a number of seconds:
# a delay that long (31 years) never occurs, while monthly quotas (~2.6 million seconds) stay delays.
_UNIX_THRESHOLD = 1_000_000_000
# The longest wait a header may ask for: a monthly quota's reset. Anything longer (or negative, non-finite,
# unparsable) is not a schedule but a broken header: ignored (said at DEBUG), and the default back-off applies.
MAX_HEADER_SECONDS = 31 * 86_400.0
# The least a 429 costs before its retry, whatever its headers say: a server answering `Retry-After: 0` to every
# request would otherwise be asked again at once, ~5 times a second until the run's budget ran out (586 requests).
MIN_429_WAIT = 1.0


@dataclass(frozen=True)
class RateLimitInfo:
    """What one response said about the limit. Seconds are relative to the response's arrival."""

    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None
    retry_after_seconds: float | None = None


def _ignored(header: str, value: str, why: str) -> None:
    log.debug("ignoring %s: %r (%s); the default back-off applies", header, value[:40], why)


def _number(header: str, text: str) -> float | None:
    """A finite, non-negative number, or None (said at DEBUG)."""
    try:
        number = float(text)
    except ValueError:
        _ignored(header, text, "not a number")
        return None
    if not math.isfinite(number):
        _ignored(header, text, "not finite")
        return None
    if number < 0:
        _ignored(header, text, "negative")
        return None
    return number


def _capped(header: str, text: str, seconds: float) -> float | None:
    if seconds > MAX_HEADER_SECONDS:
        _ignored(header, text, f"more than {MAX_HEADER_SECONDS:.0f} s away")
        return None
    return max(0.0, seconds)


def parse_reset(value: str | None, now: datetime) -> float | None:
    """`ratelimit-reset`: seconds until reset, or a Unix timestamp. Returns seconds from now (>= 0), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    number = _number("ratelimit-reset", text)
    if number is None:
        return None
    if number >= _UNIX_THRESHOLD:
        number = number - now.timestamp()
    return _capped("ratelimit-reset", text, number)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3). Returns seconds from now (>= 0), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        checked = _number("Retry-After", text)
        return None if checked is None else _capped("Retry-After", text, checked)
    when = parse_http_date(text)
    if when is None:
        _ignored("Retry-After", text, "neither seconds nor an HTTP date with a zone")
        return None
    return _capped("Retry-After", text, (when - now).total_seconds())


def parse_retry_after_ms(value: str | None) -> float | None:
    """`retry-after-ms` (OpenAI-style APIs): milliseconds. Returns seconds (>= 0), or None when unusable, with the
    checks `Retry-After` gets (finite, non-negative, at most a header's longest wait)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    number = _number("retry-after-ms", text)
    return None if number is None else _capped("retry-after-ms", text, number / 1000)


def _int_or_none(header: str, value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    number = _number(header, value.strip())
    if number is None or number > 1e12:
        return None
    return int(number)


def parse_rate_limit_headers(headers: Mapping[str, str], now: datetime) -> RateLimitInfo:
    """Read Truto's normalised headers (any case) into seconds-from-now; unusable values are None."""
    lower = {k.lower(): v for k, v in headers.items()}
    return RateLimitInfo(
        limit=_int_or_none("ratelimit-limit", lower.get("ratelimit-limit")),
        remaining=_int_or_none("ratelimit-remaining", lower.get("ratelimit-remaining")),
        reset_seconds=parse_reset(lower.get("ratelimit-reset"), now),
        retry_after_seconds=parse_retry_after(lower.get("retry-after"), now),
    )


def retry_deadline(retry_after: float, clock: Clock, received_at: datetime | None = None) -> float:
    """When a 429 that said "retry after `retry_after` seconds" (its `RateLimitedError.retry_after`) may be retried:
    Unix seconds, counted from `received_at` (the error's; None: now on `clock`), so a 429 handled late (the audit's
    batch ends after it) waits only what is left, and the moment survives a checkpoint (the graphs' retry state).
    At least `MIN_429_WAIT` after it arrived, whatever it said."""
    return (received_at or clock.now()).timestamp() + max(MIN_429_WAIT, retry_after)


def checked_retry_at(value: object, retry_after: object, clock: Clock) -> float | None:
    """A 429's retry moment read back from checkpointed state (`retry_deadline`'s, Unix seconds), made safe to wait
    for: None when it is not a finite number (a state written by hand or by another version), and never further
    from now than the 429's own `retry_after` (seconds, when the state has it; else the longest a header may ask):
    a checkpoint written by a clock ahead of ours does not make a resumed run wait (or give up on) more than the
    server asked for."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        moment = float(value)
    except ValueError:
        return None
    if not math.isfinite(moment) or moment <= 0:
        return None
    longest = MAX_HEADER_SECONDS
    hold = float(retry_after) if isinstance(retry_after, int | float) and not isinstance(retry_after, bool) else 0.0
    if math.isfinite(hold) and hold > 0:
        longest = min(longest, hold)
    return min(moment, clock.now().timestamp() + longest)
