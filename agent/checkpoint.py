"""Checkpointer factory: SQLite by path (default), PostgreSQL by `postgresql://` URL.

Both are LangGraph's own savers; the graphs never know which one is in use. Every write goes through
`RedactingSerializer`: secrets never reach the store (not in messages, not in a failed node's error write),
and exceptions are kept as `"ClassName: redacted message"` text, never as objects.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from tools.textsafety import REDACTOR, Redactor, error_record


class RedactingSerializer(SerializerProtocol):
    """Wraps a saver's serializer: what is stored is redacted; reading is unchanged."""

    def __init__(self, inner: SerializerProtocol, redactor: Redactor = REDACTOR) -> None:
        self.inner = inner
        self.redactor = redactor

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, BaseException):  # a failed node's ERROR write
            obj = error_record(obj)
        kind, data = self.inner.dumps_typed(obj)
        if not self.redactor.needs(data):
            return kind, data
        kind, data = self.inner.dumps_typed(self.redactor.value(obj))
        # a secret inside something the structural pass cannot rebuild: overwrite it, keeping lengths
        return kind, self.redactor.mask_bytes(data)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(data)


def redacting(saver: BaseCheckpointSaver[str]) -> BaseCheckpointSaver[str]:
    """Make this saver redact every write (idempotent)."""
    if not isinstance(saver.serde, RedactingSerializer):
        saver.serde = RedactingSerializer(saver.serde)
    return saver


def is_postgres(state: str) -> bool:
    return state.startswith(("postgresql://", "postgres://"))


@asynccontextmanager
async def open_checkpointer(state: str) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Open the checkpoint store named by COVIU_AGENT_STATE (creating it on first use)."""
    if is_postgres(state):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(state) as saver:
            await saver.setup()
            yield redacting(saver)
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(state).expanduser()
    if path.is_dir():
        from agent.errors import ConfigError

        raise ConfigError(
            f"COVIU_AGENT_STATE={state!r} is a directory: name a file in it, e.g. {path / 'state.sqlite'}"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        path.touch(mode=0o600)
    os.chmod(path, 0o600)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        yield redacting(saver)
