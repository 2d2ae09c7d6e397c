"""The governor's slot of headroom: a quota down to its last request is claimed from the run's budget, `acquire`
probes before it books, and the last send is decided on the server's count at the moment of sending, never ahead."""

from __future__ import annotations

import asyncio
import math

import pytest

from sandbox.ratelimit import RateDecision, RateLimiter
from tests.test_ratestore import ACCOUNT, simulate
from tools.clock import FakeClock
from tools.errors import RateLimitBudgetError
from tools.ratelimit import (
    HEADROOM_RELEASE_SECONDS,
    RateLimitBudget,
    RateLimitGovernor,
    RateLimitInfo,
    Ticket,
)

# --- the governor --------------------------------------------------------------------------------------------


def test_a_longer_quota_down_to_its_headroom_claims_its_reset_from_the_budget() -> None:
    # A provider quota with only the headroom left (remaining 1, reset an hour away): the next slot is its reset.
    # That hour is the server's limit, not our pacing: it must be claimed from the run's budget (2 minutes), so
    # the run stops at once with a RateLimitBudgetError instead of sleeping an hour unaccounted.
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    gov.observe(RateLimitInfo(remaining=1, reset_seconds=3600.0), status_code=200)
    assert gov.wait_seconds() == pytest.approx(3600.0)
    with pytest.raises(RateLimitBudgetError):
        gov.reserve("GET /sessions")
    with pytest.raises(RateLimitBudgetError):
        asyncio.run(gov.acquire(gov.budget, clock.sleep, "GET /sessions"))
    assert clock.sleeps == [] and gov.requests_reserved == 0


def test_a_longer_quota_down_to_its_headroom_within_the_budget_is_counted() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    gov.budget = RateLimitBudget(7200.0)
    gov.observe(RateLimitInfo(remaining=1, reset_seconds=3600.0), status_code=200)
    waited = asyncio.run(gov.acquire(gov.budget, clock.sleep)).waited
    assert waited == pytest.approx(3600.0)
    assert gov.budget.count == 1 and gov.budget.spent == pytest.approx(3600.0)


def test_acquire_probes_then_books_the_headroom_and_observe_answers_that_slot() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    gov.observe(RateLimitInfo(remaining=1, reset_seconds=4.0), status_code=200)

    async def one() -> float:
        ticket = await gov.acquire(gov.budget, clock.sleep)
        assert ticket.slot == pytest.approx(1004.0 - HEADROOM_RELEASE_SECONDS)
        gov.observe(RateLimitInfo(remaining=0, reset_seconds=1.0), status_code=200, ticket=ticket)
        return ticket.waited

    assert asyncio.run(one()) == pytest.approx(4.0 - HEADROOM_RELEASE_SECONDS)
    assert gov.requests_reserved == 1 and gov.total_wait_seconds == pytest.approx(4.0 - HEADROOM_RELEASE_SECONDS)
    assert gov.store.transact(gov.key, lambda s: list(s.pending)) == []
    assert all(w > 0 for w in clock.sleeps)  # never a busy loop of zero waits


def test_acquire_on_a_shared_wall_clock_store_never_spins() -> None:
    # A shared store keeps Unix time (~1.8e9 s): the rounding tolerance must still let the probe land.
    from tools.ratestore import MemoryRateStore

    class Shared(MemoryRateStore):
        shared = True

    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False, store=Shared())
    gov.observe(RateLimitInfo(remaining=1, reset_seconds=3.3), status_code=200)
    calls = 0
    original = gov.book

    def counted(budget: RateLimitBudget, what: str = "", *, probe: bool = True) -> tuple[float, Ticket | None]:
        nonlocal calls
        calls += 1
        assert calls < 10, "acquire spins"
        return original(budget, what, probe=probe)

    gov.book = counted  # type: ignore[method-assign]
    asyncio.run(gov.acquire(gov.budget, clock.sleep))
    assert calls == 2 and gov.requests_reserved == 1


# --- the slot of headroom -----------------------------------------------------------------------------


def _headers(decision: RateDecision) -> RateLimitInfo:
    """What the sandbox's headers say about a decision (whole seconds, at least 1)."""
    reset = float(max(1, math.ceil(decision.reset_after)))
    return RateLimitInfo(
        limit=decision.limit,
        remaining=decision.remaining,
        reset_seconds=reset,
        retry_after_seconds=None if decision.allowed else reset,
    )


def test_a_headroom_send_is_not_made_once_the_servers_count_says_the_slot_is_gone() -> None:
    # The headroom send asks again at its moment: a count that shows the slot gone in between stops it (no 429).
    clock = FakeClock()
    server = RateLimiter(clock)
    gov = RateLimitGovernor(clock=clock, smooth=False)
    for _ in range(47):  # the window opens with 47 sends of another sender on the account
        server.check(ACCOUNT, 50, 10.0)
    wait, first = gov.book(gov.budget, probe=False)
    assert wait == 0.0
    gov.observe(_headers(server.check(ACCOUNT, 50, 10.0)), status_code=200, ticket=first)  # remaining 2
    wait_a, a = gov.book(gov.budget, probe=False)
    assert wait_a == 0.0  # room 2 less the headroom: A goes now
    wait_b, b = gov.book(gov.budget)  # only the headroom is left: B is told to ask again late in the window
    assert b is None and 0.0 < wait_b < 10.0
    server.check(ACCOUNT, 50, 10.0)  # the other sender takes one more
    gov.observe(_headers(server.check(ACCOUNT, 50, 10.0)), status_code=200, ticket=a)  # A's answer: remaining 0
    clock.advance(wait_b)
    wait_again, b = gov.book(gov.budget)  # B asks again: the count says the window is spent
    assert b is not None and wait_again > 0.0
    clock.advance(wait_again)
    assert server.check(ACCOUNT, 50, 10.0).allowed  # B goes at the reset, into a new window: no 429


def test_a_sender_outside_the_deployment_late_in_each_window_is_not_refused_in_every_window() -> None:
    # The headroom is decided 0.25 s before the reset on the count as it is then: our send meets an outsider 0.5 s
    # before each reset once (a 429), and the headroom is then kept for 30 windows. (An outsider in a window's last
    # 0.25 s, after our send, still finds it full: the price of spending the headroom at all.)
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    foreign = [10.0 * k + 9.5 for k in range(20)]  # another app on the account, in each window's last second
    result = simulate(clock, [gov], 1000, latency=lambda: 0.005, foreign=foreign)
    assert len(result.sent) == 1000
    refused = result.rate_limited + (len(foreign) - result.foreign_accepted)
    assert refused <= 1, f"{len(foreign) - result.foreign_accepted} of the outsider's {len(foreign)} sends refused"
