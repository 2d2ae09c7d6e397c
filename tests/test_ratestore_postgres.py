"""The shared rate store on a real PostgreSQL: two connections (two processes of a deployment) spend one budget.

Needs `COVIU_TEST_POSTGRES_URL` like tests/test_postgres.py (`.ci/run` starts one); skipped loudly without it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_postgres import postgres_state  # noqa: F401  (the fixture: a fresh schema on the test database)
from tests.test_ratestore import ACCOUNT, simulate
from tools.clock import FakeClock
from tools.errors import RateLimitBudgetError
from tools.ratelimit import RateLimitBudget, RateLimitGovernor, RateLimitInfo
from tools.ratestore import PostgresRateStore, shared_rate_store

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def test_two_postgres_connections_share_one_budget(postgres_state: tuple[str, Any, str]) -> None:  # noqa: F811
    state, admin, schema = postgres_state
    clock = FakeClock()
    first = RateLimitGovernor(clock=clock, store=PostgresRateStore(state), key=ACCOUNT)
    second = RateLimitGovernor(clock=clock, store=PostgresRateStore(state), key=ACCOUNT)
    result = simulate(clock, [first, second], 150, start_gaps=[0.0, 3.3], latency=lambda: 0.01)
    assert result.rate_limited == 0
    assert len(result.sent) == 300
    assert result.finished_at / (300 / 5.0) <= 1.05
    # A 429 one process sees holds the other, through the table.
    first.observe(RateLimitInfo(retry_after_seconds=30.0), status_code=429)
    assert second.wait_seconds() >= 29.0
    rows = admin.execute(f'SELECT count(*) FROM "{schema}".coviu_rate_limit').fetchone()
    assert rows == (1,)


def test_a_postgres_state_url_opens_the_postgres_store(postgres_state: tuple[str, Any, str]) -> None:  # noqa: F811
    state, _, _ = postgres_state
    assert isinstance(shared_rate_store(state), PostgresRateStore)


def test_a_postgres_store_whose_connection_was_lost_reconnects_for_the_next_booking(
    postgres_state: tuple[str, Any, str],  # noqa: F811
) -> None:
    """The server ended the store's connection while it was idle (a restart, a failover, an idle timeout): the next
    change, whose COMMIT was never sent, runs on a new connection. Before, the closed connection was kept and every
    later booking of the process (a server runs for days) failed: "the connection is lost"."""
    state, admin, _ = postgres_state
    store = PostgresRateStore(state)
    governor = RateLimitGovernor(clock=FakeClock(), store=store, key=ACCOUNT)
    governor.observe(RateLimitInfo(limit=100, remaining=50, reset_seconds=60.0), status_code=200)
    pid = store._conn.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    governor.observe(RateLimitInfo(limit=100, remaining=49, reset_seconds=60.0), status_code=200)
    assert store.transact(ACCOUNT, lambda rate: rate.remaining) == 49
    assert store._conn.info.backend_pid != pid
    store.close()


def test_a_postgres_booking_past_the_budget_books_nothing_and_one_that_fits_is_charged_once(
    postgres_state: tuple[str, Any, str],  # noqa: F811
) -> None:
    """The budget is checked inside the row's transaction and charged after its commit, on PostgreSQL as on SQLite:
    a wait past what is left raises and books no slot (the transaction rolled back); one that fits is charged once."""
    state, _, _ = postgres_state
    store = PostgresRateStore(state)
    governor = RateLimitGovernor(clock=FakeClock(), store=store, key=ACCOUNT)
    governor.observe(RateLimitInfo(retry_after_seconds=30.0), status_code=429)
    small = RateLimitBudget(10)
    with pytest.raises(RateLimitBudgetError):
        governor.book(small, "listing")
    assert small.as_dict() == {"count": 0, "seconds": 0.0}
    assert store.transact(ACCOUNT, lambda rate: (list(rate.sends), list(rate.pending))) == ([], [])
    enough = RateLimitBudget(120)
    wait, ticket = governor.book(enough, "listing")
    assert ticket is not None and wait == pytest.approx(30.0, abs=0.5)
    assert enough.as_dict() == {"count": 1, "seconds": pytest.approx(30.0, abs=0.5)}
    assert len(store.transact(ACCOUNT, lambda rate: list(rate.sends))) == 1
    store.close()
