"""Issue 23: clocks are bounded by what the server can say. A rate-store row written by a clock an hour ahead (a
peer's skewed clock, or NTP stepping this one back) never makes a wait longer than the window it describes, and a
pacing wait longer than pacing ever needs is claimed from the run's wait budget and said at INFO (fake clocks)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tools.clock import FakeClock
from tools.errors import RateLimitBudgetError
from tools.ratelimit import RateLimitBudget, RateLimitGovernor, RateLimitInfo
from tools.ratestore import AccountRate, SqliteRateStore

ACCOUNT = "https://api.truto.one#ia-1"
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
HOUR = 3600.0


def governor(clock: FakeClock, store: SqliteRateStore, budget: float = 1800.0) -> RateLimitGovernor:
    gov = RateLimitGovernor(clock=clock, store=store, key=ACCOUNT)
    gov.budget = RateLimitBudget(budget)
    return gov


def test_a_peer_with_a_clock_an_hour_ahead_never_makes_us_wait_an_hour(tmp_path: Path) -> None:
    path = tmp_path / "rate.sqlite"
    ahead = governor(FakeClock(start=START + timedelta(hours=1)), SqliteRateStore(path))
    for _ in range(10):
        ahead.reserve("GET /sessions")
    ahead.observe(RateLimitInfo(limit=50, remaining=30, reset_seconds=6.0, retry_after_seconds=7.0), status_code=429)
    ours = governor(FakeClock(start=START), SqliteRateStore(path))
    wait = ours.reserve("GET /session_summaries/s-1")
    assert wait == pytest.approx(7.0, abs=0.5)  # the 429's hold, taken back to our clock: not 3607 s
    assert ours.budget.count == 1 and ours.budget.spent == pytest.approx(7.0, abs=0.5)


def test_ntp_stepping_our_clock_back_an_hour_does_not_stall_the_account(tmp_path: Path) -> None:
    clock = FakeClock(start=START)
    gov = governor(clock, SqliteRateStore(tmp_path / "rate.sqlite"))
    for _ in range(5):
        gov.reserve()
    gov.observe(RateLimitInfo(limit=50, remaining=0, reset_seconds=4.0), status_code=200)
    clock.advance(-HOUR)  # the wall clock steps back; the stored times are an hour in its future
    assert gov.reserve() <= 4.5  # at most the window the server described, not 3604 s


def test_a_row_without_its_writers_clock_is_capped_and_its_long_wait_is_budgeted_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row from before writers stamped it (or from a broken writer): its times are capped by the windows they
    describe; the wait that is left, longer than pacing needs, is claimed from the budget and logged at INFO."""
    store = SqliteRateStore(tmp_path / "rate.sqlite")
    now = START.timestamp()

    def skewed(state: AccountRate) -> None:
        state.sends = [now + HOUR + i for i in range(3)]
        state.pending = list(state.sends)
        state.remaining, state.observed_at, state.reset_at = 0, now + HOUR, now + HOUR + 5

    store.transact(ACCOUNT, skewed)
    gov = governor(FakeClock(start=START), store)
    with caplog.at_level(logging.INFO, logger="tools.ratelimit"):
        wait = gov.reserve("GET /session_summaries/s-1")
    assert 20 < wait <= 26  # the queue it describes: the window's reset (5 s) and two windows, not an hour
    assert gov.budget.count == 1 and gov.budget.spent == pytest.approx(wait)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("GET /session_summaries/s-1" in m and "pacing" in m for m in said), said

    store.transact(ACCOUNT, skewed)
    tight = governor(FakeClock(start=START), store, budget=10.0)
    with pytest.raises(RateLimitBudgetError):
        tight.reserve()


def test_short_pacing_waits_stay_out_of_the_budget(tmp_path: Path) -> None:
    gov = governor(FakeClock(start=START), SqliteRateStore(tmp_path / "rate.sqlite"))
    waits = [gov.reserve() for _ in range(60)]
    assert max(waits) > 0 and gov.budget.count == 0  # an account's own pace is not a rate-limit wait


def test_a_pacing_wait_of_more_than_a_few_seconds_is_said_even_when_not_budgeted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sends other runs booked ahead make this one wait ~18 s: within pacing's horizon (not budgeted), but a wait
    that long was silent, even with -v."""
    store = SqliteRateStore(tmp_path / "rate.sqlite")
    now = START.timestamp()

    def booked(state: AccountRate) -> None:
        state.sends = [now + 8 + i * 0.01 for i in range(60)]
        state.pending = list(state.sends)

    store.transact(ACCOUNT, booked)
    gov = governor(FakeClock(start=START), store)
    with caplog.at_level(logging.INFO, logger="tools.ratelimit"):
        wait = gov.reserve("GET /sessions")
    assert 10 < wait <= 2 * gov.window and gov.budget.count == 0
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("GET /sessions" in m and "pacing" in m and f"{wait:.0f} s" in m for m in said), said
