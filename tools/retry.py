"""The retry policy every caller shares: what is retried, how long to wait, how many times.

A 429 is a schedule, not a failure: it is waited out (the governor's `wait_to_retry`: the server's Retry-After /
ratelimit-reset and the account's hold) as long as the run's rate-limit wait budget (`RateLimitBudget`, passed in)
allows, however many 429s come. Attempt counts apply only to
the other transient failures (502/504, timeouts, resets, malformed responses).

Graphs apply it in their `wait_and_retry` node; non-graph callers (CLI listing, recordings) use
`call_with_retries`, which applies the same rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tools.clock import Clock
from tools.errors import RateLimitedError, RetriesExhaustedError, is_transient
from tools.ratelimit import RateLimitBudget, RateLimitGovernor, retry_deadline, retry_wait

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """429s wait what the headers and governor say (bounded by the budget); other transient failures back off
    exponentially, capped, for at most `max_attempts` attempts.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """`attempt` counts the non-rate-limit attempts already made (1 after the first such failure)."""
        if isinstance(error, RateLimitedError):
            return True  # bounded by time (the budget), not by count
        return is_transient(error) and attempt < self.max_attempts

    def delay_for(self, error: BaseException, attempt: int, governor: RateLimitGovernor | None = None) -> float:
        """The wait before the next attempt, from now. A 429's: the longer of its own Retry-After and the account's
        hold (`RateLimitGovernor.retry_delay`)."""
        if isinstance(error, RateLimitedError):
            if governor is None:
                return max(0.0, error.retry_after)
            return governor.retry_delay(retry_deadline(error.retry_after, governor.clock, error.received_at))
        return min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))


DEFAULT_RETRY_POLICY = RetryPolicy()


async def call_with_retries(
    what: str,
    fn: Callable[[], Awaitable[T]],
    *,
    clock: Clock,
    governor: RateLimitGovernor | None = None,
    budget: RateLimitBudget | None = None,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    on_wait: Callable[[float, BaseException], None] | None = None,
) -> T:
    """Run `fn`, retrying transient failures per `policy`; raise `RetriesExhaustedError` when spent.

    429s are retried while `budget` (the run's; without one, the governor's own) lasts (`RateLimitBudgetError`
    when a wait would not fit): each waits what the 429's Retry-After and the governor's hold say. Only for
    idempotent calls (reads): writes go through the graphs, which check before retrying.
    """
    if budget is None:
        budget = governor.budget if governor is not None else RateLimitBudget()
    attempt = 0
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            rate_limited = isinstance(exc, RateLimitedError)
            if not rate_limited:
                attempt += 1
            if not policy.should_retry(exc, attempt):
                raise RetriesExhaustedError(what, attempt, exc) from exc
            if isinstance(exc, RateLimitedError):
                retry_at = retry_deadline(
                    exc.retry_after, governor.clock if governor is not None else clock, exc.received_at
                )
                if governor is not None:
                    if on_wait:
                        on_wait(governor.retry_delay(retry_at), exc)
                    await governor.wait_to_retry(budget, clock.sleep, retry_at=retry_at, what=what)
                    continue
                delay = retry_wait(None, retry_at, clock)
                budget.claim(delay, clock, what=what, why="rate limited (429)")
            else:
                delay = policy.delay_for(exc, attempt)
            if on_wait:
                on_wait(delay, exc)
            await clock.sleep(delay)
