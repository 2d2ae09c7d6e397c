"""One run per thread at a time: a lock on the thread, held for the whole run, in the state store's own place.

- SQLite state (a path): a lock file per thread beside the store (`<state>.locks/<hash>.lock`), taken with
  `flock`. The kernel lets go of it when its holder exits, `kill -9` included: a dead holder never blocks. The file
  says who holds it (pid, since) for the message, and is removed by its holder on release.
- PostgreSQL state: `pg_try_advisory_lock` keyed by the thread, on a connection held for the run: session-scoped,
  so the server lets go when the holder's connection ends (crash or kill).

A second run of a thread waits up to `wait_seconds` for the first to finish, then fails with `ThreadBusy` (exit 3,
one line: who holds it and since when). The thread is never touched while another run holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tools.clock import Clock
from tools.errors import CoviuAgentError
from tools.private_files import owner_only_opener, private_dir

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
DEFAULT_WAIT_SECONDS = 10.0


class ThreadBusy(CoviuAgentError):
    """Another run of this thread holds its lock (exit 3: a rerun once that one ends completes)."""

    def __init__(self, thread: str, holder: str) -> None:
        super().__init__(
            f"another run of this thread is in progress ({holder}); thread {thread} is left as it is: rerun once "
            "that run has ended, or use another --thread-id"
        )


def lock_key(thread: str) -> int:
    """A signed 64-bit key for the thread (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(thread.encode()).digest()[:8], "big", signed=True)


def lock_path(state: str, thread: str) -> Path:
    """The lock file of a thread beside a SQLite state store; the thread id is hashed (no ids in file names). The
    store's path is resolved first: one store named through a symlink has one lock folder, beside the file itself."""
    store = Path(state).expanduser().resolve()
    return store.with_name(store.name + ".locks") / f"{hashlib.sha256(thread.encode()).hexdigest()[:32]}.lock"


def _holder(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid', '?')}, since {info.get('since', '?')}"


class _FileLock:
    """One flock on one thread's lock file (open, try, check that the file is still the one named)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def try_acquire(self, now: datetime) -> str | None:
        """None when acquired; else who holds it."""
        private_dir(self.path.parent)
        fd = owner_only_opener(str(self.path), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            return holder
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its last holder removed it between our open and our lock: take the new one
            os.close(fd)
            return self.try_acquire(now)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": now.isoformat(timespec="seconds")}).encode())
        self.fd = fd
        return None

    @staticmethod
    def _read(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            info = {}
        return _holder(info if isinstance(info, dict) else {})

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still held: a waiter that opened it sees another inode and retries
        os.close(self.fd)
        self.fd = None


@asynccontextmanager
async def _file_lock(state: str, thread: str, clock: Clock, wait_seconds: float) -> AsyncIterator[None]:
    lock = _FileLock(lock_path(state, thread))
    started = clock.monotonic()
    said = False
    while (holder := lock.try_acquire(clock.now())) is not None:
        if clock.monotonic() - started >= wait_seconds:
            raise ThreadBusy(thread, holder)
        if not said:  # said once, not at every poll
            log.info("thread %s: another run holds it (%s); waiting up to %g s", thread, holder, wait_seconds)
            said = True
        await clock.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        lock.release()


@asynccontextmanager
async def _postgres_lock(state: str, thread: str, clock: Clock, wait_seconds: float) -> AsyncIterator[None]:
    """A session-scoped advisory lock on a connection of its own, held for the block."""
    import psycopg

    from agent.checkpoint import StateStoreUnavailable

    key = lock_key(thread)
    since = clock.now().isoformat(timespec="seconds")
    try:
        conn = await psycopg.AsyncConnection.connect(
            state, autocommit=True, connect_timeout=10, application_name=f"coviu-agent pid {os.getpid()} {since}"
        )
    except psycopg.Error as exc:
        raise StateStoreUnavailable(state, exc) from None
    async with conn:
        started = clock.monotonic()
        said = False
        while True:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            row = await cursor.fetchone()
            if row is not None and row[0]:
                break
            if clock.monotonic() - started >= wait_seconds:
                raise ThreadBusy(thread, await _postgres_holder(conn, key))
            if not said:  # said once, not at every poll
                log.info("thread %s: another run holds it; waiting up to %g s", thread, wait_seconds)
                said = True
            await clock.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


async def _postgres_holder(conn: Any, key: int) -> str:
    """Who holds the advisory lock: the holder's application name carries its pid and start."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    cursor = await conn.execute(
        "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    )
    row = await cursor.fetchone()
    if row is None:
        return "pid ?, since ?"
    name = str(row[0] or "")
    parts = name.split()
    if len(parts) == 4 and parts[:2] == ["coviu-agent", "pid"]:
        return f"pid {parts[2]}, since {parts[3]}"
    return f"PostgreSQL backend {row[1]}"


@asynccontextmanager
async def thread_lock(
    state: str, thread: str, clock: Clock, *, wait_seconds: float = DEFAULT_WAIT_SECONDS
) -> AsyncIterator[None]:
    """Hold the thread's lock for the block (waiting up to `wait_seconds` for another run of it to end)."""
    from agent.checkpoint import is_postgres

    opened = _postgres_lock if is_postgres(state) else _file_lock
    async with opened(state, thread, clock, wait_seconds):
        yield
