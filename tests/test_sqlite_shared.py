"""One SQLite state file opened by many connections at once (a fleet's clinics each open the checkpointer, the audit
store, the outbox and the run log on it). Switching a new file to WAL mode fails at once with `database is locked`
when two connections try it together (SQLite skips its busy handler where waiting could deadlock): unhandled, a
fleet's clinic ends with exit 3 for it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from agent.checkpoint import open_checkpointer
from graphs.audit_store import SqliteAuditStore
from tools.sqlite_wal import is_busy, retry_busy

CLINICS = 8  # connections opening one new file at once
TRIALS = 40  # unhandled, about 3 trials in 20 have a clinic fail


async def _open_and_read(path: Path) -> None:
    async with open_checkpointer(str(path)) as saver:
        await saver.aget_tuple({"configurable": {"thread_id": "audit", "checkpoint_ns": ""}})


def test_clinics_opening_one_new_state_file_at_once_all_get_in(tmp_path: Path) -> None:
    async def trial(n: int) -> list[BaseException]:
        path = tmp_path / f"t{n}" / "state.sqlite"
        path.parent.mkdir()
        results = await asyncio.gather(*(_open_and_read(path) for _ in range(CLINICS)), return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    async def all_trials() -> list[BaseException]:
        failures: list[BaseException] = []
        for n in range(TRIALS):
            failures += await trial(n)
        return failures

    failures = asyncio.run(all_trials())
    assert failures == [], f"{len(failures)} of {CLINICS * TRIALS} opens failed: {failures[0]!r}"
    mode = sqlite3.connect(tmp_path / "t0" / "state.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_the_audit_store_and_the_checkpointer_open_a_new_file_together(tmp_path: Path) -> None:
    async def both(n: int) -> None:
        path = tmp_path / f"t{n}" / "state.sqlite"
        path.parent.mkdir()
        stores = [SqliteAuditStore(str(path)) for _ in range(CLINICS // 2)]
        await asyncio.gather(
            *(_open_and_read(path) for _ in range(CLINICS // 2)),
            *(asyncio.to_thread(store._connect) for store in stores),
        )

    async def all_trials() -> None:
        for n in range(TRIALS // 2):
            await both(n)

    asyncio.run(all_trials())


def test_busy_is_retried_until_the_deadline_then_said() -> None:
    tries: list[float] = []

    def always_locked() -> None:
        tries.append(time.monotonic())
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        retry_busy(always_locked, time.monotonic() + 0.2)
    assert len(tries) > 2  # tried again, and gave up after the deadline
    assert tries[-1] - tries[0] >= 0.15


def test_other_sqlite_errors_are_not_retried() -> None:
    tries = 0

    def broken() -> None:
        nonlocal tries
        tries += 1
        raise sqlite3.OperationalError("no such table: checkpoints")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        retry_busy(broken, time.monotonic() + 5)
    assert tries == 1
    assert not is_busy(sqlite3.DatabaseError("file is not a database"))
