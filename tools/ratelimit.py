"""The one place that knows about rate limits: the run's wait budget and the per-account governor; what a response
says (header parsing, a 429's retry moment) is read in `tools/ratelimit_headers.py`, and the budget's bookkeeping is
in `tools/ratelimit_budget.py`, whose names it re-exports.

The governor paces requests ahead of the limit and, after a 429, holds every caller until the reset. Its API is
explicit: `ticket = await governor.acquire(budget, sleep)` before a send, `governor.observe(info, status_code=...,
ticket=ticket)` with its answer, and `await governor.wait_to_retry(budget, sleep, retry_at=...)` after a 429. The
`budget` is the calling run's `RateLimitBudget`, passed in by the caller (the run's client holds it): nothing is
looked up from the context.
"""

from __future__ import annotations

import logging
import threading
import weakref
from bisect import bisect_left, bisect_right, insort
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tools import telemetry
from tools.clock import Clock, SystemClock
from tools.ratelimit_budget import DEFAULT_MAX_WAIT, VISIBLE_WAIT_SECONDS, RateLimitBudget
from tools.ratelimit_headers import (
    MAX_HEADER_SECONDS,
    MIN_429_WAIT,
    RateLimitInfo,
    checked_retry_at,
    parse_rate_limit_headers,
    parse_reset,
    parse_retry_after,
    parse_retry_after_ms,
    retry_deadline,
)
from tools.ratestore import AccountRate, MemoryRateStore, RateStore

log = logging.getLogger(__name__)

# read in tools/ratelimit_headers.py, the run's budget in tools/ratelimit_budget.py; importable from here, the rate
# limits' one owner
__all__ = [
    "DEFAULT_MAX_WAIT",
    "MAX_HEADER_SECONDS",
    "MIN_429_WAIT",
    "VISIBLE_WAIT_SECONDS",
    "RateLimitBudget",
    "RateLimitInfo",
    "checked_retry_at",
    "parse_rate_limit_headers",
    "parse_reset",
    "parse_retry_after",
    "parse_retry_after_ms",
    "retry_deadline",
]

# Truto's own documented limit per integrated account: 50 requests per 10 seconds.
DEFAULT_LIMIT = 50
DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_RETRY_AFTER = 10.0
# The slot of headroom is held back for a window's life (a send the server counted and we did not see) and, when
# the server's word says it is still free, spent this long before the window's reset: by then an unseen sender has
# had the window to take it, and a 429 on it costs at most the wait to the reset that every caller makes anyway.
HEADROOM_RELEASE_SECONDS = 0.25
# After a 429 (something we do not see is spending the account's room), the headroom is kept for this many windows.
HEADROOM_HOLD_WINDOWS = 30
# Clocks of the processes sharing a store may disagree by this much before a row counts as written by a clock ahead.
CLOCK_TOLERANCE_SECONDS = 1.0
# A send is never booked further ahead than this many windows past the server's latest word (its reset, a hold):
# pacing alone never needs more. A pacing wait longer than this many windows is claimed from the run's budget.
PACING_HORIZON_WINDOWS = 2


def hold_for_429(info: RateLimitInfo) -> float:
    """How long a 429 holds the account: the longer of its Retry-After and ratelimit-reset, else the default; never
    less than `MIN_429_WAIT` (a server saying 0 is asked again a second later, not at once)."""
    waits = [w for w in (info.retry_after_seconds, info.reset_seconds) if w is not None]
    return max(MIN_429_WAIT, *waits) if waits else DEFAULT_RETRY_AFTER


@dataclass(frozen=True)
class Ticket:
    """One booked send slot (`acquire`): handed back to `observe` with the send's answer, so the governor knows
    that send is no longer in flight. `waited` is the seconds `acquire` slept for it."""

    key: str
    slot: float
    waited: float = 0.0
    store: RateStore | None = field(default=None, repr=False, compare=False)


class RateLimitGovernor:
    """Paces one integrated account's requests, shared by every caller of every process that shares its store.

    - `acquire(budget, sleep)` waits for and books the next send slot (the way requests are paced) and returns its
      `Ticket`; `book()` books one (or says "ask again in this long") without sleeping; `reserve()`/`try_reserve()`
      do the same on the governor's own budget (a governor used on its own: tests, benches).
      While the server's current window has room (its smallest `ratelimit-remaining` of the window, less every
      send still unanswered, less one slot of headroom, before its `ratelimit-reset`), a send goes at once:
      an idle budget bursts (triage pays no spacing). The slot of headroom is held back until
      `HEADROOM_RELEASE_SECONDS` before the reset, and spent if the server's count still has it then (`acquire`
      asks again at that moment rather than booking it ahead), so a window carries its whole limit, and at most
      that one late send can meet a sender we do not see. After a 429 it is kept for `HEADROOM_HOLD_WINDOWS`
      windows: a sender we do not see is about. When the room is spent it waits for the reset. Where the
      server's room is unknown (before its first answer, after a reset, or when the headers speak of a longer
      quota), sends are spaced evenly, at least `window / capacity` apart, and a sliding log keeps any window of
      `window_seconds` at `capacity` sends (`limit` less the headroom).
    - `observe(info, status_code=..., ticket=...)` learns from each response's headers (the ticket's send is no
      longer in flight); a 429 holds every caller until the reset.
    - `wait_seconds()` is the wait it wants right now, without booking; `wait_to_retry()` is the one call a retry
      after a 429 makes: it waits the longer of that and the 429's own Retry-After, claimed from the run's budget.
    - the `budget` passed in (a `RateLimitBudget`: the calling run's) bounds the
      waits the server's limits impose: the part of a booking's wait
      that comes from a 429 hold or a longer quota's `remaining: 0` is claimed from it, and a slot past the
      budget is never booked (`RateLimitBudgetError`). Its own pacing (spacing, waiting out a spent 10 s window)
      is not a rate-limit wait, and is not counted, unless it is longer than pacing ever needs
      (`PACING_HORIZON_WINDOWS` windows: sends booked far ahead by other runs): then it is claimed like any other.
      Every time read from the store is first bounded by the window it describes (`_bounded`): a row written by
      a clock ahead of ours is taken back, so no clock makes a wait longer than the server could have asked for.
    The state lives in `store` (`tools/ratestore.py`) under `key`: in memory by default, or a SQLite/PostgreSQL
    store that every process of a deployment shares, so they all spend one budget. The counters
    (`requests_reserved`, `rate_limited_count`, `total_wait_seconds`) are this governor's own; so is `budget`, the
    one claimed from when a caller passes none (`reserve`, `try_reserve`: a governor used on its own).
    Thread-safe and asyncio-safe: every change is one store transaction, with no awaiting inside.
    """

    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        headroom: int | None = None,
        clock: Clock | None = None,
        ceiling: int | None = None,
        smooth: bool = True,
        store: RateStore | None = None,
        key: str = "default",
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        # Truto's own per-account limit caps whatever quota the provider's headers announce.
        self.ceiling = ceiling if ceiling is not None else limit
        self._configured_limit = min(limit, self.ceiling)
        self.smooth = smooth
        self.window = window_seconds
        self._headroom = headroom
        self.store: RateStore = store if store is not None else MemoryRateStore()
        self.key = key
        self.rate_limited_count = 0
        self.requests_reserved = 0
        self.total_wait_seconds = 0.0
        # the budget of a governor used on its own (`reserve`, `try_reserve`); a run passes its own to `acquire`
        self.budget = RateLimitBudget()

    # --- time and limits -------------------------------------------------------------------------------

    def _now(self) -> float:
        """Seconds on the store's clock: wall-clock Unix time when processes share it, else monotonic."""
        return self.clock.now().timestamp() if self.store.shared else self.clock.monotonic()

    def _limit(self, state: AccountRate) -> int:
        learned = state.limit if state.limit is not None else self._configured_limit
        return max(1, min(learned, self.ceiling))

    @property
    def limit(self) -> int:
        """The limit in force: what the headers last announced, capped by `ceiling` (Truto's own 50)."""
        return self.store.transact(self.key, self._limit)

    @limit.setter
    def limit(self, value: int) -> None:
        self._configured_limit = min(value, self.ceiling)

    def _capacity(self, state: AccountRate) -> int:
        limit = self._limit(state)
        return max(1, limit - self._headroom_for(limit))

    def _headroom_for(self, limit: int) -> int:
        return self._headroom if self._headroom is not None else (1 if limit > 1 else 0)

    @property
    def capacity(self) -> int:
        """Sends allowed per window where the server's room is unknown: the limit minus one slot of headroom."""
        return self.store.transact(self.key, self._capacity)

    @property
    def spacing(self) -> float:
        """The smallest gap between two sends while the server's room is unknown: the window over its capacity.

        Even spacing (rather than a burst of `capacity` then a pause) keeps a server's fixed windows, whose
        starts drift with network jitter, from ever catching more than the limit when nothing says where they are.
        """
        return self._spacing(self.capacity)

    def _spacing(self, capacity: int) -> float:
        return self.window / capacity + 0.001  # a hair more, so no closed window holds capacity + 1

    # --- the schedule ----------------------------------------------------------------------------------

    @staticmethod
    def _unobserved(state: AccountRate) -> int:
        """Sends the server's smallest `remaining` may not have counted: every send booked and not answered yet.

        Every answered send of the window arrived no later than the one that reported the smallest `remaining`
        (the count only grows), so it is in that count; an unanswered one may or may not be (counted, to be safe).
        A send never answered (a timeout) leaves `pending` with the sends two windows later.
        """
        return len(state.pending)

    def _short_window(self, state: AccountRate) -> bool:
        """The server's `reset` is within one of our windows (Truto's own limit), not a longer quota."""
        return state.reset_at - state.observed_at <= self.window + 1.0

    def _room(self, state: AccountRate) -> int:
        """Sends the server's current window still takes (its word, less what it has not seen yet)."""
        remaining = state.remaining if state.remaining is not None else 0
        if self._short_window(state):  # Truto's own window never holds more than its limit
            remaining = min(remaining, self._limit(state))
        return remaining - self._unobserved(state)

    def _next_slot(self, state: AccountRate, now: float, *, probe: bool = False) -> tuple[float, bool]:
        """The next send slot, and whether it is only a moment to ask again (`probe`: the window's last slot, the
        headroom, is decided in the window's last moment on what the server says then, never booked ahead)."""
        slot = max(now, state.hold_until)
        if state.remaining is not None and slot < state.reset_at:
            room = self._room(state)
            headroom = self._headroom_for(self._limit(state))
            if room - headroom > 0 and self._short_window(state):
                return slot, False  # the server says this window has room: spend it now
            if room >= 1 and headroom > 0 and self._short_window(state) and now >= state.headroom_held_until:
                release = state.reset_at - HEADROOM_RELEASE_SECONDS
                if slot >= release - 1e-6:  # (a sleep until `release` may land a rounding error short of it)
                    return slot, False  # the window's last moment, and the server's count still has its last slot
                if probe:
                    return release, True  # ask again then, on the count as it is then
            if room - headroom <= 0:
                slot = state.reset_at  # this window is spent: its reset is the next free moment
        capacity = self._capacity(state)
        sends = state.sends
        if self.smooth and sends:
            slot = max(slot, sends[-1] + self._spacing(capacity))
        recent = len(sends) - bisect_right(sends, slot - self.window)
        if recent >= capacity:
            slot = max(slot, sends[len(sends) - capacity] + self.window)
        return slot, False

    def _server_wait(self, state: AccountRate, now: float) -> tuple[float, str]:
        """The part of waiting that the server's limits impose (429 hold, `remaining: 0`), and why."""
        until, why = 0.0, ""
        if state.hold_until > now:
            until, why = state.hold_until, state.hold_reason or "429 from Truto"
        if (
            state.remaining is not None
            and self._room(state) - self._headroom_for(self._limit(state)) <= 0  # as `_next_slot` waits for it
            and state.reset_at > max(now, until)
            and not self._short_window(state)  # waiting out Truto's own window is pacing, not a limit's wait
        ):
            until, why = state.reset_at, "ratelimit-remaining 0 until ratelimit-reset"
        return max(0.0, until - now), why

    def _bounded(self, state: AccountRate, now: float) -> AccountRate:
        """The state with every time bounded by the window it describes, and stamped as written now.

        A row written by a clock ahead of ours (a peer's skewed clock, or ours before NTP stepped it back) has a
        `written_at` in our future: all its times are taken back by that much. Then, whoever wrote it: a window was
        observed no later than now and ends no later than its observed length after that (at most a header's
        longest reset); a hold lasts no longer than it was set for; the headroom is held for at most its windows;
        and no send is booked further than its queue (a window per `capacity` sends booked, and
        `PACING_HORIZON_WINDOWS` more) past the latest of now, the hold and the window's reset. A wait is then never
        longer than what the server, or the sends ahead of it, could have asked for.
        """
        ahead = state.written_at - now
        if ahead > CLOCK_TOLERANCE_SECONDS and self.store.shared:
            log.warning(
                "the shared rate-limit state of account %s was written by a clock %.0f s ahead of this one: its "
                "times are taken back by that much",
                self.key.rsplit("#", 1)[-1],  # the account id, not the base URL
                ahead,
            )
            state.sends = [t - ahead for t in state.sends]
            state.pending = [t - ahead for t in state.pending]
            for name in ("hold_until", "hold_from", "observed_at", "reset_at", "headroom_held_until"):
                value = getattr(state, name)
                if value:
                    setattr(state, name, value - ahead)
        length = min(max(0.0, state.reset_at - state.observed_at), MAX_HEADER_SECONDS)
        state.observed_at = min(state.observed_at, now)
        state.reset_at = min(state.reset_at, state.observed_at + length)
        if state.hold_from:  # (a row from before `hold_from` was kept: a hold no longer than a header may ask)
            hold = min(max(0.0, state.hold_until - state.hold_from), MAX_HEADER_SECONDS)
            state.hold_from = min(state.hold_from, now)
            state.hold_until = min(state.hold_until, state.hold_from + hold)
        else:
            state.hold_until = min(state.hold_until, now + MAX_HEADER_SECONDS)
        state.headroom_held_until = min(state.headroom_held_until, now + HEADROOM_HOLD_WINDOWS * self.window)
        # sends booked ahead keep at most `capacity` a window: the queue of them reaches this far, and no further
        queue = len(state.sends) // self._capacity(state) + PACING_HORIZON_WINDOWS
        latest = max(now, state.hold_until, state.reset_at if state.remaining is not None else now)
        horizon = latest + queue * self.window
        state.sends = [min(t, horizon) for t in state.sends]  # sorted stays sorted
        state.pending = [min(t, horizon) for t in state.pending]
        state.written_at = now
        return state

    def _prune(self, state: AccountRate, now: float) -> None:
        for times in (state.sends, state.pending):  # a request never answered (a timeout) drops out here
            cut = bisect_right(times, now - 2 * self.window)
            if cut:
                del times[:cut]

    def wait_seconds(self) -> float:
        """How long a caller should wait before the next request, without booking a slot."""

        def look(state: AccountRate) -> float:
            now = self._now()
            self._bounded(state, now)
            return max(0.0, self._next_slot(state, now, probe=True)[0] - now)

        return self.store.transact(self.key, look)

    def reserve(self, what: str = "") -> float:
        """Book the next slot on the governor's own budget; return the seconds to wait before sending (0 when free).
        The window's last slot (the headroom) is booked only in the window's last moment: booked ahead, a send
        waits for the reset instead.

        Raises `RateLimitBudgetError` (booking nothing) when the server-imposed part of the wait does not fit
        what is left of the budget.
        """
        return self.book(self.budget, what, probe=False)[0]

    def try_reserve(self, what: str = "", *, probe: bool = True) -> tuple[float, bool]:
        """`book` on the governor's own budget: `(wait, True)` when a slot was booked, `(wait, False)` for "ask
        again then"."""
        wait, ticket = self.book(self.budget, what, probe=probe)
        return wait, ticket is not None

    def book(self, budget: RateLimitBudget, what: str = "", *, probe: bool = True) -> tuple[float, Ticket | None]:
        """Book the next slot, claiming any server-imposed wait from `budget`, and return `(wait, ticket)`; or, when
        the next free slot may be the window's headroom, book nothing and return `(wait, None)`: wait, then ask
        again (the server's count decides then). Raises `RateLimitBudgetError` (booking nothing) when the wait does
        not fit what is left of `budget`. The store's transaction only checks the budget (it may run its change
        more than once, or fail to commit after it ran); the wait is charged once, after it committed."""

        def take(state: AccountRate) -> tuple[float, float, bool, tuple[float, float, str] | None]:
            # Only checks the budget: a store may run this more than once (a busy retry) or fail after it ran (its
            # commit), so the wait the committed run asked for is charged once, below, after the transaction.
            now = self._now()
            self._bounded(state, now)
            self._prune(state, now)
            slot, ask_again = self._next_slot(state, now, probe=probe)
            server_wait, why = self._server_wait(state, now)
            if server_wait <= 0 and slot - now > PACING_HORIZON_WINDOWS * self.window:
                # longer than pacing ever needs (sends booked far ahead by other runs): a wait like any other
                server_wait, why = slot - now, "pacing: the account's sends booked ahead"
            due = None
            if server_wait > 0:
                due = (server_wait, self.clock.monotonic(), why)
                budget.check(server_wait, self.clock, why=why)
            if not ask_again:
                insort(state.sends, slot)
                insort(state.pending, slot)
            return slot, now, not ask_again, due

        slot, now, booked, due = self.store.transact(self.key, take)
        wait = max(0.0, slot - now)
        if due is not None:
            budget.charge(due[0], due[1], what=what, why=due[2])
        elif wait > VISIBLE_WAIT_SECONDS:  # pacing, not budgeted, but a wait a person would notice
            log.info(
                "waiting %.0f s%s: pacing (the account's sends booked ahead of this one)",
                wait,
                f" before {what}" if what else "",
            )
        self.total_wait_seconds += wait
        if not booked:
            return wait, None
        self.requests_reserved += 1
        return wait, Ticket(self.key, slot, store=self.store)

    async def acquire(
        self, budget: RateLimitBudget, sleep: Callable[[float], Awaitable[None]], what: str = ""
    ) -> Ticket:
        """Wait for, and book, the next send slot: the way a request is paced (the Truto client, the MCP source).
        Server-imposed waits are claimed from `budget` (the calling run's). Returns the slot's `Ticket`, for
        `observe`; `ticket.waited` is the seconds slept."""
        waited = 0.0
        while True:
            wait, ticket = self.book(budget, what)
            if wait > 0:
                with telemetry.waiting(wait, "pacing", self.key):
                    await sleep(wait)
                waited += wait
            if ticket is not None:
                return Ticket(ticket.key, ticket.slot, waited, ticket.store)

    def claim_wait(self, budget: RateLimitBudget, seconds: float, what: str = "") -> float:
        """A retry is about to sleep `seconds` on this account's limit: claim it from `budget` (or raise)."""

        def reason(state: AccountRate) -> str:
            now = self._now()
            return self._server_wait(self._bounded(state, now), now)[1]

        why = self.store.transact(self.key, reason)
        return budget.claim(seconds, self.clock, what=what, why=why or "rate limited (429)")

    def retry_delay(self, retry_at: float | None = None) -> float:
        """How long a retry after a 429 waits from now: what is left of the account's hold and schedule (shared by
        every caller and process; `wait_seconds`), and at least what is left of the 429's own Retry-After
        (`retry_at`, Unix seconds on this governor's clock: `retry_deadline(error, clock)`)."""
        own = max(0.0, retry_at - self.clock.now().timestamp()) if retry_at is not None else 0.0
        return max(self.wait_seconds(), own)

    async def wait_to_retry(
        self,
        budget: RateLimitBudget,
        sleep: Callable[[float], Awaitable[None]],
        *,
        retry_at: float | None = None,
        what: str = "",
        why: str = "rate limited (429)",
    ) -> float:
        """After a 429: wait `retry_delay(retry_at)` (the server's Retry-After / ratelimit-reset, and the account's
        hold), claimed from `budget` first (`RateLimitBudgetError`, nothing slept, when it does not fit). Returns
        the seconds waited. The one call a retry makes (the graphs' `wait_and_retry`, `call_with_retries`)."""
        delay = self.retry_delay(retry_at)
        self.claim_wait(budget, delay, what)
        with telemetry.waiting(delay, "retry", self.key, why):
            await sleep(delay)
        return delay

    def observe(self, info: RateLimitInfo, *, status_code: int, ticket: Ticket | None = None) -> float:
        """Learn from a response. Returns the hold (seconds) now in force; > 0 after a 429.

        `ticket` (from `acquire`/`book`) is the send this response answers: it is no longer in flight.
        """
        booked = ticket if ticket is not None and ticket.store is self.store and ticket.key == self.key else None

        def learn(state: AccountRate) -> float:
            now = self._now()
            self._bounded(state, now)
            if booked is not None:
                index = bisect_left(state.pending, booked.slot)  # this request is answered: no longer in flight
                if index < len(state.pending) and state.pending[index] == booked.slot:
                    del state.pending[index]
            if info.limit and info.limit > 0:
                state.limit = min(info.limit, self.ceiling)
            if info.remaining is not None:
                reset_at = now + (info.reset_seconds if info.reset_seconds is not None else 0.0)
                if state.remaining is None or now >= state.reset_at or reset_at > state.reset_at + self.window / 2:
                    # a new window (or the first word): its count and end replace the old
                    state.remaining, state.reset_at, state.observed_at = info.remaining, reset_at, now
                elif reset_at >= state.reset_at - self.window / 2:
                    # The same window. Its count only grows, so the smallest `remaining` is the latest count (the
                    # responses may overtake each other); `reset` is whole seconds read after the request arrived,
                    # an upper bound of the window's end, so the smallest one is the closest.
                    state.remaining = min(state.remaining, info.remaining)
                    state.reset_at = min(state.reset_at, reset_at)
                # else: a straggler from a window already over says nothing about this one
            if status_code == 429:
                hold = hold_for_429(info)
                state.headroom_held_until = max(state.headroom_held_until, now + HEADROOM_HOLD_WINDOWS * self.window)
                if now + hold > state.hold_until:
                    state.hold_until, state.hold_from = now + hold, now
                    said = (
                        "Retry-After"
                        if info.retry_after_seconds is not None or info.reset_seconds is not None
                        else "no usable Retry-After; default back-off"
                    )
                    state.hold_reason = f"429 rate limited ({said})"
            return max(0.0, state.hold_until - now)

        if status_code == 429:
            self.rate_limited_count += 1
            telemetry.rate_limited(self.key)
        return self.store.transact(self.key, learn)


def retry_wait(governor: RateLimitGovernor | None, retry_at: float | None, clock: Clock | None = None) -> float:
    """How long a 429 waits before its retry, from now: with the account's governor, `governor.retry_delay`; without
    one, what is left until `retry_at` (on `clock`)."""
    if governor is not None:
        return governor.retry_delay(retry_at)
    if retry_at is None:
        return 0.0
    now = (clock or SystemClock()).now().timestamp()
    return max(0.0, retry_at - now)


class GovernorRegistry:
    """Builds the governors of this process, each with what it needs; one account state per account and clock.

    `for_account` returns a new governor (its own budget and counters) on the account's shared state: in
    `store` when given (a SQLite/PostgreSQL store every process reaches), else in this process's memory, one
    state per clock (a test's `FakeClock` never sees another test's sends). Nothing is re-pointed: two callers
    with different clocks or limits each get what they asked for.
    """

    def __init__(self, clock: Clock | None = None, limit: int = DEFAULT_LIMIT) -> None:
        self._clock = clock
        self.limit = limit
        self._system_store = MemoryRateStore()
        self._stores: weakref.WeakKeyDictionary[Any, MemoryRateStore] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _memory_store(self, clock: Clock) -> MemoryRateStore:
        if isinstance(clock, SystemClock):
            return self._system_store  # one monotonic clock for the whole process
        with self._lock:
            store = self._stores.get(clock)
            if store is None:
                store = self._stores[clock] = MemoryRateStore()
            return store

    def for_account(
        self,
        integrated_account_id: str,
        *,
        clock: Clock | None = None,
        limit: int | None = None,
        store: RateStore | None = None,
        base_url: str = "",
    ) -> RateLimitGovernor:
        clock = clock or self._clock or SystemClock()
        limit = limit if limit is not None else self.limit
        key = f"{base_url.rstrip('/')}#{integrated_account_id}" if base_url else integrated_account_id
        return RateLimitGovernor(
            clock=clock, limit=limit, store=store if store is not None else self._memory_store(clock), key=key
        )


# The process-wide registry: clients built for the same account share its state.
GOVERNORS = GovernorRegistry()
