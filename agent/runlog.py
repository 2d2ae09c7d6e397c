"""The run log: one row per finished run, in a side table of the state store (SQLite or PostgreSQL).

`agent.runs` writes a row when a run ends (only runs that used the settings' state store: a caller that brings its
own checkpointer keeps its own books); `coviu-agent status` reads the last run of each graph per clinic and the
threads still waiting for approval. Rows hold ids, times, outcomes and paths, never patient data.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from agent.checkpoint import _where, is_postgres
from tools.private_files import private_file
from tools.sqlite_wal import BUSY_SECONDS, wal_mode

log = logging.getLogger(__name__)

TABLE = "coviu_agent_runs"
COLUMNS = (
    "graph",
    "clinic",
    "thread_id",
    "started_at",
    "finished_at",
    "duration_seconds",
    "outcome",
    "exit_code",
    "report_path",
    "team_id",
    "runner",
)
_CREATE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    graph TEXT NOT NULL, clinic TEXT NOT NULL, thread_id TEXT, started_at TEXT NOT NULL, finished_at TEXT NOT NULL,
    duration_seconds DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL, exit_code INTEGER NOT NULL, report_path TEXT,
    team_id TEXT, runner TEXT
)"""
# columns a run log written by an earlier version lacks: `team_id` (before clinics were their accounts, issue 27,
# `clinic` held the team id), `runner` (before a LangGraph server's rows were told from the CLI's)
_ADDED = ("team_id", "runner")
CLI, SERVER = "cli", "server"
_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_by_clinic ON {TABLE} (graph, clinic, finished_at)"


@dataclass(frozen=True)
class RunEntry:
    """One finished run. Times are ISO 8601 in UTC. `clinic` is the clinic's integrated account id (its team id when
    no account was configured); `team_id` its Coviu team (None in rows written before the run log kept it, whose
    `clinic` may be a team id); `runner` who ran it and holds its thread: "cli" (this store's checkpoints) or
    "server" (a LangGraph server's; None in rows written before the run log kept it, read as the CLI's)."""

    graph: str
    clinic: str
    thread_id: str | None
    started_at: str
    finished_at: str
    duration_seconds: float
    outcome: str
    exit_code: int
    report_path: str | None = None
    team_id: str | None = None
    runner: str | None = None

    @property
    def on_server(self) -> bool:
        """The thread is a LangGraph server's: the CLI's checkpoints do not hold it."""
        return self.runner == SERVER

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def where(state: str) -> str:
    """The store as it may be shown: a SQLite path, or a PostgreSQL URL without its password."""
    return _where(state) if is_postgres(state) else str(Path(state).expanduser())


@contextmanager
def _connect(state: str) -> Iterator[tuple[Any, str]]:
    """A connection to the store and its parameter mark; the table exists."""
    if is_postgres(state):
        import psycopg

        with psycopg.connect(state, autocommit=True, connect_timeout=10) as conn:
            conn.execute(_CREATE)
            for column in _ADDED:
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {column} TEXT")
            conn.execute(_INDEX)
            yield conn, "%s"
        return
    path = Path(state).expanduser()
    private_file(path)
    with closing(sqlite3.connect(path, timeout=BUSY_SECONDS)) as conn:
        wal_mode(conn, time.monotonic() + BUSY_SECONDS)  # the state file's mode, whoever opens it first
        with conn:
            conn.execute(_CREATE)
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
            for column in (c for c in _ADDED if c not in have):
                try:
                    conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise
            conn.execute(_INDEX)
        yield conn, "?"


def record(state: str, entry: RunEntry) -> None:
    """Add `entry` to the run log. A store that cannot be written is said at WARNING; the run's result stands."""
    try:
        with _connect(state) as (conn, mark):
            values = [getattr(entry, name) for name in COLUMNS]
            sql = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))})"
            if mark == "?":
                with conn:
                    conn.execute(sql, values)
            else:
                conn.execute(sql, values)
    except Exception as exc:  # the run is done; its log line is not worth failing it
        log.warning("could not record the run in the state store's run log: %s", type(exc).__name__)


def _rows(state: str, sql: str) -> list[RunEntry]:
    if not is_postgres(state) and not Path(state).expanduser().exists():
        return []  # nothing has run with this store yet (and reading creates nothing)
    with _connect(state) as (conn, _):
        cursor = conn.execute(sql)
        names = [d[0] for d in cursor.description]
        known = {f.name for f in fields(RunEntry)}
        return [RunEntry(**{k: v for k, v in zip(names, row, strict=True) if k in known}) for row in cursor.fetchall()]


def last_runs(state: str) -> list[RunEntry]:
    """The last run of each graph for each clinic, by graph then clinic."""
    return _rows(
        state,
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} AS r WHERE finished_at = "
        f"(SELECT MAX(finished_at) FROM {TABLE} AS l WHERE l.graph = r.graph AND l.clinic = r.clinic) "
        "ORDER BY graph, clinic",
    )


def pending_approvals(state: str) -> list[RunEntry]:
    """Threads whose last run stopped for approval (exit 4) and has not been answered since, oldest first."""
    return _rows(
        state,
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} AS r WHERE exit_code = 4 AND thread_id IS NOT NULL "
        f"AND finished_at = (SELECT MAX(finished_at) FROM {TABLE} AS l WHERE l.thread_id = r.thread_id) "
        "ORDER BY finished_at",
    )
