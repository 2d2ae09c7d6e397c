"""Postgres checkpoints against a real PostgreSQL: the audit CLI, killed mid-run, resumes from Postgres.

Needs `COVIU_TEST_POSTGRES_URL` (`.ci/run` installs, starts and exports one). Without it, or when the server
cannot be reached, the test is skipped with a loud reason; with `COVIU_TEST_POSTGRES_REQUIRED=1` it fails
instead. Each test gets its own schema (dropped afterwards) through the URL's `search_path` option.

The sandbox runs in this process, served on a free loopback port, with several batches of synthetic sessions
and slow session summaries, so the test can count the summaries fetched and SIGKILL the CLI once the first
batch is checkpointed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from graphs.audit import BATCH_SIZE
from sandbox import (
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
    FaultConfig,
    Sandbox,
    SandboxConfig,
    create_sandbox,
)
from tests.e2e import serve

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

URL_VAR = "COVIU_TEST_POSTGRES_URL"
REQUIRED_VAR = "COVIU_TEST_POSTGRES_REQUIRED"
CLI = [sys.executable, "-c", "from agent.cli import main; main()"]
SESSIONS = 2 * BATCH_SIZE + 100  # three batches of summaries: the kill lands in the second
SUMMARIES = "session_summaries"


class PostgresNotTested(UserWarning):
    """The Postgres checkpoint test did not run."""


def not_tested(reason: str) -> NoReturn:
    if os.environ.get(REQUIRED_VAR) == "1":
        pytest.fail(f"{reason} ({REQUIRED_VAR}=1)")
    message = f"POSTGRES CHECKPOINTS NOT TESTED: {reason}"
    warnings.warn(message, PostgresNotTested, stacklevel=2)
    pytest.skip(message)


def with_search_path(url: str, schema: str) -> str:
    """The same connection URL, with every session's search_path set to `schema`."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([v for k, v in query if k == "options"] + [f"-csearch_path={schema}"])
    query = [(k, v) for k, v in query if k != "options"] + [("options", options)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port or 5432}{parts.path}"


@pytest.fixture
def postgres_state() -> Iterator[tuple[str, Any, str]]:
    """(COVIU_AGENT_STATE URL, an admin connection, schema): a fresh schema for this test."""
    url = os.environ.get(URL_VAR, "").strip()
    if not url:
        not_tested(f"{URL_VAR} is not set (run .ci/run, or point it at a PostgreSQL database you can write to)")
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        problem = str(exc).strip().splitlines()[0]
    else:
        problem = ""
    if problem:  # outside the except block: no traceback that shows the URL's password
        not_tested(f"{URL_VAR} is set but {redact(url)} cannot be reached: {problem}")
    schema = f"coviu_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield with_search_path(url, schema), conn, schema
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def busy_sandbox() -> Iterator[tuple[Sandbox, str, str]]:
    """(sandbox, URL, day): SESSIONS synthetic sessions on one past day; each summary takes a little while."""
    day = (datetime.now(UTC) - timedelta(days=3)).date()
    config = SandboxConfig(
        rate_limit=10_000,
        faults=FaultConfig(slow=1.0, slow_seconds=0.05, only_resources=[SUMMARIES]),
    )
    sandbox = create_sandbox(config=config)
    sandbox.store.generate_sessions(day, SESSIONS, seed=7)
    with serve(sandbox) as served:
        yield sandbox, served.url, day.isoformat()


def audit_env(tmp: Path, base_url: str, state: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTO_", "COVIU_", "OPENAI_", "LANGSMITH_"))}
    env.update(
        TRUTO_BASE_URL=base_url,
        TRUTO_API_KEY="sandbox",
        TRUTO_INTEGRATED_ACCOUNT_ID="sandbox",
        TRUTO_RATE_LIMIT_PER_10S="10000",
        COVIU_TEAM_ID=DEMO_TEAM_ID,
        COVIU_WAITING_QUEUE_ID=DEMO_WAITING_QUEUE_ID,
        COVIU_INTAKE_COLLECTION_ID=DEMO_INTAKE_COLLECTION_ID,
        COVIU_AGENT_TIMEZONE="UTC",
        COVIU_AGENT_PLANNER="rules",
        COVIU_AGENT_STATE=state,
        HOME=str(tmp),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    return env


def without_generated_at(report: dict[str, Any]) -> dict[str, Any]:
    """The report minus what differs between runs: the time, and the CLI's run figures (not in the file)."""
    return {k: v for k, v in report.items() if k not in ("generated_at", "figures", "summaries_from_cache")}


def test_killed_audit_resumes_from_postgres(
    postgres_state: tuple[str, Any, str], busy_sandbox: tuple[Sandbox, str, str], tmp_path: Path
) -> None:
    state, conn, schema = postgres_state
    sandbox, base_url, day = busy_sandbox
    env = audit_env(tmp_path, base_url, state)
    args = ["audit", "--date", day, "--json"]

    # An uninterrupted run on its own thread: the reference report.
    before = sandbox.count(resource=SUMMARIES)
    reference = subprocess.run(
        [*CLI, *args, "--out", str(tmp_path / "reference"), "--thread-id", "reference"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reference.returncode == 0, reference.stderr
    expected = json.loads(reference.stdout)
    assert expected["totals"]["sessions"] == len(expected["sessions"]) > 2 * BATCH_SIZE
    fetched_uninterrupted = sandbox.count(resource=SUMMARIES) - before
    assert fetched_uninterrupted == expected["totals"]["sessions"]

    # The same audit, SIGKILLed once the first batch of summaries is checkpointed and the second is under way.
    # `--refresh`: the reference run filled the summary cache, which would otherwise make this run fetch nothing.
    args = [*args, "--refresh"]
    out_dir = tmp_path / "nightly"
    before = sandbox.count(resource=SUMMARIES)
    victim = subprocess.Popen(
        [*CLI, *args, "--out", str(out_dir)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while sandbox.count(resource=SUMMARIES) - before < BATCH_SIZE + 100:
            assert victim.poll() is None, f"the audit ended (exit {victim.returncode}) before it could be killed"
            assert time.monotonic() < deadline, "the audit did not get to its second batch of summaries"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    fetched_before_kill = sandbox.count(resource=SUMMARIES) - before
    assert fetched_before_kill < expected["totals"]["sessions"]
    assert not out_dir.exists() or not any(out_dir.iterdir()), "the killed audit wrote a report"
    thread = f"audit:{DEMO_TEAM_ID}:{day}:"  # agent.runs.audit_thread: team, day, a hash of every argument
    query = sql.SQL("SELECT count(*) FROM {}.checkpoints WHERE thread_id LIKE %s").format(sql.Identifier(schema))
    checkpoints = conn.execute(query, (thread + "%",)).fetchone()[0]
    assert checkpoints > 0, "no checkpoints of the killed audit in Postgres"

    # The rerun, same arguments: resumes the thread from Postgres and fetches only what is missing.
    before = sandbox.count(resource=SUMMARIES)
    rerun = subprocess.run(
        [*CLI, *args, "--out", str(out_dir)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming audit thread" in rerun.stderr
    fetched_on_rerun = sandbox.count(resource=SUMMARIES) - before
    assert fetched_on_rerun <= expected["totals"]["sessions"] - BATCH_SIZE, (fetched_before_kill, fetched_on_rerun)
    resumed = json.loads(rerun.stdout)
    assert without_generated_at(resumed) == without_generated_at(expected)
    written = json.loads(next(out_dir.glob("audit-*.json")).read_text(encoding="utf-8"))
    assert without_generated_at(written) == without_generated_at(expected)
    sys.stderr.write(
        f"postgres resume: {expected['totals']['sessions']} summaries uninterrupted; {fetched_before_kill} before "
        f"SIGKILL, {fetched_on_rerun} on the rerun ({checkpoints} checkpoints in Postgres at the kill)\n"
    )


async def test_a_thread_lock_on_postgres_is_held_once_and_released(postgres_state: tuple[str, Any, str]) -> None:
    """One run per thread on PostgreSQL: a session-scoped advisory lock keyed by the thread (issue 23)."""
    from agent.threadlock import ThreadBusy, thread_lock
    from tools.clock import FakeClock

    url, _, _ = postgres_state
    clock = FakeClock()
    async with thread_lock(url, "audit:team:2026-11-24:abc", clock):
        with pytest.raises(ThreadBusy, match=r"in progress \(pid \d+, since 20"):
            async with thread_lock(url, "audit:team:2026-11-24:abc", clock, wait_seconds=1):
                pass
        async with thread_lock(url, "audit:team:2026-11-25:abc", clock, wait_seconds=0):
            pass  # another thread is not held
    async with thread_lock(url, "audit:team:2026-11-24:abc", clock, wait_seconds=0):
        pass  # released with its holder
