"""Checkpointer factory: SQLite by path (default), PostgreSQL by `postgresql://` URL.

Both are LangGraph's own savers; the graphs never know which one is in use. Every write goes through
`RedactingSerializer`: secrets never reach the store (not in messages, not in a failed node's error write),
exceptions are kept as `"ClassName: redacted message"` text, never as objects, and values of 64 KiB or more (the
audit's final report) are stored zlib-compressed.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from tools.errors import CoviuAgentError
from tools.private_files import private_file
from tools.ratestore import POSTGRES_SETUP_LOCK, POSTGRES_SETUP_SECONDS, postgres_setup
from tools.sqlite_wal import BUSY_SECONDS, aretry_busy, prepare_wal_file
from tools.textsafety import REDACTOR, Redactor, error_record, redact

# A stored value at least this big is zlib-compressed (its type gets the `zlib+` prefix). Only the audit's final
# report is that big: about 390 bytes a session, 3.9 MB at 10,000 sessions, stored by the step's writes and its
# checkpoint; compressed about 5x (measured), so the store stays small at its peak.
COMPRESS_FROM_BYTES = 64 * 1024
COMPRESSED = "zlib+"
SQLITE_BUSY_SECONDS = BUSY_SECONDS  # how long a checkpoint write waits for another writer of the SQLite file


class RedactingSerializer(SerializerProtocol):
    """Wraps a saver's serializer: what is stored is redacted, then compressed when large; reading undoes it."""

    def __init__(self, inner: SerializerProtocol, redactor: Redactor = REDACTOR) -> None:
        self.inner = inner
        self.redactor = redactor

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, BaseException):  # a failed node's ERROR write
            obj = error_record(obj)
        kind, data = self.inner.dumps_typed(obj)
        if self.redactor.needs(data):
            kind, data = self.inner.dumps_typed(self.redactor.value(obj))
            # a secret inside something the structural pass cannot rebuild: overwrite it, keeping lengths
            data = self.redactor.mask_bytes(data)
        if len(data) >= COMPRESS_FROM_BYTES:
            return COMPRESSED + kind, zlib.compress(data, 6)
        return kind, data

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        kind, payload = data
        if kind.startswith(COMPRESSED):
            return self.inner.loads_typed((kind.removeprefix(COMPRESSED), zlib.decompress(payload)))
        return self.inner.loads_typed(data)


def stored_bytes(kind: str | None, payload: bytes | None) -> bytes:
    """What a stored (type, value) pair holds, decompressed: for tests and tools that read the store's bytes."""
    if payload is None:
        return b""
    return zlib.decompress(payload) if kind and kind.startswith(COMPRESSED) else payload


def redacting(saver: BaseCheckpointSaver[str]) -> BaseCheckpointSaver[str]:
    """Make this saver redact every write (idempotent)."""
    if not isinstance(saver.serde, RedactingSerializer):
        saver.serde = RedactingSerializer(saver.serde)
    return saver


def is_postgres(state: str) -> bool:
    return state.startswith(("postgresql://", "postgres://"))


class StateStoreUnavailable(CoviuAgentError):
    """The PostgreSQL state store cannot be reached or refused us (a service failure: exit 3, one line)."""

    def __init__(self, state: str, error: BaseException) -> None:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        super().__init__(f"the state store {_where(state)} is unavailable: {redact(first_line)[:300]}")


def _where(state: str) -> str:
    """host:port/database of a PostgreSQL URL, never its password."""
    parsed = urlsplit(state)
    host = parsed.hostname or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"postgresql://{host}{port}{parsed.path}"


def search_path_schema(state: str) -> str | None:
    """The first schema of a `?options=-csearch_path=...` suffix (the README's way to keep our tables apart)."""
    for value in parse_qs(urlsplit(state).query).get("options", []):
        for option in value.split():
            if option.startswith("-csearch_path="):
                first = option.split("=", 1)[1].split(",")[0].strip().strip('"')
                return first or None
    return None


async def prepare_postgres(state: str) -> None:
    """Connect once to fail with one clear line, and create the search_path's schema when it is missing."""
    import psycopg
    from psycopg import sql

    schema = search_path_schema(state)
    try:
        async with await psycopg.AsyncConnection.connect(state, autocommit=True, connect_timeout=10) as conn:
            if schema and schema not in ("public", "$user"):  # processes starting at once take turns
                await postgres_setup(conn, [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))])
    except psycopg.Error as exc:
        raise StateStoreUnavailable(state, exc) from None


async def _take_setup_lock(conn: Any) -> None:
    """Hold POSTGRES_SETUP_LOCK on `conn` (a session lock), tried every 50 ms, never waited on (tools/ratestore.py)."""
    import asyncio

    import psycopg

    deadline = asyncio.get_running_loop().time() + POSTGRES_SETUP_SECONDS
    while True:
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (POSTGRES_SETUP_LOCK,))).fetchone()
        if row and row[0]:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise psycopg.OperationalError("another process has been setting up the state store for too long")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def open_checkpointer(state: str) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Open the checkpoint store named by COVIU_AGENT_STATE (creating it on first use)."""
    if is_postgres(state):
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import Error as PostgresError

        await prepare_postgres(state)
        try:
            async with AsyncPostgresSaver.from_conn_string(state) as saver:
                # LangGraph's migrations, one process at a time (several starting at once on a new database collide)
                async with await psycopg.AsyncConnection.connect(state, autocommit=True) as lock:
                    await _take_setup_lock(lock)
                    await saver.setup()  # the lock is released when its connection closes
                yield redacting(saver)
        except PostgresError as exc:
            raise StateStoreUnavailable(state, exc) from None
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(state).expanduser()
    if path.is_dir():
        from agent.errors import ConfigError

        raise ConfigError(
            f"COVIU_AGENT_STATE={state!r} is a directory: name a file in it, e.g. {path / 'state.sqlite'}"
        )
    private_file(path)
    import aiosqlite

    # the file is shared by every writer of a run (a fleet's clinics, the audit store, the outbox, the run log):
    # wait for another's transaction as they do (30 s), not SQLite's default 5 s (`database is locked`, exit 3)
    # LangGraph's set-up script starts with `PRAGMA journal_mode=WAL`, which fails at once (no busy wait) on a new
    # file that another clinic's connection holds: the file is put in WAL mode first, and the set-up retried
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    await asyncio.to_thread(prepare_wal_file, path, SQLITE_BUSY_SECONDS)
    async with aiosqlite.connect(str(path), timeout=SQLITE_BUSY_SECONDS) as conn:
        sqlite_saver = AsyncSqliteSaver(conn)
        await aretry_busy(sqlite_saver.setup, deadline)
        yield redacting(sqlite_saver)
