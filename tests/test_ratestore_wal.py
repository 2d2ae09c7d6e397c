"""The rate store's write-ahead log is part of the state store's size: it stays under a small cap while a
run books requests, and none of it is left beside the state once the process is done."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tools.ratestore import WAL_SIZE_LIMIT, SqliteRateStore, sqlite_rate_path

# While the store is open: the log is checkpointed every 64 pages; allow for the pages of one more transaction.
OPEN_CAP = 512 * 1024

ROOT = Path(__file__).resolve().parent.parent


def wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def book(state: SqliteRateStore, n: int) -> None:
    for i in range(n):

        def change(rate: object, i: int = i) -> None:
            rate.sends = [float(t) for t in range(i % 100, i % 100 + 50)]  # type: ignore[attr-defined]

        state.transact(f"account-{i % 7}", change)


def test_the_log_stays_under_its_cap_while_open_and_is_gone_after_close(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.ratelimit.sqlite"
    store = SqliteRateStore(path)
    book(store, 3000)  # about 4 MiB of log at SQLite's defaults
    assert wal_of(path).stat().st_size <= OPEN_CAP
    store.close()
    assert not wal_of(path).exists() or wal_of(path).stat().st_size == 0


def test_a_process_that_exits_without_closing_leaves_no_log_over_the_cap(tmp_path: Path) -> None:
    # the CLI never closes the store `shared_rate_store` opened: the process's exit does
    state = tmp_path / "checkpoints.sqlite"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_ratestore_wal import book
        from tools.ratestore import shared_rate_store
        book(shared_rate_store({str(state)!r}), 3000)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    wal = wal_of(sqlite_rate_path(str(state)))
    assert not wal.exists() or wal.stat().st_size <= WAL_SIZE_LIMIT
    leftover = sum(p.stat().st_size for p in tmp_path.iterdir() if p.is_file())
    assert leftover < 64 * 1024  # the rate store's whole file: a few accounts' state, no log
