"""One owner for rate limits, with the run's budget passed explicitly: runs that share one account's toolbox (the
LangGraph server) are each charged their own waits, however their work is scheduled, and a 429's Retry-After is what
the retry waits, bounded by the run's budget."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import pytest

from agent.settings import Settings
from graphs.context import Context, Services, resolve_services
from graphs.nodes import CallOutcome, retry_update, wait_and_retry
from tests.helpers_mock import MockTruto, list_page, make_client, truto_error
from tools.clock import FakeClock
from tools.errors import RateLimitBudgetError, RateLimitedError
from tools.ratelimit import RateLimitBudget, RateLimitGovernor, RateLimitInfo
from tools.ratestore import AccountRate, MemoryRateStore, SqliteRateStore
from tools.retry import call_with_retries

T = TypeVar("T")

pytestmark = pytest.mark.profiles("default")

LIST_SESSIONS = ("list_all_coviu_sessions", {"limit": 5})


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


async def test_two_server_runs_started_by_one_scheduler_are_each_charged_their_own_waits(
    settings: Settings, services: Services, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one account on the server share its toolbox (one governor: one pacing) but not a budget. They are
    started by one scheduler task, then work concurrently: a 30 s hold on the account is more than the first run's
    10 s budget (it stops, nothing slept) and within the second's 60 s (it waits, and only it is charged). With the
    budget in a context variable set as each run's services were resolved, both runs' tasks inherited the last one
    set, and the first run waited on the second's budget."""
    import agent.server as server

    monkeypatch.setattr(server, "_settings", settings)
    monkeypatch.setitem(server._by_account, "sandbox", services)
    monkeypatch.setattr(settings, "max_wait", 10.0)
    short = await resolve_services(Context())
    monkeypatch.setattr(settings, "max_wait", 60.0)
    long = await resolve_services(Context())
    assert short.toolbox.governor is long.toolbox.governor is services.toolbox.governor
    services.toolbox.governor.observe(RateLimitInfo(retry_after_seconds=30.0), status_code=429)

    async def list_sessions(run: Services) -> Any:
        return await run.toolbox.executor.run(*LIST_SESSIONS)

    results = await asyncio.gather(list_sessions(short), list_sessions(long), return_exceptions=True)
    assert isinstance(results[0], RateLimitBudgetError) and results[0].budget == 10.0
    assert isinstance(results[1], dict)
    assert short.budget.as_dict() == {"count": 0, "seconds": 0.0}
    assert long.budget.as_dict() == {"count": 1, "seconds": pytest.approx(30.0)}
    assert services.toolbox.budget.as_dict() == {"count": 0, "seconds": 0.0}  # the shared toolbox's own: untouched
    assert clock.sleeps == [pytest.approx(30.0)]  # one wait, the second run's


def _rate_limited(services: Services, retry_after: float) -> CallOutcome:
    """A `list_all_coviu_sessions` call answered 429 (`Retry-After: retry_after`), seen by the account's governor."""
    services.toolbox.governor.observe(RateLimitInfo(retry_after_seconds=retry_after), status_code=429)
    error = RateLimitedError(429, "Too Many Requests", "", retry_after=retry_after)
    name, arguments = LIST_SESSIONS
    return CallOutcome("transient", name, dict(arguments), services.toolbox.executor.spec(name), error=error)


def _in_another_process(services: Services, clock: FakeClock) -> Services:
    """The same run's services in a new process (a resumed thread): a governor whose memory never saw the 429."""
    client = services.toolbox.client.for_run(RateLimitBudget(120))
    client.governor = RateLimitGovernor(clock=clock)
    return dataclasses.replace(services, toolbox=dataclasses.replace(services.toolbox, client=client))


async def test_the_wait_node_waits_what_is_left_of_the_429s_retry_after_even_in_a_new_process(
    services: Services, clock: FakeClock
) -> None:
    """The retry state carries when the 429 said to come back: a thread resumed in another process (whose governor
    never saw the 429) still waits the rest of Retry-After, not zero. Before, the node asked only the governor in
    memory and ignored what the error said."""
    retry = retry_update(services, None, _rate_limited(services, 30.0), "call-1", "act")
    clock.advance(5.0)  # the process ended; a new one resumes the thread 5 s later
    resumed = _in_another_process(services, clock)
    runtime = SimpleNamespace(context=Context(services=resumed))
    command = await wait_and_retry(cast(Any, {"retry": retry}), cast(Any, runtime))
    assert clock.sleeps == [pytest.approx(25.0)]
    assert command.goto == "act"
    assert resumed.budget.as_dict() == {"count": 1, "seconds": pytest.approx(25.0)}


async def test_the_wait_node_does_not_start_a_retry_after_longer_than_the_runs_budget(
    services: Services, clock: FakeClock
) -> None:
    retry = retry_update(services, None, _rate_limited(services, 600.0), "call-1", "act")
    resumed = _in_another_process(services, clock)
    with pytest.raises(RateLimitBudgetError) as info:
        await wait_and_retry(cast(Any, {"retry": retry}), cast(Any, SimpleNamespace(context=Context(services=resumed))))
    assert info.value.wait == pytest.approx(600.0) and info.value.budget == 120.0
    assert clock.sleeps == []


async def test_a_429s_retry_after_is_waited_by_the_retry_loop_on_its_budget() -> None:
    """`call_with_retries` (CLI reads, recordings, the catalog) waits the 429's Retry-After, claimed from the budget
    it is given (the run's), never from the governor's own."""
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    run_budget = RateLimitBudget(60)
    mock = MockTruto(responses=[truto_error(429, headers={"Retry-After": "17"}), list_page(["ok"])])
    async with make_client(mock, clock=clock, governor=governor) as client:
        client.budget = run_budget
        result = await call_with_retries(
            "listing", lambda: client.proxy("sessions", "list"), clock=clock, governor=governor, budget=run_budget
        )
    assert result["result"] == ["ok"]
    assert clock.sleeps == [pytest.approx(17.0)]
    assert run_budget.as_dict() == {"count": 1, "seconds": pytest.approx(17.0)}
    assert governor.budget.as_dict() == {"count": 0, "seconds": 0.0}


def test_no_context_variable_carries_rate_limit_state() -> None:
    """The budget and the booked slot travel as arguments (`acquire(budget)` -> `Ticket`, `observe(ticket=)`)."""
    import contextvars

    import tools.ratelimit as ratelimit

    assert not [name for name, value in vars(ratelimit).items() if isinstance(value, contextvars.ContextVar)]


async def test_a_429_handled_late_waits_only_what_is_left_of_its_retry_after(
    services: Services, clock: FakeClock
) -> None:
    """The audit hands a batch's 429 to `wait_and_retry` when the whole batch is done: its Retry-After counts from
    when it arrived, so a hold that is over costs no wait (the stale-delay problem bench/README.md measured)."""
    outcome = _rate_limited(services, 30.0)
    assert isinstance(outcome.error, RateLimitedError)
    outcome.error.received_at = clock.now()
    clock.advance(50.0)  # the rest of the batch
    retry = retry_update(services, None, outcome, "summaries", "fetch_summaries")
    runtime = SimpleNamespace(context=Context(services=services))
    command = await wait_and_retry(cast(Any, {"retry": retry}), cast(Any, runtime))
    assert clock.sleeps == [0.0] and command.goto == "fetch_summaries"


def test_a_429_while_opening_the_mcp_session_carries_its_retry_after() -> None:
    """Opening the MCP session has no governor to hold: the 429's own Retry-After is what its retry waits (it was 0,
    so `call_with_retries` asked again at once)."""
    from mcp import types
    from mcp.shared.exceptions import McpError

    from tools.mcp_source.errors import error_from_rpc

    data = {"coviu_agent": {"status": 429, "reason": "Too Many Requests", "headers": {"retry-after": "7"}}}
    rpc = McpError(types.ErrorData(code=-32000, message="Too Many Requests", data=data))
    error = error_from_rpc(rpc, method="POST", path="MCP initialize", host="h", opening=True)
    assert isinstance(error, RateLimitedError) and error.retry_after == 7.0


@pytest.mark.parametrize("stored", ["garbage", float("inf"), float("nan"), -1.0, None, "1e999", [1]])
async def test_a_resumed_429_whose_retry_at_is_not_a_usable_moment_waits_on_the_governor_alone(
    services: Services, clock: FakeClock, stored: Any
) -> None:
    """A checkpoint's `retry_at` that is not a finite moment (written by hand, or by another version) is not a
    crash: the resumed run waits what the governor says. Before, a string raised ValueError and infinity or 1e300
    raised OverflowError while the budget error was being worded."""
    retry = retry_update(services, None, _rate_limited(services, 30.0), "call-1", "act")
    retry["retry_at"] = stored
    resumed = _in_another_process(services, clock)
    command = await wait_and_retry(
        cast(Any, {"retry": retry}), cast(Any, SimpleNamespace(context=Context(services=resumed)))
    )
    assert command.goto == "act" and clock.sleeps == [0.0]


@pytest.mark.parametrize("ahead", [3600.0, 1e300])
async def test_a_resumed_429_written_by_a_clock_ahead_waits_no_longer_than_its_retry_after(
    services: Services, clock: FakeClock, ahead: float
) -> None:
    """The thread was checkpointed by a process whose clock ran an hour ahead: its `retry_at` is an hour past the
    429's 30 s Retry-After. The resumed run waits at most those 30 s; before, it wanted the hour, which no budget
    allowed, so every resume failed (exit 3) until the hour was over (and 1e300 raised OverflowError)."""
    retry = retry_update(services, None, _rate_limited(services, 30.0), "call-1", "act")
    retry["retry_at"] = float(retry["retry_at"]) + ahead
    resumed = _in_another_process(services, clock)
    command = await wait_and_retry(
        cast(Any, {"retry": retry}), cast(Any, SimpleNamespace(context=Context(services=resumed)))
    )
    assert command.goto == "act" and clock.sleeps == [pytest.approx(30.0)]


@pytest.mark.parametrize("wait", [float("inf"), 1e300, 1e20])
def test_a_wait_no_header_could_ask_for_is_refused_by_the_budget_not_an_overflow(wait: float) -> None:
    """Whoever hands the budget a wait (a model's header, a checkpoint), one that does not fit raises the budget's
    error, naming a date; before, a wait past datetime's range raised OverflowError while the date was worked out."""
    budget = RateLimitBudget(60)
    with pytest.raises(RateLimitBudgetError) as info:
        budget.claim(wait, FakeClock())
    assert info.value.budget == 60.0 and budget.as_dict() == {"count": 0, "seconds": 0.0}


class BusyOnceStore(MemoryRateStore):
    """A store whose first write is answered busy, as a shared store's can be: the change ran on what was stored, is
    rolled back, `meanwhile` runs (what the process holding the file wrote), and the change runs again on what is
    stored then (a busy retry)."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: Callable[[], object] | None = None
        self.retried = False

    def transact(self, key: str, change: Callable[[AccountRate], T]) -> T:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            with self._lock:
                change(AccountRate.from_json((self._states.get(key) or AccountRate()).to_json()))  # rolled back
            meanwhile()
            self.retried = True
        return super().transact(key, change)


@pytest.mark.parametrize(
    ("peer", "charged"),
    [
        (None, {"count": 1, "seconds": pytest.approx(60.0)}),  # the same state twice: the wait is charged once
        # the retry reads the account's quota renewed by another process: no wait, nothing charged
        (RateLimitInfo(limit=1000, remaining=400, reset_seconds=3600.0), {"count": 0, "seconds": 0.0}),
    ],
)
def test_a_booking_whose_transaction_ran_twice_charges_the_run_once_for_the_wait_it_committed(
    peer: RateLimitInfo | None, charged: dict[str, Any]
) -> None:
    """The store runs `book`'s change twice (a busy retry). The run is charged once, for the wait of the run that was
    committed; before, the charge was made inside the change, so a rolled-back run's 60 s wait was charged though the
    committed one waited nothing."""
    clock, store = FakeClock(), BusyOnceStore()
    governor = RateLimitGovernor(clock=clock, store=store, key="acct")
    governor.observe(RateLimitInfo(limit=1000, remaining=0, reset_seconds=60.0), status_code=200)  # a longer quota
    store.meanwhile = (lambda: governor.observe(peer, status_code=200)) if peer else (lambda: None)
    budget = RateLimitBudget(120)
    wait, ticket = governor.book(budget, "listing")
    assert store.retried and ticket is not None
    assert wait == (pytest.approx(60.0) if peer is None else 0.0)
    assert budget.as_dict() == charged


class CommitFails:
    """A SQLite connection whose COMMIT fails (the disk is full): the change ran, nothing was written."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_booking_whose_commit_failed_charges_the_run_nothing(tmp_path: Path) -> None:
    """The change ran (and found a 30 s hold that fits the budget), then the store's COMMIT failed: no slot was
    booked, the error is the caller's, and the run's budget is untouched; before, the 30 s were charged for a slot
    never booked."""
    clock = FakeClock()
    store = SqliteRateStore(tmp_path / "rate.sqlite")
    governor = RateLimitGovernor(clock=clock, store=store, key="acct")
    governor.observe(RateLimitInfo(retry_after_seconds=30.0), status_code=429)
    budget = RateLimitBudget(120)
    real = store._conn
    store._conn = CommitFails(real)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        governor.book(budget, "listing")
    assert budget.as_dict() == {"count": 0, "seconds": 0.0}
    store._conn = real
    assert store.transact("acct", lambda state: state.sends) == []  # nothing booked
    store.close()


def test_a_booking_past_the_budget_is_refused_inside_its_transaction_booking_nothing() -> None:
    """The check inside the transaction still refuses a wait past what is left (`RateLimitBudgetError`, as `claim`
    says it) and books nothing."""
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock, key="acct")
    governor.observe(RateLimitInfo(retry_after_seconds=30.0), status_code=429)
    budget = RateLimitBudget(10)
    with pytest.raises(RateLimitBudgetError) as info:
        governor.book(budget, "listing")
    assert info.value.wait == pytest.approx(30.0) and info.value.budget == 10.0
    assert budget.as_dict() == {"count": 0, "seconds": 0.0}
    assert governor.store.transact("acct", lambda state: state.sends) == []
