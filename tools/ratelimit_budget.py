"""The run's rate-limit wait budget (`RateLimitBudget`): how long one run may wait on the server's limits, in total.
Part of the rate limits' one owner, `tools/ratelimit.py`, which re-exports it (import it from there).
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import timedelta, tzinfo

from tools import telemetry
from tools.clock import Clock
from tools.errors import RateLimitBudgetError
from tools.ratelimit_headers import MAX_HEADER_SECONDS

log = logging.getLogger("tools.ratelimit")  # the rate limits' one logger

# The run's rate-limit wait budget when the command sets none (triage, ask): two minutes.
DEFAULT_MAX_WAIT = 120.0
# A wait longer than this is said at INFO on stderr (what, how long, why).
VISIBLE_WAIT_SECONDS = 5.0


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
            new = self._record(now, wait, self._fitting(now, wait, clock, why))
        self._said(new, wait, what, why)
        return wait

    def check(self, wait: float, clock: Clock, *, why: str = "rate limited") -> float:
        """Whether a wait of `wait` seconds starting now fits what is left: raises `RateLimitBudgetError` as `claim`
        does when it does not, and charges nothing either way. For a store transaction (`RateLimitGovernor.book`),
        which may run its change more than once (a busy retry) or fail after it ran (its commit): it checks, and
        the wait is charged once, with `charge`, after the transaction committed."""
        if wait <= 0:
            return 0.0
        with self._lock:
            now = clock.monotonic()
            self._fitting(now, wait, clock, why)
        return wait

    def charge(self, wait: float, started: float, *, what: str = "", why: str = "rate limited") -> float:
        """Count a wait that `check` allowed at `started` (`clock.monotonic()` then) and that is now booked (its
        transaction committed). Never raises: the slot is booked. (`book` is synchronous: nothing else on its event
        loop runs between the check and the charge; another thread's claim on the same budget in between may leave
        `spent` past `seconds` by at most this wait, and the run's next claim is refused.)"""
        if wait <= 0:
            return 0.0
        with self._lock:
            new = self._record(started, wait, max(0.0, started + wait - max(started, self._covered_until)))
        self._said(new, wait, what, why)
        return wait

    def _fitting(self, now: float, wait: float, clock: Clock, why: str) -> float:
        """The part of the wait [now, now + wait] not counted yet (waits that overlap are counted once); raises
        `RateLimitBudgetError` when it does not fit what is left. Called under `_lock`."""
        new = max(0.0, now + wait - max(now, self._covered_until))
        if new > self.left + 1e-6:
            raise RateLimitBudgetError(
                # (a wait no header could ask for is said as the longest one: the moment must be a date)
                clock.now() + timedelta(seconds=min(wait, MAX_HEADER_SECONDS)),
                wait=wait,
                left=self.left,
                budget=self.seconds,
                why=why,
                zone=self.zone,
            )
        return new

    def _record(self, now: float, wait: float, new: float) -> float:
        """Count `new` seconds of the wait [now, now + wait]. Called under `_lock`."""
        if new > 0:
            self.spent += new
            self.count += 1
            self._covered_until = max(self._covered_until, now + wait)
        return new

    def _said(self, new: float, wait: float, what: str, why: str) -> None:
        telemetry.rate_limit_wait(new)
        if new > 0 and wait > VISIBLE_WAIT_SECONDS:
            log.info(
                "waiting %.0f s%s: %s (%.0f s of the %.0f s rate-limit wait budget left)",
                wait,
                f" before {what}" if what else "",
                why,
                self.left,
                self.seconds,
            )

    def as_dict(self) -> dict[str, float | int]:
        """The figures for `--json`: how many rate-limit waits, and their total seconds."""
        return {"count": self.count, "seconds": round(self.spent, 3)}
