"""Workers starting at once on a new PostgreSQL state store (a sharded fleet, a server's workers) take turns creating
its tables: without that, `CREATE TABLE IF NOT EXISTS` and LangGraph's migrations collide (a unique violation in
pg_type, or a deadlock) and a worker fails on its first night. Needs `COVIU_TEST_POSTGRES_URL` (as
tests/test_postgres.py; skipped without it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_postgres import postgres_state  # noqa: F401  (the fixture: a fresh schema on the test database)

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent

SET_UP = """
import asyncio, sys
sys.path.insert(0, {root!r})
from agent.checkpoint import open_checkpointer
from graphs.audit_store import open_audit_store
from tools.ratestore import shared_rate_store

async def main(url, order):
    for what in order.split(","):
        if what == "checkpoints":
            async with open_checkpointer(url):
                pass
        elif what == "audit":
            store = open_audit_store(url)
            await store.cached_summaries("ia", ["s"])
            await store.aclose()
        else:
            shared_rate_store(url).transact("ia", lambda state: None)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_workers_starting_at_once_on_a_new_store_all_set_it_up(postgres_state: tuple[str, Any, str]) -> None:  # noqa: F811
    state, _, _ = postgres_state
    script = SET_UP.format(root=str(ROOT))
    orders = ["checkpoints,audit,rate", "audit,checkpoints,rate", "rate,audit,checkpoints", "checkpoints,rate,audit"]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, state, order], stderr=subprocess.PIPE, text=True)
        for order in orders
    ]
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=150)
        if proc.returncode:
            failures.append(err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}")
    assert not failures
