"""The retry policy every caller shares: what is retried, how long to wait, how many times.

Graphs apply it in their `wait_and_retry` node; non-graph callers (CLI listing, recordings) use
`call_with_retries`, which applies the same rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tools.clock import Clock
from tools.errors import RateLimitedError, RetriesExhaustedError, is_transient
from tools.ratelimit import RateLimitGovernor

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """429s wait what the headers and governor say; 502/504/timeouts back off exponentially, capped."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_rate_limit_wait: float = 120.0

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """`attempt` counts attempts already made (1 after the first failure)."""
        return is_transient(error) and attempt < self.max_attempts

    def delay_for(self, error: BaseException, attempt: int, governor: RateLimitGovernor | None = None) -> float:
        if isinstance(error, RateLimitedError):
            # The governor holds every caller until the reset it read from this 429's headers; what is left
            # of that hold is the wait (the 429 may have arrived a while ago, e.g. early in an audit batch).
            wanted = governor.wait_seconds() if governor else error.retry_after
            return min(self.max_rate_limit_wait, max(wanted, 0.0))
        return min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))


DEFAULT_RETRY_POLICY = RetryPolicy()


async def call_with_retries(
    what: str,
    fn: Callable[[], Awaitable[T]],
    *,
    clock: Clock,
    governor: RateLimitGovernor | None = None,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    on_wait: Callable[[float, BaseException], None] | None = None,
) -> T:
    """Run `fn`, retrying transient failures per `policy`; raise `RetriesExhaustedError` when spent.

    Only for idempotent calls (reads): writes go through the graphs, which check before retrying.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if not policy.should_retry(exc, attempt):
                raise RetriesExhaustedError(what, attempt, exc) from exc
            delay = policy.delay_for(exc, attempt, governor)
            if on_wait:
                on_wait(delay, exc)
            await clock.sleep(delay)
