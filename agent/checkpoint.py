"""Checkpointer factory: SQLite by path (default), PostgreSQL by `postgresql://` URL.

Both are LangGraph's own savers; the graphs never know which one is in use.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver


def is_postgres(state: str) -> bool:
    return state.startswith(("postgresql://", "postgres://"))


@asynccontextmanager
async def open_checkpointer(state: str) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Open the checkpoint store named by COVIU_AGENT_STATE (creating it on first use)."""
    if is_postgres(state):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(state) as saver:
            await saver.setup()
            yield saver
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(state).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    os.chmod(path, 0o600)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        yield saver
