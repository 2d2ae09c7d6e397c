"""One SQLite state file is shared by every writer of a run (a fleet's clinics' checkpoints, the audit store's side
rows, the outbox, the run log): a checkpoint write waits for another writer's transaction, as the others do (30 s),
instead of failing the clinic's audit with `database is locked` after SQLite's default 5 s (which a fleet of three
clinics hit on a loaded machine: tests/test_audit_fleet.py failed 4 runs in 5)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from agent.checkpoint import open_checkpointer

HELD_SECONDS = 6.0  # longer than SQLite's default busy timeout (5 s), well inside the store's 30 s


async def test_a_checkpoint_write_waits_for_another_writer_of_the_same_file(tmp_path: Path) -> None:
    state = str(tmp_path / "state.sqlite")
    config: RunnableConfig = {"configurable": {"thread_id": "t-1", "checkpoint_ns": ""}}
    async with open_checkpointer(state) as saver:
        await saver.aput(config, empty_checkpoint(), {}, {})  # the tables exist
        held = threading.Event()

        def another_writer() -> None:  # another clinic's long transaction on the same file
            conn = sqlite3.connect(state, timeout=30)
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(HELD_SECONDS)
            conn.rollback()
            conn.close()

        writer = threading.Thread(target=another_writer)
        writer.start()
        held.wait(5)
        try:
            stored = await saver.aput(config, empty_checkpoint(), {}, {})  # waits for the lock, then writes
        finally:
            writer.join()
        assert stored["configurable"]["thread_id"] == "t-1"
