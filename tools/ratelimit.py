"""The one place that knows about rate limits: header parsing and the per-account governor.

The governor paces requests ahead of the limit and, after a 429, holds every caller until the reset.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime

from tools.clock import Clock, SystemClock
from tools.errors import RateLimitBudgetError

log = logging.getLogger(__name__)

# Truto's own documented limit per integrated account: 50 requests per 10 seconds.
DEFAULT_LIMIT = 50
DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_RETRY_AFTER = 10.0
# A reset value at or above this is a Unix timestamp (September 2001 onwards), not a number of seconds:
# a delay that long (31 years) never occurs, while monthly quotas (~2.6 million seconds) stay delays.
_UNIX_THRESHOLD = 1_000_000_000
# The longest wait a header may ask for: a monthly quota's reset. Anything longer (or negative, non-finite,
# unparsable) is not a schedule but a broken header: ignored (said at DEBUG), and the default back-off applies.
MAX_HEADER_SECONDS = 31 * 86_400.0
# The run's rate-limit wait budget when the command sets none (triage, ask): two minutes.
DEFAULT_MAX_WAIT = 120.0
# A wait longer than this is said at INFO on stderr (what, how long, why).
VISIBLE_WAIT_SECONDS = 5.0


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
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        _ignored("Retry-After", text, "neither seconds nor an HTTP date")
        return None
    if when.tzinfo is None:
        _ignored("Retry-After", text, "an HTTP date without a zone")
        return None
    return _capped("Retry-After", text, (when - now).total_seconds())


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


class RateLimitBudget:
    """How long one run may wait, in total, on the server's rate limits (429 holds, `remaining: 0` resets).

    A 429 is a schedule, not a failure: every such wait is allowed while the run's total stays within
    `seconds`. A wait longer than what is left is not started: `claim` raises `RateLimitBudgetError` naming
    until when the account is limited. Concurrent callers waiting out the same hold are counted once (the
    budget covers wall time spent waiting, not waits times callers). `count`/`spent` are the run's figures.
    Thread-safe.
    """

    def __init__(self, seconds: float = DEFAULT_MAX_WAIT, *, zone: tzinfo | None = None) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a rate-limit wait budget must be a finite number of seconds >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        self.zone = zone
        self.count = 0
        self.spent = 0.0
        self._covered_until = -math.inf
        self._lock = threading.Lock()

    @property
    def left(self) -> float:
        return max(0.0, self.seconds - self.spent)

    def restart(self) -> None:
        """A new run on the same toolbox (e.g. each check of `queue watch`): the whole budget again."""
        with self._lock:
            self.count, self.spent, self._covered_until = 0, 0.0, -math.inf

    def claim(self, wait: float, clock: Clock, *, what: str = "", why: str = "rate limited") -> float:
        """Book a wait of `wait` seconds starting now; return it. Raises when it does not fit what is left."""
        if wait <= 0:
            return 0.0
        with self._lock:
            now = clock.monotonic()
            end = now + wait
            new = max(0.0, end - max(now, self._covered_until))
            if new > self.left + 1e-6:
                raise RateLimitBudgetError(
                    clock.now() + timedelta(seconds=wait),
                    wait=wait,
                    left=self.left,
                    budget=self.seconds,
                    why=why,
                    zone=self.zone,
                )
            if new > 0:
                self.spent += new
                self.count += 1
                self._covered_until = max(self._covered_until, end)
        if new > 0 and wait > VISIBLE_WAIT_SECONDS:
            log.info(
                "waiting %.0f s%s: %s (%.0f s of the %.0f s rate-limit wait budget left)",
                wait,
                f" before {what}" if what else "",
                why,
                self.left,
                self.seconds,
            )
        return wait

    def as_dict(self) -> dict[str, float | int]:
        """The figures for `--json`: how many rate-limit waits, and their total seconds."""
        return {"count": self.count, "seconds": round(self.spent, 3)}


class RateLimitGovernor:
    """Paces one integrated account's requests, shared by every caller in the process.

    - `reserve()` books the next send slot and returns how long the caller must wait before sending.
      Sends are spaced at least `window / capacity` apart, and a sliding log makes sure no window of
      `window_seconds` ever holds more than `limit - headroom` sends; it also respects what the server
      last said was remaining.
    - `observe()` learns from each response's headers; a 429 holds every caller until the reset.
    - `wait_seconds()` is the wait it wants right now (used by the graphs' `wait_and_retry` node).
    - `budget` (a `RateLimitBudget`) bounds the waits the server's limits impose: the part of a `reserve()` wait
      that comes from a 429 hold or `remaining: 0` is claimed from it, and a slot past the budget is never
      booked (`RateLimitBudgetError`). Its own even spacing is pacing, not a rate-limit wait, and is not counted.
    Thread-safe and asyncio-safe: all state changes happen under a lock, with no awaiting inside.
    """

    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        headroom: int | None = None,
        clock: Clock | None = None,
        ceiling: int | None = None,
        smooth: bool = True,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        # Truto's own per-account limit caps whatever quota the provider's headers announce.
        self.ceiling = ceiling if ceiling is not None else limit
        self.limit = min(limit, self.ceiling)
        self.smooth = smooth
        self.window = window_seconds
        self._headroom = headroom
        self._sends: deque[float] = deque()
        self._hold_until = 0.0
        self._server_remaining: int | None = None
        self._server_reset_at = 0.0
        self._sent_since_observation = 0
        self._lock = threading.Lock()
        self._hold_reason = ""
        self.rate_limited_count = 0
        self.requests_reserved = 0
        self.total_wait_seconds = 0.0
        self.budget = RateLimitBudget()

    @property
    def capacity(self) -> int:
        """Sends allowed per window: the limit minus a small headroom for requests in flight."""
        headroom = self._headroom if self._headroom is not None else max(1, self.limit // 25)
        return max(1, self.limit - headroom)

    def wait_seconds(self) -> float:
        """How long a caller should wait before the next request, without booking a slot."""
        with self._lock:
            return self._next_slot(self.clock.monotonic()) - self.clock.monotonic()

    @property
    def spacing(self) -> float:
        """The smallest gap between two sends: the window spread evenly over its capacity.

        Even spacing (rather than a burst of `capacity` then a pause) keeps a server's fixed windows, whose
        starts drift with network jitter, from ever catching more than the limit (measured: 58 429s in a
        10,000-session audit with bursts, none with spacing). `smooth=False` allows bursts.
        """
        return self.window / self.capacity + 0.001  # a hair more, so no closed window holds capacity + 1

    def _next_slot(self, now: float) -> float:
        slot = max(now, self._hold_until)
        if self.smooth and self._sends:
            slot = max(slot, self._sends[-1] + self.spacing)
        while self._sends and self._sends[0] <= slot - self.window:
            self._sends.popleft()
        if len(self._sends) >= self.capacity:
            slot = max(slot, self._sends[len(self._sends) - self.capacity] + self.window)
        if (
            self._server_remaining is not None
            and self._server_remaining - self._sent_since_observation <= 0
            and slot < self._server_reset_at
        ):
            slot = self._server_reset_at
        return slot

    def _server_wait(self, now: float) -> tuple[float, str]:
        """The part of waiting that the server's limits impose (429 hold, `remaining: 0`), and why."""
        until, why = 0.0, ""
        if self._hold_until > now:
            until, why = self._hold_until, self._hold_reason or "429 from Truto"
        if (
            self._server_remaining is not None
            and self._server_remaining - self._sent_since_observation <= 0
            and self._server_reset_at > max(now, until)
        ):
            until, why = self._server_reset_at, "ratelimit-remaining 0 until ratelimit-reset"
        return max(0.0, until - now), why

    def reserve(self, what: str = "") -> float:
        """Book the next slot; return the seconds to wait before sending (0 when free).

        Raises `RateLimitBudgetError` (booking nothing) when the server-imposed part of the wait does not fit
        what is left of the budget.
        """
        with self._lock:
            now = self.clock.monotonic()
            slot = self._next_slot(now)
            server_wait, why = self._server_wait(now)
            if server_wait > 0:
                self.budget.claim(server_wait, self.clock, what=what, why=why)
            self._sends.append(slot)
            self._sent_since_observation += 1
            self.requests_reserved += 1
            wait = max(0.0, slot - now)
            self.total_wait_seconds += wait
            return wait

    def claim_wait(self, seconds: float, what: str = "") -> float:
        """A retry path is about to sleep `seconds` on this account's limit: claim it from the budget (or raise)."""
        with self._lock:
            _, why = self._server_wait(self.clock.monotonic())
        return self.budget.claim(seconds, self.clock, what=what, why=why or "rate limited (429)")

    def observe(self, info: RateLimitInfo, *, status_code: int) -> float:
        """Learn from a response. Returns the hold (seconds) now in force; > 0 after a 429."""
        with self._lock:
            now = self.clock.monotonic()
            if info.limit and info.limit > 0:
                self.limit = min(info.limit, self.ceiling)
            if info.remaining is not None:
                self._server_remaining = info.remaining
                self._sent_since_observation = 0
                self._server_reset_at = now + (info.reset_seconds if info.reset_seconds is not None else 0.0)
            if status_code == 429:
                self.rate_limited_count += 1
                waits = [w for w in (info.retry_after_seconds, info.reset_seconds) if w is not None]
                hold = max(waits) if waits else DEFAULT_RETRY_AFTER
                if now + hold > self._hold_until:
                    self._hold_until = now + hold
                    said = "Retry-After" if waits else "no usable Retry-After; default back-off"
                    self._hold_reason = f"429 rate limited ({said})"
            return max(0.0, self._hold_until - now)


class GovernorRegistry:
    """One governor per integrated account id, per process."""

    def __init__(self, clock: Clock | None = None, limit: int = DEFAULT_LIMIT) -> None:
        self._clock = clock
        self.limit = limit
        self._governors: dict[str, RateLimitGovernor] = {}
        self._lock = threading.Lock()

    def for_account(self, integrated_account_id: str) -> RateLimitGovernor:
        with self._lock:
            gov = self._governors.get(integrated_account_id)
            if gov is None:
                gov = RateLimitGovernor(clock=self._clock, limit=self.limit)
                self._governors[integrated_account_id] = gov
            return gov


# The process-wide registry; clients built for the same account share its governor.
GOVERNORS = GovernorRegistry()
