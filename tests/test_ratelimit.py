"""Rate-limit headers and the per-account governor, on a FakeClock (nothing really sleeps)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from helpers_mock import ACCOUNT_ID
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.clock import FakeClock
from tools.ratelimit import (
    DEFAULT_RETRY_AFTER,
    GovernorRegistry,
    RateLimitBudget,
    RateLimitGovernor,
    RateLimitInfo,
    parse_rate_limit_headers,
    parse_reset,
    parse_retry_after,
)

CLOCK_NOW = FakeClock().now()


def max_in_any_window(times: list[float], window: float = 10.0) -> int:
    """The most sends inside any half-open window [t, t + window)."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered if t <= u < t + window) for t in ordered)


# --- header parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), ("2.5", 2.5), (" 7 ", 7.0), ("0", 0.0)])
def test_parse_reset_seconds(value: str, seconds: float) -> None:
    assert parse_reset(value, CLOCK_NOW) == seconds


def test_parse_reset_unix_timestamp_is_turned_into_seconds_from_now() -> None:
    ts = CLOCK_NOW.timestamp() + 45
    assert parse_reset(str(int(ts)), CLOCK_NOW) == pytest.approx(45.0)
    # A timestamp in the past means "already reset", never a negative wait.
    assert parse_reset(str(int(CLOCK_NOW.timestamp() - 100)), CLOCK_NOW) == 0.0


def test_parse_reset_tells_a_long_delay_from_a_timestamp() -> None:
    # Just under the threshold is still seconds; a real timestamp is relative to now.
    assert parse_reset("999999", CLOCK_NOW) == 999_999.0
    assert parse_reset("1795597260", CLOCK_NOW) == pytest.approx(1795597260 - CLOCK_NOW.timestamp())
    assert parse_reset("1795597260", CLOCK_NOW) == pytest.approx(60.0)


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "Wed, 25 Nov 2026 09:00:30 GMT", "-4", "inf"])
def test_parse_reset_unusable_values(value: str | None) -> None:
    assert parse_reset(value, CLOCK_NOW) is None


@pytest.mark.parametrize(("value", "seconds"), [("10", 10.0), ("0", 0.0), ("1.5", 1.5)])
def test_parse_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, CLOCK_NOW) == seconds


def test_parse_retry_after_http_date() -> None:
    later = format_datetime(CLOCK_NOW + timedelta(seconds=30), usegmt=True)
    assert later.endswith("GMT")
    assert parse_retry_after(later, CLOCK_NOW) == pytest.approx(30.0)
    earlier = format_datetime(CLOCK_NOW - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, CLOCK_NOW) == 0.0


def test_parse_retry_after_reads_all_three_http_date_formats() -> None:
    """RFC 9110 §5.6.7: a recipient MUST accept IMF-fixdate, RFC 850 and asctime dates. asctime names no zone (it is
    GMT by definition): it was ignored as "a date without a zone", and the 429 waited the default 10 s."""
    later = CLOCK_NOW + timedelta(seconds=30)
    asctime = later.strftime("%a %b ") + f"{later.day:>2}" + later.strftime(" %H:%M:%S %Y")
    rfc850 = later.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    for value in (format_datetime(later, usegmt=True), rfc850, asctime):
        assert parse_retry_after(value, CLOCK_NOW) == pytest.approx(30.0), value
    assert parse_retry_after("25 Nov 2026 09:00:30", CLOCK_NOW) is None  # no zone and not asctime: not a date


@pytest.mark.parametrize("value", [None, "", "later", "Wed, 99 Nov 2026 09:00:30 GMT", "-3", "1e400"])
def test_parse_retry_after_unusable_values(value: str | None) -> None:
    assert parse_retry_after(value, CLOCK_NOW) is None


def test_headers_are_read_in_any_case() -> None:
    headers = {"RateLimit-Limit": "40", "RATELIMIT-REMAINING": "3", "Ratelimit-Reset": "8", "Retry-After": "5"}
    assert parse_rate_limit_headers(headers, CLOCK_NOW) == RateLimitInfo(
        limit=40, remaining=3, reset_seconds=8.0, retry_after_seconds=5.0
    )
    assert parse_rate_limit_headers(httpx.Headers(headers), CLOCK_NOW) == RateLimitInfo(40, 3, 8.0, 5.0)


def test_missing_or_garbled_headers_are_none() -> None:
    info = parse_rate_limit_headers({"ratelimit-limit": "many", "content-type": "application/json"}, CLOCK_NOW)
    assert info == RateLimitInfo()


# --- the governor ----------------------------------------------------------------------------------


def test_capacity_keeps_headroom() -> None:
    clock = FakeClock()
    assert RateLimitGovernor(clock=clock).capacity == 49  # one slot of headroom
    assert RateLimitGovernor(limit=10, clock=clock).capacity == 9
    assert RateLimitGovernor(limit=50, headroom=0, clock=clock).capacity == 50
    assert RateLimitGovernor(limit=1, clock=clock).capacity == 1


async def test_two_hundred_requests_never_exceed_capacity_in_any_window_and_are_spread() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    start = clock.monotonic()
    sent_at: list[float] = []
    waits: list[float] = []
    for _ in range(200):
        wait = gov.reserve()
        waits.append(wait)
        await clock.sleep(wait)
        sent_at.append(clock.monotonic() - start)

    assert max_in_any_window(sent_at) <= gov.capacity == 49
    assert waits[:49] == [0.0] * 49
    assert waits[49] == pytest.approx(10.0)  # request 50 waits for the window to slide
    assert waits[50] == 0.0  # ...and the rest of that window is free again
    # Spread evenly, with no idle windows: 49 per window, 200 requests over four windows and a bit.
    per_window = Counter(int(t // 10) for t in sent_at)
    assert per_window == {0: 49, 1: 49, 2: 49, 3: 49, 4: 4}
    assert sent_at[-1] == pytest.approx(40.0)
    assert gov.requests_reserved == 200
    assert gov.total_wait_seconds == pytest.approx(40.0)


def test_a_burst_booked_at_once_is_given_future_slots() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    waits = [gov.reserve() for _ in range(200)]
    assert Counter(waits) == {0.0: 49, 10.0: 49, 20.0: 49, 30.0: 49, 40.0: 4}
    assert waits == sorted(waits)
    assert max_in_any_window(waits) <= gov.capacity


def test_wait_seconds_does_not_book_a_slot() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(limit=5, headroom=0, clock=clock, smooth=False)
    for _ in range(5):
        assert gov.reserve() == 0.0
    assert gov.wait_seconds() == pytest.approx(10.0)
    assert gov.wait_seconds() == pytest.approx(10.0)
    assert gov.requests_reserved == 5
    clock.advance(4)
    assert gov.wait_seconds() == pytest.approx(6.0)
    clock.advance(6)
    assert gov.wait_seconds() == 0.0


def test_observe_429_holds_every_caller_until_the_reset() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    hold = gov.observe(RateLimitInfo(retry_after_seconds=7.0), status_code=429)
    assert hold == pytest.approx(7.0)
    assert gov.rate_limited_count == 1
    assert gov.wait_seconds() == pytest.approx(7.0)
    assert [gov.reserve() for _ in range(5)] == [pytest.approx(7.0)] * 5
    clock.advance(7)
    assert gov.wait_seconds() == 0.0
    assert gov.reserve() == 0.0


def test_observe_429_without_headers_holds_the_default() -> None:
    gov = RateLimitGovernor(clock=FakeClock())
    assert gov.observe(RateLimitInfo(), status_code=429) == DEFAULT_RETRY_AFTER == 10.0
    assert gov.reserve() == pytest.approx(10.0)


def test_observe_429_takes_the_longer_of_retry_after_and_reset() -> None:
    gov = RateLimitGovernor(clock=FakeClock())
    assert gov.observe(RateLimitInfo(reset_seconds=25.0, retry_after_seconds=10.0), status_code=429) == 25.0


def test_a_later_shorter_429_does_not_shorten_the_hold() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    gov.observe(RateLimitInfo(retry_after_seconds=30.0), status_code=429)
    clock.advance(5)
    assert gov.observe(RateLimitInfo(retry_after_seconds=2.0), status_code=429) == pytest.approx(25.0)
    assert gov.rate_limited_count == 2


def test_a_success_does_not_hold() -> None:
    gov = RateLimitGovernor(clock=FakeClock())
    assert gov.observe(RateLimitInfo(limit=50, remaining=40, reset_seconds=10.0), status_code=200) == 0.0
    assert gov.reserve() == 0.0


def test_ratelimit_limit_header_updates_the_limit() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    gov.observe(parse_rate_limit_headers({"RateLimit-Limit": "20"}, clock.now()), status_code=200)
    assert gov.limit == 20
    assert gov.capacity == 19
    waits = [gov.reserve() for _ in range(20)]
    assert waits[:19] == [0.0] * 19
    assert waits[19] == pytest.approx(10.0)


def test_a_provider_limit_above_trutos_own_does_not_raise_pacing_past_50_per_window() -> None:
    # `ratelimit-limit` is the provider's quota; Truto's own 50 req/10 s per account still applies.
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    gov.observe(RateLimitInfo(limit=1000, remaining=999, reset_seconds=3600.0), status_code=200)
    assert gov.limit == 50
    waits = [gov.reserve() for _ in range(100)]
    assert max_in_any_window(waits) <= 50


def test_the_limit_follows_the_headers_down_and_back_up_to_the_ceiling() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    gov.observe(RateLimitInfo(limit=20), status_code=200)
    assert gov.limit == 20
    gov.observe(RateLimitInfo(limit=35), status_code=200)
    assert gov.limit == 35
    gov.observe(RateLimitInfo(limit=500), status_code=200)
    assert gov.limit == 50
    gov.observe(RateLimitInfo(limit=0), status_code=200)
    assert gov.limit == 50
    assert RateLimitGovernor(limit=100, ceiling=50, clock=clock).limit == 50


def test_server_remaining_zero_waits_for_the_reset() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    gov.observe(RateLimitInfo(limit=50, remaining=0, reset_seconds=6.0), status_code=200)
    assert gov.wait_seconds() == pytest.approx(6.0)
    assert gov.reserve() == pytest.approx(6.0)


def test_server_remaining_counts_down_with_sends() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    gov.observe(RateLimitInfo(remaining=3, reset_seconds=4.0), status_code=200)
    assert gov.reserve() == 0.0
    assert gov.reserve() == 0.0
    # The third would take the last slot, the headroom: it is never booked ahead. Asked now, it is "ask again
    # 0.25 s before the reset"; booked now (reserve), it waits for the reset.
    assert gov.try_reserve() == (pytest.approx(3.75), False)
    assert gov.reserve() == pytest.approx(4.0)
    clock.advance(3.8)
    assert gov.try_reserve() == (pytest.approx(0.2), True)  # that sync booking took the window's room: the reset
    # A fresh observation resets the count.
    gov.observe(RateLimitInfo(remaining=10, reset_seconds=4.0), status_code=200)
    clock.advance(4)
    assert gov.reserve() == 0.0


def test_server_remaining_zero_after_the_reset_passed_does_not_wait() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    gov.observe(RateLimitInfo(remaining=0, reset_seconds=3.0), status_code=200)
    clock.advance(3.5)
    assert gov.reserve() == 0.0


async def test_one_hundred_tasks_reserving_at_once_get_their_own_slots() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    start = clock.monotonic()
    go = asyncio.Event()

    async def caller() -> float:
        await go.wait()
        wait = gov.reserve()
        return clock.monotonic() + wait - start

    tasks = [asyncio.create_task(caller()) for _ in range(100)]
    await asyncio.sleep(0)
    go.set()
    slots = await asyncio.gather(*tasks)

    assert gov.requests_reserved == 100
    assert Counter(slots) == {0.0: 49, 10.0: 49, 20.0: 2}
    assert max_in_any_window(slots) <= gov.capacity


def test_threads_reserving_at_once_never_overbook() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    barrier = threading.Barrier(10)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        mine = [gov.reserve() for _ in range(20)]
        with lock:
            waits.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(waits) == 200
    assert gov.requests_reserved == 200
    assert Counter(waits) == {0.0: 49, 10.0: 49, 20.0: 49, 30.0: 49, 40.0: 4}


def test_registry_governors_of_one_account_share_its_state_and_keep_their_own_budgets() -> None:
    clock = FakeClock()
    registry = GovernorRegistry()
    a = registry.for_account(ACCOUNT_ID, clock=clock, limit=5)
    b = registry.for_account(ACCOUNT_ID, clock=clock, limit=5)
    assert a is not b and a.budget is not b.budget
    for _ in range(4):  # capacity 4 (5 less one slot of headroom), booked through a
        a.reserve()
    assert b.wait_seconds() > 0  # b sees a's sends: one budget for the account
    assert registry.for_account("ia-other", clock=clock, limit=5).wait_seconds() == 0.0


def test_registry_builds_each_governor_with_its_own_clock_and_limit() -> None:
    # Each caller gets a governor with its own clock and limit: a later caller never re-points an earlier one's.
    registry = GovernorRegistry()
    first_clock, second_clock = FakeClock(), FakeClock()
    first = registry.for_account(ACCOUNT_ID, clock=first_clock, limit=30)
    second = registry.for_account(ACCOUNT_ID, clock=second_clock, limit=10)
    assert first.clock is first_clock and first.limit == 30
    assert second.clock is second_clock and second.limit == 10
    for _ in range(20):
        first.reserve()
    assert second.wait_seconds() == 0.0  # another clock's sends are another time base: never mixed


_OPS = st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 6)),
    st.tuples(st.just("advance"), st.floats(0, 12)),
    st.tuples(st.just("observe"), st.tuples(st.none(), st.floats(0, 12), st.sampled_from([200, 429]))),
)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_OPS, max_size=40))
def test_property_without_the_servers_count_no_sliding_window_is_overbooked(ops: list[tuple[str, Any]]) -> None:
    # Where the server says nothing about its window's room, the sliding log is what keeps the pace.
    clock = FakeClock()
    gov = RateLimitGovernor(limit=4, headroom=1, clock=clock)
    gov.budget = RateLimitBudget(10**9)  # the pacing is what is checked here, not the run's wait budget
    slots: list[float] = []
    for kind, arg in ops:
        if kind == "reserve":
            slots.extend(clock.monotonic() + gov.reserve() for _ in range(arg))
        elif kind == "advance":
            clock.advance(arg)
        else:
            remaining, reset, status = arg
            gov.observe(RateLimitInfo(remaining=remaining, reset_seconds=reset), status_code=status)
            if status == 429:  # a 429 holds every caller for at least its reset
                assert gov.wait_seconds() >= reset - 1e-9
    assert not slots or max_in_any_window(slots) <= gov.capacity == 3


# --- smooth pacing (the default) -------------------------------------------------------------------


async def test_smooth_pacing_spaces_sends_evenly_and_keeps_the_window_capacity() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    start = clock.monotonic()
    sent_at: list[float] = []
    for _ in range(200):
        await clock.sleep(gov.reserve())
        sent_at.append(clock.monotonic() - start)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert min(gaps) >= gov.spacing - 1e-9 > 10 / 49
    assert max(gaps) == pytest.approx(gov.spacing)  # never a pause longer than one gap: no bursts, no idling
    assert max_in_any_window(sent_at) <= gov.capacity
    assert sent_at[-1] == pytest.approx(199 * gov.spacing)  # 49 per 10 s


def test_smooth_pacing_still_holds_after_a_429() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    assert gov.reserve() == 0.0
    gov.observe(RateLimitInfo(retry_after_seconds=5.0), status_code=429)
    assert gov.reserve() == pytest.approx(5.0)
    assert gov.reserve() == pytest.approx(5.0 + gov.spacing)


def test_a_longer_quota_with_room_is_paced_not_waited_out() -> None:
    # A provider quota (reset an hour away) that still has room: sends are spaced, never held for its reset.
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock, smooth=False)
    gov.observe(RateLimitInfo(remaining=40, reset_seconds=3600.0), status_code=200)
    assert gov.reserve() == 0.0
    assert gov.try_reserve() == (0.0, True)
    gov.observe(RateLimitInfo(remaining=0, reset_seconds=3600.0), status_code=200)
    assert gov.wait_seconds() == pytest.approx(3600.0)  # spent: its reset is the next free moment
