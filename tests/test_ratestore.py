"""One rate budget per account across processes, paced by what the server says.

A discrete-event simulation drives governors against the sandbox's own fixed-window limiter on a FakeClock:
each simulated worker books a slot, sends, and reads the response's headers after a (random) latency, exactly
as `TrutoClient` does. Two governors on two connections to one SQLite file stand for two processes; one test
runs two real processes.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandbox.ratelimit import RateLimiter
from tools.clock import FakeClock
from tools.errors import RateLimitBudgetError
from tools.ratelimit import RateLimitBudget, RateLimitGovernor, RateLimitInfo, Ticket, retry_deadline, retry_wait
from tools.ratestore import AccountRate, MemoryRateStore, SqliteRateStore, shared_rate_store, sqlite_rate_path

ACCOUNT = "ia-shared"


@dataclass
class SimResult:
    sent: list[float] = field(default_factory=list)  # arrival times of the requests the server took
    rate_limited: int = 0
    finished_at: float = 0.0
    waits: list[float] = field(default_factory=list)
    foreign_accepted: int = 0


def simulate(
    clock: FakeClock,
    governors: list[RateLimitGovernor],
    requests_each: int,
    *,
    workers_each: int = 8,
    latency: Callable[[], float] = lambda: 0.002,
    limit: int = 50,
    window: float = 10.0,
    start_gaps: list[float] | None = None,
    foreign: list[float] | None = None,
) -> SimResult:
    """Run `requests_each` requests through each governor, `workers_each` in flight, against a fixed-window server.

    The server is the sandbox's `RateLimiter` (a window opens at its first request; whole-second `reset`, at
    least 1, like the sandbox's headers). Each worker holds its own booked send (its `Ticket`), as each request does.
    """
    server = RateLimiter(clock)
    result = SimResult()
    start = clock.monotonic()
    events: list[tuple[float, int, int, str, tuple[bool, int, float]]] = []
    seq = 0
    left = [requests_each] * len(governors)
    workers = [g for g in range(len(governors)) for _ in range(workers_each)]
    tickets: dict[int, Ticket] = {}  # each worker's booked send, answered by its `observe`

    def push(at: float, worker: int, what: str, value: tuple[bool, int, float] = (True, 0, 0.0)) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, worker, what, value))

    for w, g in enumerate(workers):
        push(start + (start_gaps[g] if start_gaps else 0.0), w, "ready")
    for moment in foreign or []:  # a sender outside the deployment, on the same account: the server counts it
        push(start + moment, -1, "foreign")
    while events:
        at, _, w, what, value = heapq.heappop(events)
        if at > clock.monotonic():
            clock.advance(at - clock.monotonic())
        if what == "foreign":
            result.foreign_accepted += server.check(ACCOUNT, limit, window).allowed
            continue
        g = workers[w]
        gov = governors[g]
        if what == "ready":
            if left[g] <= 0:
                continue
            wait, ticket = gov.book(gov.budget)  # as `acquire` does: a slot, or "ask again then"
            if ticket is None:
                push(at + wait, w, "ready")
                continue
            tickets[w] = ticket
            left[g] -= 1
            result.waits.append(wait)
            push(at + wait + latency(), w, "arrive")
        elif what == "arrive":
            decision = server.check(ACCOUNT, limit, window)
            if decision.allowed:
                result.sent.append(at - start)
            push(at + latency(), w, "respond", (decision.allowed, decision.remaining, decision.reset_after))
        else:  # respond: the sandbox's headers (whole seconds, at least 1)
            allowed, remaining, reset_after = value
            reset = float(max(1, math.ceil(reset_after)))
            info = RateLimitInfo(
                limit=limit, remaining=remaining, reset_seconds=reset, retry_after_seconds=None if allowed else reset
            )
            gov.observe(info, status_code=200 if allowed else 429, ticket=tickets.pop(w))
            if not allowed:
                result.rate_limited += 1
                left[g] += 1
                push(at + retry_wait(gov, retry_deadline(reset, clock)), w, "ready")
            else:
                result.finished_at = at - start
                push(at, w, "ready")
    return result


def max_in_window(times: list[float], window: float = 10.0) -> int:
    ordered = sorted(times)
    return max(sum(1 for u in ordered if t <= u < t + window) for t in ordered)


# --- pacing by what the server says ----------------------------------------------------------------


def test_an_idle_budget_pays_no_spacing_triage_sends_at_once() -> None:
    # Five requests one after another (triage), each after the previous answer: none waits.
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    result = simulate(clock, [gov], 5, workers_each=1)
    assert result.waits == [0.0] * 5
    assert result.rate_limited == 0
    assert result.finished_at < 0.05


def test_a_burst_spends_the_windows_room_then_waits_for_its_reset() -> None:
    # 40 requests at once with 8 in flight fit the first window (room 49): no pacing at all.
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    result = simulate(clock, [gov], 40)
    assert result.rate_limited == 0
    assert result.finished_at < 1.5  # the old governor spaced these 0.209 s apart: 8 s


@pytest.mark.parametrize(("seed", "max_latency", "max_ratio"), [(1, 0.05, 1.04), (2, 0.05, 1.04), (3, 0.15, 1.10)])
def test_a_long_run_takes_no_429_and_keeps_near_the_windows_pace(
    seed: int, max_latency: float, max_ratio: float
) -> None:
    # Responses overtake each other (random latency each way): the server's count is still never exceeded.
    rng = random.Random(seed)
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    n = 1000
    result = simulate(clock, [gov], n, latency=lambda: rng.uniform(0.001, max_latency))
    assert result.rate_limited == 0
    assert len(result.sent) == n
    assert result.finished_at / (n / 5.0) <= max_ratio  # ratio to the floor (requests ÷ 5/s)


def test_every_window_carries_its_whole_limit_the_headroom_spent_in_its_last_second() -> None:
    # The slot of headroom is held back, then spent just before the reset: 50 a window, not 49.
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    n = 1990
    result = simulate(clock, [gov], n, latency=lambda: 0.005)
    assert result.rate_limited == 0
    assert max_in_window(result.sent) == 50
    # 39 full windows then 40 sends: the fixed-window minimum is 390 s; at 49 a window 1990 needs 41 windows, 400 s.
    assert result.finished_at <= 395.0  # (the last window's 40 sends take about 1.5 s: spaced until it speaks)


def test_a_sender_outside_the_deployment_costs_at_most_one_429_a_window_and_no_storm() -> None:
    # Someone else spends one request in each of 20 windows, at a moment we cannot see: the headroom send of
    # those windows may meet a full window (a 429, retried at the reset), never more than that.
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    rng = random.Random(5)
    foreign = [10.0 * k + rng.uniform(0.0, 9.9) for k in range(20)]
    result = simulate(clock, [gov], 1000, latency=lambda: 0.005, foreign=foreign)
    assert len(result.sent) == 1000
    # Each outside send contests one window's last slot at most: one refusal (ours or the outsider's) per send.
    assert result.rate_limited + (len(foreign) - result.foreign_accepted) <= len(foreign)
    early = sum(1 for moment in foreign if moment % 10.0 < 8.0)  # before the windows' last seconds
    assert result.foreign_accepted >= early  # the headroom kept their room until then
    # After our first 429 the headroom is kept for 30 windows: an outsider in every window costs one 429, not 20.
    assert result.rate_limited <= 1
    assert result.finished_at / (1000 / 5.0) <= 1.05


def test_after_a_429_the_headroom_is_kept_for_thirty_windows() -> None:
    def window_with_headroom_spent(refused: bool) -> tuple[RateLimitGovernor, FakeClock]:
        clock = FakeClock()
        gov = RateLimitGovernor(clock=clock, smooth=False)
        gov.observe(RateLimitInfo(remaining=2, reset_seconds=10.0), status_code=200)
        wait, first = gov.book(gov.budget, probe=False)
        assert wait == 0.0  # room 2, headroom 1: one goes now
        gov.observe(RateLimitInfo(remaining=1, reset_seconds=10.0), status_code=200, ticket=first)
        assert gov.book(gov.budget) == (pytest.approx(9.75), None)  # the headroom: ask again just before the reset
        clock.advance(9.75)
        wait, last = gov.book(gov.budget)
        assert (wait, last is not None) == (0.0, True)  # still free: it goes
        if refused:  # something we do not see took it
            refusal = RateLimitInfo(remaining=0, reset_seconds=1.0, retry_after_seconds=1.0)
            gov.observe(refusal, status_code=429, ticket=last)
        else:
            gov.observe(RateLimitInfo(remaining=0, reset_seconds=1.0), status_code=200, ticket=last)
        clock.advance(0.25)
        gov.observe(RateLimitInfo(remaining=1, reset_seconds=10.0), status_code=200)  # a new window, one slot left
        return gov, clock

    calm, _ = window_with_headroom_spent(refused=False)
    assert calm.try_reserve() == (pytest.approx(9.75), False)  # no 429: the headroom is spent again, late
    wary, clock = window_with_headroom_spent(refused=True)
    assert wary.try_reserve() == (pytest.approx(10.0), True)  # after a 429 it is kept: the last slot waits
    clock.advance(300.0)
    wary.observe(RateLimitInfo(remaining=1, reset_seconds=10.0), status_code=200)
    assert wary.try_reserve() == (pytest.approx(9.75), False)  # thirty windows on, it is spent again


# --- one budget across processes -------------------------------------------------------------------


def test_two_governors_on_one_sqlite_file_share_one_budget(tmp_path: Path) -> None:
    # Two processes of one deployment: two store connections to the same file, one clock (wall time).
    clock = FakeClock()
    path = tmp_path / "checkpoints.ratelimit.sqlite"
    first = RateLimitGovernor(clock=clock, store=SqliteRateStore(path), key=ACCOUNT)
    second = RateLimitGovernor(clock=clock, store=SqliteRateStore(path), key=ACCOUNT)
    result = simulate(clock, [first, second], 300, start_gaps=[0.0, 3.3], latency=lambda: 0.01)
    assert result.rate_limited == 0
    assert len(result.sent) == 600
    assert result.finished_at / (600 / 5.0) <= 1.03
    assert first.requests_reserved == second.requests_reserved == 300


def test_two_governors_with_separate_memory_stores_storm_the_shared_account() -> None:
    # The same two runs without a shared store: each spends the whole window, the server answers 429s.
    clock = FakeClock()
    first = RateLimitGovernor(clock=clock, store=MemoryRateStore(), key=ACCOUNT)
    second = RateLimitGovernor(clock=clock, store=MemoryRateStore(), key=ACCOUNT)
    result = simulate(clock, [first, second], 300, start_gaps=[0.0, 3.3], latency=lambda: 0.01)
    assert result.rate_limited > 0


def test_a_429_seen_by_one_process_holds_the_other(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "rate.sqlite"
    first = RateLimitGovernor(clock=clock, store=SqliteRateStore(path), key=ACCOUNT)
    second = RateLimitGovernor(clock=clock, store=SqliteRateStore(path), key=ACCOUNT)
    first.observe(RateLimitInfo(retry_after_seconds=7.0), status_code=429)
    assert second.wait_seconds() == pytest.approx(7.0)
    assert second.reserve() == pytest.approx(7.0)
    assert (first.rate_limited_count, second.rate_limited_count) == (1, 0)  # the counters are each run's own


def test_a_slot_past_the_budget_books_nothing_in_the_shared_store(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteRateStore(tmp_path / "rate.sqlite")
    gov = RateLimitGovernor(clock=clock, store=store, key=ACCOUNT)
    gov.budget = RateLimitBudget(5.0)
    gov.observe(RateLimitInfo(retry_after_seconds=60.0), status_code=429)
    with pytest.raises(RateLimitBudgetError):
        gov.reserve()
    assert store.transact(ACCOUNT, lambda s: list(s.sends)) == []  # rolled back


def test_the_state_survives_a_reopen_and_garbage_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "rate.sqlite"
    store = SqliteRateStore(path)
    store.transact("a", lambda s: s.sends.extend([1.0, 2.0]))
    store.close()
    assert SqliteRateStore(path).transact("a", lambda s: s.sends) == [1.0, 2.0]
    assert AccountRate.from_json("{not json") == AccountRate()


def test_the_shared_store_sits_beside_the_checkpoint_db(tmp_path: Path) -> None:
    state = str(tmp_path / "state" / "checkpoints.sqlite")
    assert sqlite_rate_path(state) == tmp_path / "state" / "checkpoints.ratelimit.sqlite"
    store = shared_rate_store(state)
    assert isinstance(store, SqliteRateStore) and store.shared
    assert shared_rate_store(state) is store
    assert (tmp_path / "state" / "checkpoints.ratelimit.sqlite").stat().st_mode & 0o077 == 0


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from tools.clock import SystemClock
    from tools.ratelimit import RateLimitGovernor
    from tools.ratestore import SqliteRateStore

    class ReadClock(SystemClock):
        # the system clock, remembering the last time it told: the booking's own "now", inside its transaction
        def now(self):
            self.last = super().now()
            return self.last

    path, out, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    clock = ReadClock()
    gov = RateLimitGovernor(limit=21, window_seconds=1.0, clock=clock, store=SqliteRateStore(path), key="ia")
    sent = []
    for _ in range(count):
        wait = gov.reserve()
        sent.append(clock.last.timestamp() + wait)  # the booked slot, whenever a loaded machine wakes the sleeper
        time.sleep(wait)
    open(out, "w").write(json.dumps(sent))
    """
)


def test_two_real_processes_never_overbook_one_window_together(tmp_path: Path) -> None:
    # No server headers here: the shared sliding log alone keeps both processes within 20 sends per 1 s.
    root = Path(__file__).resolve().parent.parent
    db = tmp_path / "rate.sqlite"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(db), str(tmp_path / f"sent{i}.json"), "30"],
            cwd=root,
            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        )
        for i in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    sent = [t for i in range(2) for t in json.loads((tmp_path / f"sent{i}.json").read_text())]
    assert len(sent) == 60
    # The booked slots of both processes: never more than 20 in any 1 s (without the shared log, about 40).
    assert max_in_window(sent, window=1.0 - 1e-6) <= 20


def test_retry_wait_is_what_is_left_of_the_hold() -> None:
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    gov.observe(RateLimitInfo(retry_after_seconds=10.0), status_code=429)
    said = retry_deadline(10.0, clock)  # the error's Retry-After, as a moment
    clock.advance(9.0)
    assert retry_wait(gov, said) == pytest.approx(1.0)  # not the stale 10 s the error said
    assert retry_wait(None, retry_deadline(4.0, clock), clock) == 4.0


def test_processes_naming_one_state_through_a_symlink_share_one_rate_store(tmp_path: Path) -> None:
    from tools.ratestore import sqlite_rate_path

    real = tmp_path / "data" / "state.sqlite"
    real.parent.mkdir()
    real.touch()
    link = tmp_path / "state.sqlite"
    link.symlink_to(real)
    assert sqlite_rate_path(str(link)) == sqlite_rate_path(str(real)) == real.with_name("state.ratelimit.sqlite")


def test_a_row_is_the_json_it_always_was():
    """The row is written with orjson (issue 28: ~20x faster, twice a request); it stays the compact JSON the json
    module wrote, so a store shared with a process of the previous version reads the same state both ways."""
    import json

    from tools.ratestore import AccountRate

    state = AccountRate(
        sends=[1_765_000_000.125, 1_765_000_000.5],
        hold_until=1_765_000_010.0,
        hold_reason="429",
        limit=50,
        remaining=3,
        pending=[1_765_000_000.5],
        observed_at=1_765_000_000.0,
        reset_at=1_765_000_010.0,
    )
    old_text = json.dumps(vars(state), separators=(",", ":"))
    assert state.to_json() == old_text
    assert AccountRate.from_json(old_text) == state
    assert AccountRate.from_json(state.to_json().encode()) == state
    assert AccountRate.from_json("{not json") == AccountRate()
