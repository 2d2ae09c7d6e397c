"""Where an account's rate-limit state lives, so every process of a deployment spends one budget.

The governor (`tools/ratelimit.py`) keeps no pacing state of its own: it reads and changes an `AccountRate`
inside `store.transact(key, change)`, one short transaction per `reserve`/`observe`. Three stores:

- `MemoryRateStore`: one process (tests, the embedded sandbox, whose limit is per process anyway).
- `SqliteRateStore`: a SQLite file every process on the machine reaches (by default beside the checkpoint DB);
  `BEGIN IMMEDIATE` serialises the read-change-write across processes. Each transaction is well under a
  millisecond, so the synchronous call does not hold the event loop for long.
- `PostgresRateStore`: a PostgreSQL table (when `COVIU_AGENT_STATE` is a `postgresql://` URL), the row locked
  with `SELECT ... FOR UPDATE` for the read-change-write: every worker of a LangGraph server on any machine.

Times in a shared store are wall-clock Unix seconds (`Clock.now()`), the only clock all processes share;
`MemoryRateStore` uses the process's monotonic clock (`shared = False`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from tools.private_files import private_file
from tools.sqlite_wal import retry_busy, wal_mode

log = logging.getLogger(__name__)

T = TypeVar("T")

TABLE = "coviu_rate_limit"
# Processes that start at once on a new PostgreSQL database (a fleet's workers, a server's) would create the same
# tables at once: `CREATE TABLE IF NOT EXISTS` is not safe against that (a unique violation in pg_type, or a
# deadlock). Every first-use set-up of the state store (checkpoints, audit tables, this table) holds this
# advisory lock, so they take turns. It is only ever tried (`pg_try_advisory_*`, again every 50 ms, outside any
# transaction in between), never waited on: LangGraph's migrations build an index CONCURRENTLY, which waits for every
# open transaction to end, and one waiting on the lock would never end (a deadlock PostgreSQL does not detect).
POSTGRES_SETUP_LOCK = 0x636F_7669  # "covi"
POSTGRES_SETUP_SECONDS = 120.0  # how long a process waits for another's set-up
# The write-ahead log stays small: checkpointed every 64 pages (about 256 KiB) and cut back to 64 KiB after each
# checkpoint (SQLite keeps its largest size otherwise: 4 MiB at the default 1,000 pages), and checkpointed and cut to
# nothing when the process closes its stores (`close`, and at exit for the stores `shared_rate_store` opened).
WAL_AUTOCHECKPOINT_PAGES = 64
WAL_SIZE_LIMIT = 64 * 1024


@dataclass
class AccountRate:
    """One account's rate-limit state, as every process sees it.

    `sends`: booked send times (sorted), the last two windows' worth. `remaining`/`reset_at`: what the server last
    said about its current window (the smallest `remaining` of that window, and the earliest end its `reset`s
    allow), `observed_at` when that window was first seen. `pending`: booked sends not answered yet.
    `hold_until`: a 429's hold. `limit`: the limit the headers announced. `headroom_held_until`: after a 429 (a
    sender we do not see is spending the account's room), the slot of headroom is not spent until then.
    `hold_from`: when the hold was set. `written_at`: the writer's clock at its last change. A reader bounds every
    time by the window it describes (`RateLimitGovernor._bounded`): a peer's clock ahead, or NTP stepping this
    one back, never makes a wait longer than the server could have asked for.
    """

    sends: list[float] = field(default_factory=list)
    hold_until: float = 0.0
    hold_reason: str = ""
    limit: int | None = None
    remaining: int | None = None
    pending: list[float] = field(default_factory=list)
    observed_at: float = 0.0
    reset_at: float = 0.0
    headroom_held_until: float = 0.0
    hold_from: float = 0.0  # when the hold was set: a hold describes [hold_from, hold_until]
    written_at: float = 0.0  # the writer's clock at its last change: a row from a clock ahead is taken back

    def to_json(self) -> str:
        # the instance's fields as they are (a flat dataclass: its __dict__ in field order): `dataclasses.asdict`
        # deep-copies every list, a third of a store transaction's CPU (cProfile). orjson writes the same compact
        # JSON as `json.dumps(..., separators=(",", ":"))` in ~2 us where the json module took ~45 us (a hundred
        # float send times), and reads it in ~2 us instead of ~20: two transactions a request (issue 28).
        return orjson.dumps(vars(self)).decode()

    @classmethod
    def from_json(cls, text: str | bytes | None) -> AccountRate:
        if not text:
            return cls()
        try:
            data: dict[str, Any] = orjson.loads(text)
            return cls(
                sends=[float(t) for t in data.get("sends", [])],
                hold_until=float(data.get("hold_until", 0.0)),
                hold_reason=str(data.get("hold_reason", "")),
                limit=None if data.get("limit") is None else int(data["limit"]),
                remaining=None if data.get("remaining") is None else int(data["remaining"]),
                pending=[float(t) for t in data.get("pending", [])],
                observed_at=float(data.get("observed_at", 0.0)),
                reset_at=float(data.get("reset_at", 0.0)),
                headroom_held_until=float(data.get("headroom_held_until", 0.0)),
                hold_from=float(data.get("hold_from", 0.0)),
                written_at=float(data.get("written_at", 0.0)),
            )
        except (ValueError, TypeError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            log.warning("the shared rate-limit state was unreadable; starting it afresh")
            return cls()


class RateStore(Protocol):
    """Runs `change` on one account's state atomically (no other process or thread in between)."""

    # True when other processes share it: its times are then wall-clock seconds.
    shared: bool

    def transact(self, key: str, change: Callable[[AccountRate], T]) -> T:
        """Load `key`'s state, apply `change` (which mutates it), save it; if `change` raises, nothing is saved.

        A store may run `change` more than once (a retry) or fail after it ran (its write or commit): `change` only
        reads and changes the state, and whatever else follows from it is done once `transact` returned (the
        governor charges a run's budget then)."""
        ...

    def close(self) -> None: ...


class MemoryRateStore:
    """One process's state: a dict under a lock. The default, and the fast path for tests."""

    shared = False

    def __init__(self) -> None:
        self._states: dict[str, AccountRate] = {}
        self._lock = threading.Lock()

    def transact(self, key: str, change: Callable[[AccountRate], T]) -> T:
        with self._lock:
            state = self._states.get(key)
            # a copy to change (lists copied, not a JSON round trip): on an exception the stored state is untouched
            work = (
                replace(state, sends=list(state.sends), pending=list(state.pending))
                if state is not None
                else AccountRate()
            )
            result = change(work)
            self._states[key] = work
            return result

    def close(self) -> None:
        return None


class SqliteRateStore:
    """The state in a SQLite file (WAL), each change one `BEGIN IMMEDIATE` transaction: safe across processes."""

    shared = True

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = private_file(Path(path).expanduser())
        self._lock = threading.Lock()
        self._conn = self._connect(busy_timeout)
        try:
            self._initialise(time.monotonic() + busy_timeout)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked past the timeout, permissions, ...: not corrupt
                raise
            # garbage or truncated: the file only holds pacing hints, so it is set aside (kept for a look) and rebuilt
            self._conn.close()
            aside = set_aside(self.path)
            log.warning(
                "rate-limit store %s is unreadable (%s): set aside as %s and rebuilt empty (it only holds pacing "
                "hints; the first requests are paced from scratch)",
                self.path,
                exc,
                aside.name,
            )
            private_file(self.path)
            self._conn = self._connect(busy_timeout)
            self._initialise(time.monotonic() + busy_timeout)

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        return sqlite3.connect(str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False)

    def _initialise(self, deadline: float) -> None:
        """WAL mode and the table, retried while other processes opening the file at once hold it
        (`tools.sqlite_wal`)."""

        def initialise() -> None:
            with self._lock:
                wal_mode(self._conn, deadline)
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
                self._conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                # a truncated file can open and still be unreadable further in (the store is a few pages: fast)
                checked = str(self._conn.execute("PRAGMA quick_check").fetchone()[0])
                if checked != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {checked[:200]}")
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (account TEXT PRIMARY KEY, state TEXT NOT NULL)"
                )

        retry_busy(initialise, deadline)

    def transact(self, key: str, change: Callable[[AccountRate], T]) -> T:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(f"SELECT state FROM {TABLE} WHERE account = ?", (key,)).fetchone()
                state = AccountRate.from_json(row[0] if row else None)
                result = change(state)
                conn.execute(
                    f"INSERT INTO {TABLE} (account, state) VALUES (?, ?) "
                    "ON CONFLICT(account) DO UPDATE SET state = excluded.state",
                    (key, state.to_json()),
                )
            except BaseException:
                # SQLite may have rolled back already (a write that failed: full, I/O, busy): its error is the one
                # to raise, not "no transaction is active"
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                # a COMMIT that failed (busy, disk full) can leave the transaction open: every later BEGIN on this
                # connection would fail ("cannot start a transaction within a transaction")
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

    def close(self) -> None:
        """Checkpoint the write-ahead log into the file and cut it to nothing (if another process is in the middle of
        a transaction, this gives up after a moment: its own checkpoints keep the log small), then close."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA busy_timeout=200")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # closed already, or busy: the log stays at most its cap
                log.debug("rate store: the closing checkpoint did not run (%s)", type(exc).__name__)
            self._conn.close()


class PostgresRateStore:
    """The state in a PostgreSQL table; each change locks the account's row (`SELECT ... FOR UPDATE`)."""

    shared = True

    def __init__(self, url: str) -> None:
        import psycopg

        self._lock = threading.Lock()
        self._url = url
        self._conn = psycopg.connect(url, autocommit=False)
        deadline = time.monotonic() + POSTGRES_SETUP_SECONDS
        with self._lock:
            while True:  # one process at a time creates the table (POSTGRES_SETUP_LOCK)
                with self._conn.transaction():
                    row = self._conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (POSTGRES_SETUP_LOCK,)).fetchone()
                    if row and row[0]:
                        self._conn.execute(
                            f"CREATE TABLE IF NOT EXISTS {TABLE} (account TEXT PRIMARY KEY, state TEXT NOT NULL)"
                        )
                        break
                if time.monotonic() > deadline:
                    raise psycopg.OperationalError("another process has been setting up the rate store for too long")
                time.sleep(0.05)

    def transact(self, key: str, change: Callable[[AccountRate], T]) -> T:
        """As the protocol says; a connection the server ended (a restart, a failover, an idle timeout) is replaced:
        a change whose COMMIT was not sent yet runs again on the new one (once), a lost COMMIT is the caller's error
        (it may have been written), and the next change runs on a new connection either way."""
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                if self._conn.closed:
                    self._conn = psycopg.connect(self._url, autocommit=False)
                committing = False
                try:
                    with self._conn.transaction():
                        self._conn.execute(
                            f"INSERT INTO {TABLE} (account, state) VALUES (%s, %s) ON CONFLICT (account) DO NOTHING",
                            (key, AccountRate().to_json()),
                        )
                        row = self._conn.execute(
                            f"SELECT state FROM {TABLE} WHERE account = %s FOR UPDATE", (key,)
                        ).fetchone()
                        state = AccountRate.from_json(row[0] if row else None)
                        result = change(state)  # an exception rolls the transaction back
                        self._conn.execute(f"UPDATE {TABLE} SET state = %s WHERE account = %s", (state.to_json(), key))
                        committing = True
                    return result
                except psycopg.OperationalError:
                    if attempt == 2 or committing or not self._conn.closed:
                        raise
        raise AssertionError("unreachable")  # the second attempt returned or raised

    def close(self) -> None:
        with self._lock:
            self._conn.close()


async def postgres_setup(conn: Any, statements: Any) -> None:
    """Run set-up statements (an autocommit `psycopg.AsyncConnection`) in one transaction holding
    POSTGRES_SETUP_LOCK, tried every 50 ms (never waited on) until `POSTGRES_SETUP_SECONDS`."""
    import asyncio

    import psycopg

    deadline = time.monotonic() + POSTGRES_SETUP_SECONDS
    while True:
        async with conn.transaction():
            row = await (await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (POSTGRES_SETUP_LOCK,))).fetchone()
            if row and row[0]:
                for statement in statements:
                    await conn.execute(statement)
                return
        if time.monotonic() > deadline:
            raise psycopg.OperationalError("another process has been setting up the state store for too long")
        await asyncio.sleep(0.05)


def set_aside(path: Path) -> Path:
    """Rename an unreadable SQLite file (and its -wal/-shm companions) to `<name>.corrupt-<unix time>`."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):  # no companion (or another process set it aside first)
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def sqlite_rate_path(state: str) -> Path:
    """The rate-limit file beside a SQLite checkpoint DB: `checkpoints.sqlite` -> `checkpoints.ratelimit.sqlite`
    (beside the file itself: processes naming one store through a symlink share one pacing)."""
    path = Path(state).expanduser().resolve()
    return path.with_name(f"{path.stem}.ratelimit.sqlite")


_OPENED: dict[str, RateStore] = {}
_OPENED_LOCK = threading.Lock()


def close_shared_rate_stores() -> None:
    """Close every store `shared_rate_store` opened (at the process's exit: a SQLite store's log is checkpointed and
    cut, so no write-ahead log is left beside the state after a run)."""
    with _OPENED_LOCK:
        stores = list(_OPENED.values())
        _OPENED.clear()
    for store in stores:
        try:
            store.close()
        except Exception as exc:  # closing at exit: nothing to do about a failure but say it
            log.debug("rate store: closing failed (%s)", type(exc).__name__)


atexit.register(close_shared_rate_stores)


def shared_rate_store(state: str) -> RateStore:
    """The store every process of this deployment reaches, for `COVIU_AGENT_STATE` (one per process and state).

    A `postgresql://` URL: a table in that database. Anything else is the checkpoint DB's path: a SQLite file
    beside it.
    """
    with _OPENED_LOCK:
        store = _OPENED.get(state)
        if store is None:
            if state.startswith(("postgresql://", "postgres://")):
                store = PostgresRateStore(state)
            else:
                store = SqliteRateStore(sqlite_rate_path(state))
            _OPENED[state] = store
        return store
