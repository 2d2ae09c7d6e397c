"""The audit's own tables in the state store: per-run side rows and the per-account summary cache.

Three tables, next to the checkpoints in the store `COVIU_AGENT_STATE` names (a SQLite file by default, PostgreSQL
when it is a `postgresql://` URL):

- `coviu_audit_rows`: the session rows, summary facts and submission index of an audit in flight, keyed by the
  audit's run key (its thread id). The graph's state holds only cursors and counters, so a checkpoint stays small
  whatever the number of sessions (the SQLite saver stores the whole state at every step). The rows are deleted
  once the report is written.
- `coviu_summary_cache`: summaries that can no longer change, per integrated account: session id, actual start,
  actual end, fetched-at. Either an actual end is recorded (and the times are readable and plausible), or nobody
  ever entered and the session's scheduled end was `NO_SHOW_SETTLED` (12 h) before the fetch: a no-show, stored
  with the actual end `NO_END` (""). Each row also keeps `listed`: a digest of what the session list showed about
  the session when the summary was read (its times, actual end, state, status, update time). A cached summary is
  reused only while the list still shows the same; a correction upstream (a new actual end, state or update time)
  fetches it again, and `--refresh` fetches every one again. Ids, times and digests only: no names, no payloads.

- `coviu_outbox`: messages to staff (queue alerts, audit reports), one row per message and channel, written before
  they are sent (`agent.notify`).

The agent layer opens the store (`open_audit_store`) and injects it through `Services.audit_store`; without one,
an audit uses a private in-memory store (no cache across runs).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from tools.private_files import private_file
from tools.sqlite_wal import BUSY_SECONDS, wal_mode
from tools.textsafety import REDACTOR, redact_value

CHUNK = 500  # ids per IN (...) list (SQLite's default variable limit is 999)
WAL_SIZE_LIMIT = 1024 * 1024  # bytes the write-ahead log keeps after a checkpoint
WAL_AUTOCHECKPOINT_PAGES = 256  # checkpoint the write-ahead log at about 1 MB (SQLite's default is 1,000 pages)
ROWS_PER_WRITE = 1000  # side rows per transaction

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS coviu_audit_rows ("
    " run TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " PRIMARY KEY (run, kind, key))",
    "CREATE TABLE IF NOT EXISTS coviu_summary_cache ("
    " account TEXT NOT NULL, session_id TEXT NOT NULL, actual_start TEXT, actual_end TEXT NOT NULL,"
    " fetched_at TEXT NOT NULL, listed TEXT, PRIMARY KEY (account, session_id))",
    # agent.notify's outbox: each message to staff, per channel, written before it is sent (ids, status, times;
    # the text until it is sent)
    "CREATE TABLE IF NOT EXISTS coviu_outbox ("
    " id TEXT NOT NULL PRIMARY KEY, msg TEXT NOT NULL, channel TEXT NOT NULL, clinic TEXT NOT NULL,"
    " kind TEXT NOT NULL, subject TEXT NOT NULL, level TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL,"
    " attempts INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL, next_at DOUBLE PRECISION NOT NULL,"
    " claim TEXT NOT NULL, claimed_at DOUBLE PRECISION NOT NULL, sent_at DOUBLE PRECISION NOT NULL,"
    " error TEXT NOT NULL)",
)
# The outbox is read by message id, by clinic and kind (what a watcher raised), and by what is due.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS coviu_outbox_msg ON coviu_outbox (msg)",
    "CREATE INDEX IF NOT EXISTS coviu_outbox_clinic ON coviu_outbox (clinic, kind, created_at)",
    "CREATE INDEX IF NOT EXISTS coviu_outbox_due ON coviu_outbox (status, next_at)",
)
# Stores made before `listed` was kept gain the column; their rows (no digest) are fetched again once.
ADD_LISTED = "ALTER TABLE coviu_summary_cache ADD COLUMN listed TEXT"
# In SQLite, the tables are clustered on their primary key (no rowid table beside a copy of the key in an index):
# each row is stored once. Tables made before keep their layout, and work the same.
SQLITE_SCHEMA = tuple(f"{statement} WITHOUT ROWID" for statement in SCHEMA)
PUT_ROW = (
    "INSERT INTO coviu_audit_rows (run, kind, key, value) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (run, kind, key) DO UPDATE SET value = excluded.value"
)
PUT_SUMMARY = (
    "INSERT INTO coviu_summary_cache (account, session_id, actual_start, actual_end, fetched_at, listed) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, session_id) DO UPDATE SET actual_start = excluded.actual_start, "
    "actual_end = excluded.actual_end, fetched_at = excluded.fetched_at, listed = excluded.listed"
)


# The stored actual end of a settled no-show (the column is NOT NULL in stores created before no-shows were kept).
NO_END = ""


class CachedSummary(TypedDict):
    """The facts the audit keeps from a summary that can no longer change (`actual_end` None: a settled no-show),
    and the digest of what the session list showed when it was read (None: not known, never reused)."""

    actual_start: str | None
    actual_end: str | None
    listed: NotRequired[str | None]


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _redacted_json(value: Any) -> str:
    """A row as stored: its JSON, redacted. The structural pass (`redact_value`: every string through every pattern,
    every dict rebuilt) runs only when the JSON text says it may change something (`Redactor.may_change_json`);
    most rows hold no secret and no credential-looking word (issue 28: a thousand rows a thousand requests)."""
    text = json.dumps(value, separators=(",", ":"))
    # non-ASCII is escaped in what is stored (as before); the check reads it unescaped (`may_change_json`)
    seen = text if "\\u" not in text else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if not REDACTOR.may_change_json(seen):
        return text
    return json.dumps(redact_value(value), separators=(",", ":"))


class AuditStore(ABC):
    """Side rows of audits in flight and the summary cache; one implementation per database."""

    # ------------------------------------------------------------------ the database, per implementation

    @abstractmethod
    async def _run(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """Run each statement once per parameter row, all in one transaction."""

    @abstractmethod
    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one query."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connection (the store reconnects on next use)."""

    # ------------------------------------------------------------------ side rows of a run

    async def put_rows(self, run: str, kind: str, rows: Mapping[str, Any]) -> None:
        """Insert or replace this run's rows of one kind (JSON values, redacted: they may quote upstream text)."""
        params = [(run, kind, key, _redacted_json(value)) for key, value in rows.items()]
        # A transaction per ROWS_PER_WRITE rows (each is an upsert, so a crash between them loses nothing that the
        # resumed step does not write again): the write-ahead log never has to hold 10,000 rows at once.
        for start in range(0, len(params), ROWS_PER_WRITE):
            await self._run([(PUT_ROW, params[start : start + ROWS_PER_WRITE])])

    async def rows(self, run: str, kind: str) -> dict[str, Any]:
        found = await self._query("SELECT key, value FROM coviu_audit_rows WHERE run = ? AND kind = ?", (run, kind))
        return {str(key): json.loads(value) for key, value in found}

    async def keys(self, run: str, kind: str) -> set[str]:
        found = await self._query("SELECT key FROM coviu_audit_rows WHERE run = ? AND kind = ?", (run, kind))
        return {str(key) for (key,) in found}

    async def count_rows(self, run: str) -> int:
        found = await self._query("SELECT count(*) FROM coviu_audit_rows WHERE run = ?", (run,))
        return int(found[0][0])

    async def delete_run(self, run: str) -> None:
        """Forget every side row of this run (its report is written, or it starts afresh)."""
        await self._run([("DELETE FROM coviu_audit_rows WHERE run = ?", [(run,)])])

    # ------------------------------------------------------------------ the summary cache

    async def cached_summaries(self, account: str, session_ids: Iterable[str]) -> dict[str, CachedSummary]:
        """The cached facts of these sessions of this account (those that are cached)."""
        wanted = sorted(set(session_ids))
        out: dict[str, CachedSummary] = {}
        for chunk in _chunks(wanted):
            marks = ", ".join("?" for _ in chunk)
            found = await self._query(
                "SELECT session_id, actual_start, actual_end, listed FROM coviu_summary_cache "
                f"WHERE account = ? AND session_id IN ({marks})",
                (account, *chunk),
            )
            for session_id, actual_start, actual_end, listed in found:
                out[str(session_id)] = {
                    "actual_start": actual_start,
                    "actual_end": actual_end or None,
                    "listed": listed,
                }
        return out

    async def cache_summaries(
        self, account: str, summaries: Mapping[str, CachedSummary], fetched_at: str, *, forget: Iterable[str] = ()
    ) -> None:
        """Keep these summaries (they can no longer change); drop `forget` (refetched, and now not cacheable)."""
        rows = [
            (account, sid, f["actual_start"], f["actual_end"] or NO_END, fetched_at, f.get("listed"))
            for sid, f in summaries.items()
        ]
        dropped = [(account, sid) for sid in forget]
        statements: list[tuple[str, Sequence[Sequence[Any]]]] = []
        if rows:
            statements.append((PUT_SUMMARY, rows))
        if dropped:
            statements.append(("DELETE FROM coviu_summary_cache WHERE account = ? AND session_id = ?", dropped))
        if statements:
            await self._run(statements)


class SqliteAuditStore(AuditStore):
    """The tables in a SQLite file (owner-only, like the checkpoints), or in memory (`":memory:"`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                private_file(Path(self.path).expanduser())
            conn = sqlite3.connect(
                self.path if self.path == ":memory:" else str(Path(self.path).expanduser()),
                timeout=BUSY_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            if self.path != ":memory:":
                wal_mode(conn, time.monotonic() + BUSY_SECONDS)  # a fleet's clinics open the file at once
                # After each checkpoint the write-ahead log is cut back to 1 MB instead of keeping its largest size.
                conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            for statement in (*SQLITE_SCHEMA, *INDEXES):
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(coviu_summary_cache)")}
            if "listed" not in columns:
                conn.execute(ADD_LISTED)
            self._conn = conn
        return self._conn

    def _run_sync(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    conn.executemany(sql, params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query_sync(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._connect().execute(sql, tuple(params)).fetchall())

    async def _run(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        await asyncio.to_thread(self._run_sync, statements)

    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._query_sync, sql, params)

    async def aclose(self) -> None:
        with self._lock:
            if self._conn is not None and self.path != ":memory:":  # memory would lose its rows
                self._conn.close()
                self._conn = None


class PostgresAuditStore(AuditStore):
    """The tables in PostgreSQL (psycopg, the driver LangGraph's Postgres saver uses)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            from psycopg import AsyncConnection

            from tools.ratestore import postgres_setup

            conn = await AsyncConnection.connect(self.url, autocommit=True)
            # one process at a time creates the tables; stores made before `listed` gain the column
            await postgres_setup(
                conn, (*SCHEMA, *INDEXES, ADD_LISTED.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS"))
            )
            self._conn = conn
        return self._conn

    async def _run(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        async with self._lock:
            conn = await self._connect()
            async with conn.transaction(), conn.cursor() as cursor:
                for sql, params in statements:
                    await cursor.executemany(sql.replace("?", "%s"), params)

    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock:
            conn = await self._connect()
            cursor = await conn.execute(sql.replace("?", "%s"), tuple(params))
            return list(await cursor.fetchall())

    async def aclose(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None


def open_audit_store(state: str) -> AuditStore:
    """The store `COVIU_AGENT_STATE` names (connects on first use): PostgreSQL for a URL, else a SQLite file."""
    if state.startswith(("postgresql://", "postgres://")):
        return PostgresAuditStore(state)
    return SqliteAuditStore(state)


def memory_store() -> AuditStore:
    """A private in-memory store: side rows for one process's audits, no cache across processes."""
    return SqliteAuditStore(":memory:")
