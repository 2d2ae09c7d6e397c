"""Opening the shared rate-limit store waits out SQLite's busy and locked answers by their error codes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tools.ratestore import SqliteRateStore


def coded(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


class Flaky:
    """A connection whose first `fails` statements fail with `error`."""

    def __init__(self, conn: sqlite3.Connection, error: sqlite3.OperationalError, fails: int) -> None:
        self.conn, self.error, self.fails = conn, error, fails

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self.fails:
            self.fails -= 1
            raise self.error
        return self.conn.execute(sql, *args)


# the message says nothing of "locked": the code decides (SQLITE_BUSY_RECOVERY is an extended busy code)
@pytest.mark.parametrize("code", [sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, 261])
def test_a_busy_or_locked_store_is_waited_for(tmp_path: Path, code: int) -> None:
    store = SqliteRateStore(tmp_path / "rate.sqlite")
    store._conn = Flaky(store._conn, coded("try again later", code), fails=2)  # type: ignore[assignment]
    store._initialise(time.monotonic() + 5)


def test_another_operational_error_is_raised_at_once_even_if_it_says_locked(tmp_path: Path) -> None:
    store = SqliteRateStore(tmp_path / "rate.sqlite")
    error = coded("attempt to write a readonly database (file locked read-only)", sqlite3.SQLITE_READONLY)
    store._conn = Flaky(store._conn, error, fails=1)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._initialise(time.monotonic() + 5)


class CommitBusy:
    """A connection whose next COMMIT is answered busy: SQLite leaves the transaction open (it may be retried)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.failed = conn, False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and not self.failed:
            self.failed = True
            raise coded("database is locked", sqlite3.SQLITE_BUSY)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_transaction_whose_commit_failed_is_rolled_back_and_the_store_still_works(tmp_path: Path) -> None:
    """The failed COMMIT's error is the caller's, its change is not kept, and the next transaction runs; before, the
    transaction stayed open and every later one failed: "cannot start a transaction within a transaction"."""
    store = SqliteRateStore(tmp_path / "rate.sqlite")
    store._conn = CommitBusy(store._conn)  # type: ignore[assignment]

    def book(slot: float) -> list[float]:
        def change(state: Any) -> list[float]:
            state.sends.append(slot)
            return list(state.sends)

        return store.transact("acct", change)

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        book(1.0)
    assert book(2.0) == [2.0]
    store.close()


class WriteFullRolledBack:
    """A connection whose next write fails "disk full" and, as SQLite may for SQLITE_FULL / IOERR / NOMEM / BUSY,
    rolls the transaction back itself."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.failed = conn, False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("INSERT") and not self.failed:
            self.failed = True
            self.conn.execute("ROLLBACK")
            raise coded("database or disk is full", sqlite3.SQLITE_FULL)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_write_that_failed_and_was_rolled_back_by_sqlite_raises_its_own_error(tmp_path: Path) -> None:
    """The caller sees why the write failed, and the store still works; before, the store's own ROLLBACK of a
    transaction SQLite had already ended raised "cannot rollback - no transaction is active" in its place."""
    store = SqliteRateStore(tmp_path / "rate.sqlite")
    store._conn = WriteFullRolledBack(store._conn)  # type: ignore[assignment]

    def book(slot: float) -> list[float]:
        def change(state: Any) -> list[float]:
            state.sends.append(slot)
            return list(state.sends)

        return store.transact("acct", change)

    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        book(1.0)
    assert book(2.0) == [2.0]
    store.close()
