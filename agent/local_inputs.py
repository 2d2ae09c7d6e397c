"""The product's own files are input too: the state store (COVIU_AGENT_STATE, which also holds the summary cache and
the audit's side rows), and the directories a run writes to (`--out`) are checked before the first request.

A bad one is named in one line with its fix: local problems (a path under a regular file, a directory that cannot be
written, a file that is not a readable SQLite database, a PostgreSQL URL the server refuses) raise `ConfigError`
(exit 2); a PostgreSQL server that does not answer raises `StateStoreUnreachable` (exit 3: a rerun may work). The
rate-limit store beside the state is not checked here: it only holds pacing hints, so `tools.ratestore` sets an
unreadable one aside and rebuilds it (with a warning naming the file).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from agent.errors import BadInput, ConfigError
from tools.errors import CoviuAgentError

# A PostgreSQL server that has not answered in this many seconds does not answer.
CONNECT_TIMEOUT = 10
_checked: set[str] = set()
_checked_lock = threading.Lock()


class StateStoreUnreachable(CoviuAgentError):
    """The PostgreSQL server COVIU_AGENT_STATE names does not answer (exit 3, one line, never the password)."""


def check_state(state: str) -> None:
    """COVIU_AGENT_STATE, once per process and value: a SQLite path that can be created, written and read, or a
    PostgreSQL URL whose server answers and lets us in."""
    with _checked_lock:
        if state in _checked:
            return
    from agent.checkpoint import is_postgres

    if is_postgres(state):
        _check_postgres(state)
    else:
        _check_sqlite(state)
    with _checked_lock:
        _checked.add(state)


def _check_sqlite(state: str) -> None:
    path = Path(state).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"COVIU_AGENT_STATE={state!r} is a directory: name a file in it, e.g. {path / 'state.sqlite'}"
        )
    writable_dir(f"COVIU_AGENT_STATE={state!r}", path.parent)
    from agent.threadlock import lock_path

    # one run per thread: its lock files go in a folder beside the store (a file there, or a folder another user
    # made, would stop the run mid-way)
    locks = lock_path(state, "").parent
    writable_dir(f"COVIU_AGENT_STATE={state!r}: its thread lock folder", locks)
    if not path.exists():
        return
    if not path.is_file():  # /dev/null, a pipe, a socket: SQLite opens some of them, then a write fails mid-run
        raise ConfigError(
            f"COVIU_AGENT_STATE={state!r} is not a regular file (a device or a pipe): name a SQLite file, e.g. "
            "state.sqlite (state cannot be turned off: it is where interrupted runs resume)"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"COVIU_AGENT_STATE={state!r}: the file cannot be read and written (check its permissions)")
    try:
        conn = sqlite3.connect(str(path), timeout=10)
        try:
            checked = str(conn.execute("PRAGMA quick_check").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):  # another run is writing: readable, just busy
            return
        raise ConfigError(f"COVIU_AGENT_STATE={state!r}: cannot open the state store ({exc})") from None
    except sqlite3.DatabaseError as exc:
        checked = str(exc)
    if checked != "ok":
        raise ConfigError(
            f"COVIU_AGENT_STATE={state!r} is not a readable state store ({checked.splitlines()[0][:200]}): move it "
            "aside (interrupted runs in it start again) or point COVIU_AGENT_STATE at another file"
        )


def _check_postgres(state: str) -> None:
    import psycopg

    from agent.checkpoint import _where

    where = _where(state)
    try:
        with psycopg.connect(state, autocommit=True, connect_timeout=CONNECT_TIMEOUT):
            pass
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        from tools.textsafety import redact

        reason = redact(first).replace(state, where)[:300]
        if exc.sqlstate is None:  # no answer from a server (refused, timed out, unknown host)
            raise StateStoreUnreachable(
                f"COVIU_AGENT_STATE: the state store's PostgreSQL server {where} does not answer ({reason}); "
                "start it, or fix the URL's host and port"
            ) from None
        # the server answered and refused us (password, database, role): the URL is wrong
        raise ConfigError(f"COVIU_AGENT_STATE: the PostgreSQL server {where} refused the URL ({reason})") from None
    except psycopg.Error as exc:  # e.g. a malformed URL
        raise ConfigError(f"COVIU_AGENT_STATE: not a usable PostgreSQL URL ({type(exc).__name__})") from None


def writable_dir(name: str, directory: Path) -> None:
    """`directory` exists and can be written, or can be made: its nearest existing ancestor is a directory that can be
    written. Nothing is created. BadInput names the setting or flag."""
    directory = directory.expanduser()
    probe = directory
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():  # a dangling link
            raise BadInput(f"{name}: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise BadInput(f"{name}: {probe} is a file, not a directory: name a path inside a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == directory else f" ({probe}, where it would be made)"
        raise BadInput(f"{name}: the directory {directory}{where} cannot be written: check its permissions")


def check_output_dir(flag: str, out_dir: str) -> None:
    """An output directory flag (e.g. `--out`): a directory that exists or can be made, and can be written."""
    if not out_dir.strip():
        raise BadInput(f"{flag}: expected a directory, got an empty value")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{flag}: expected a directory, but {out_dir!r} is a file")
    writable_dir(flag, path)
