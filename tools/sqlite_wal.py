"""SQLite files that several connections open at once: a fleet's clinics, the audit store, the outbox, the run log,
other processes.

Switching a new file to write-ahead logging (and LangGraph's set-up script, which starts with that switch) can fail
at once with `database is locked` while another connection holds the file: SQLite does not consult its busy handler
where waiting could deadlock. `wal_mode` makes the switch, retried until a deadline. Once a file is in WAL mode the
setting is stored in it, and every later `PRAGMA journal_mode=WAL` is a no-op that takes no lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BUSY_SECONDS = 30.0  # how long a write waits for another writer of a shared SQLite file
RETRY_PAUSE = 0.02  # seconds between tries while another connection holds the file


def is_busy(exc: BaseException) -> bool:
    """`database is locked` / `database table is locked` (extended result codes included), not a real failure."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)


def retry_busy(action: Callable[[], T], deadline: float) -> T:
    """`action()`, tried again while SQLite says busy, until `deadline` (time.monotonic()); then its error."""
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(RETRY_PAUSE)


async def aretry_busy(action: Callable[[], Awaitable[T]], deadline: float) -> T:
    """`retry_busy` for a coroutine (aiosqlite raises the same sqlite3 errors)."""
    while True:
        try:
            return await action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(RETRY_PAUSE)


def wal_mode(conn: sqlite3.Connection, deadline: float) -> None:
    """Put the connection's file in WAL mode (a no-op when it already is), retried while busy until `deadline`."""

    def switch() -> None:
        if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")

    retry_busy(switch, deadline)


def prepare_wal_file(path: Path, timeout: float) -> None:
    """Open the file at `path` (creating it), put it in WAL mode (waiting up to `timeout` s for others), close it."""
    with closing(sqlite3.connect(str(path), timeout=timeout, isolation_level=None)) as conn:
        wal_mode(conn, time.monotonic() + timeout)
