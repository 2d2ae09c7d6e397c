"""Truto's per-integrated-account rate limit: N requests per fixed window, on the injected monotonic clock.

A window starts at its first request; refused (429) requests do not count.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.clock import Clock


@dataclass(slots=True)
class _Window:
    started: float
    count: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether a request may go through, and what the `ratelimit-*` headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the window resets


class RateLimiter:
    """Fixed windows keyed by integrated account id."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def check(self, account_id: str, limit: int, window_seconds: float) -> RateDecision:
        """Count one request against the account's window, unless the window is already full."""
        now = self.clock.monotonic()
        window = self._windows.get(account_id)
        if window is None or now >= window.started + window_seconds:
            window = _Window(started=now, count=0)
            self._windows[account_id] = window
        reset_after = window.started + window_seconds - now
        if window.count >= limit:
            return RateDecision(False, limit, 0, reset_after)
        window.count += 1
        return RateDecision(True, limit, limit - window.count, reset_after)

    def reset(self) -> None:
        """Forget every window."""
        self._windows.clear()
