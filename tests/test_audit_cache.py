"""The summary cache and the audit's side rows (graphs/audit_store.py): a re-run fetches only what it has not seen,
`refresh` fetches everything again, summaries that may still change are never cached, side rows are gone once the
report is written, and checkpoints grow with N, not N² (in-process sandbox, fake clock)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from graphs import audit as audit_module
from graphs.audit import build_audit_graph
from graphs.audit_store import SqliteAuditStore
from graphs.context import Context, Services
from sandbox import Sandbox
from sandbox.errors import CoviuError
from tests.conftest import make_services
from tools.clock import FakeClock

YESTERDAY = date(2026, 11, 24)
SUMMARIES = "session_summaries"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteAuditStore]:
    opened = SqliteAuditStore(str(tmp_path / "state" / "checkpoints.sqlite"))
    yield opened
    await opened.aclose()


async def audit_services(sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore) -> Services:
    return await make_services(sandbox, clock, tmp_path / "reports", audit_store=store)


async def run(services: Services, thread: str, saver: Any = None, **inputs: Any) -> dict[str, Any]:
    """One audit on its own thread; the report without generated_at."""
    graph = build_audit_graph().compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 2000, "max_concurrency": 4}
    payload: Any = inputs
    out = await graph.ainvoke(payload, config, context=Context(services=services))
    report = dict(out["report"])
    report.pop("generated_at")
    return report


def summaries_fetched(sandbox: Sandbox) -> int:
    return sandbox.count(resource=SUMMARIES)


def changeable(report: dict[str, Any]) -> list[str]:
    """Sessions whose summary may still change: no recorded end, unavailable, implausible."""
    kinds = {"no_actual_end", "summary_unavailable", "implausible_times"}
    return [r["session_id"] for r in report["sessions"] if kinds & set(r["flags"])]


async def test_a_rerun_fetches_only_summaries_that_may_change_and_gives_the_identical_report(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    sandbox.store.generate_sessions(YESTERDAY, 80, seed=3)
    services = await audit_services(sandbox, clock, tmp_path, store)
    try:
        before = summaries_fetched(sandbox)
        first = await run(services, "first")
        cold = summaries_fetched(sandbox) - before
        assert cold == first["totals"]["sessions"] > 80
        before = summaries_fetched(sandbox)
        again = await run(services, "again")
        warm = summaries_fetched(sandbox) - before
    finally:
        await services.toolbox.aclose()
    assert again == first
    assert changeable(first), "the sandbox's day has sessions without a recorded end"
    assert warm == len(changeable(first)) < cold / 10
    path = Path(store.path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cached = sqlite3.connect(path).execute("SELECT session_id, actual_end FROM coviu_summary_cache").fetchall()
    assert len(cached) == cold - len(changeable(first))
    assert not {sid for sid, _ in cached} & set(changeable(first))
    assert all(end for _, end in cached)


async def test_refresh_fetches_every_summary_again(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    services = await audit_services(sandbox, clock, tmp_path, store)
    try:
        first = await run(services, "first")
        before = summaries_fetched(sandbox)
        refreshed = await run(services, "refreshed", refresh=True)
        fetched = summaries_fetched(sandbox) - before
    finally:
        await services.toolbox.aclose()
    assert refreshed == first
    assert fetched == first["totals"]["sessions"]


async def test_a_summary_without_an_end_is_fetched_again_and_its_end_is_then_kept(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    services = await audit_services(sandbox, clock, tmp_path, store)
    try:
        first = await run(services, "first")
        victim = next(r for r in first["sessions"] if r["billable_minutes"])
        session = sandbox.store.sessions[victim["session_id"]]
        # the day the audit ran, the session had no recorded end yet: its summary is not cached
        real_end, session.actual_end_time = session.actual_end_time, None
        await store.delete_run("x")
        await run(services, "no-end", refresh=True)
        session.actual_end_time = real_end
        report = await run(services, "later")
    finally:
        await services.toolbox.aclose()
    row = next(r for r in report["sessions"] if r["session_id"] == victim["session_id"])
    assert row == victim  # the end recorded since was fetched, not a stale "no recorded end"


@pytest.mark.profiles("default")
async def test_an_unavailable_summary_is_fetched_again(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    services = await audit_services(sandbox, clock, tmp_path, store)
    handlers = sandbox.api.handlers
    healthy_get = handlers[(SUMMARIES, "get")]
    try:
        healthy = await run(services, "healthy", refresh=True)
        victim = next(r for r in healthy["sessions"] if r["billable_minutes"])
        await run(services, "prime")  # every readable summary with an end is cached now

        def refuse(call: Any) -> Any:
            if call.record_id == victim["session_id"]:
                raise CoviuError(403, "forbidden")
            return healthy_get(call)

        handlers[(SUMMARIES, "get")] = refuse
        broken = await run(services, "broken", refresh=True)
        handlers[(SUMMARIES, "get")] = healthy_get
        before = summaries_fetched(sandbox)
        mended = await run(services, "mended")
        fetched = summaries_fetched(sandbox) - before
    finally:
        handlers[(SUMMARIES, "get")] = healthy_get
        await services.toolbox.aclose()
    broken_row = next(r for r in broken["sessions"] if r["session_id"] == victim["session_id"])
    assert "summary_unavailable" in broken_row["flags"] and broken["complete"] is False
    assert mended == healthy  # the unavailable summary was not cached: fetched again, and read this time
    assert fetched == len(changeable(healthy)) + 1


async def test_side_rows_hold_the_run_until_the_report_is_written(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    services = await audit_services(sandbox, clock, tmp_path, store)
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "cp.sqlite")) as saver:
        graph = build_audit_graph().compile(checkpointer=saver, interrupt_before=["write_report"])
        config: Any = {"configurable": {"thread_id": "held"}, "recursion_limit": 2000}
        try:
            await graph.ainvoke({}, config, context=Context(services=services))
            state = (await graph.aget_state(config)).values
            assert state["run_key"] == "held"
            assert "sessions" not in state and "summaries" not in state  # per-session data is not in the state
            held = await store.count_rows("held")
            assert held >= 2 * state["report"]["totals"]["sessions"]
            await graph.ainvoke(None, config, context=Context(services=services))
        finally:
            await services.toolbox.aclose()
    assert await store.count_rows("held") == 0


async def test_a_run_whose_side_rows_are_gone_stops_instead_of_reporting_less(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    services = await audit_services(sandbox, clock, tmp_path, store)
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "cp.sqlite")) as saver:
        graph = build_audit_graph().compile(checkpointer=saver, interrupt_before=["list_submissions"])
        config: Any = {"configurable": {"thread_id": "lost"}, "recursion_limit": 2000}
        try:
            await graph.ainvoke({}, config, context=Context(services=services))
            await store.delete_run("lost")  # e.g. resumed in another process with an in-memory store
            with pytest.raises(audit_module.AuditFailure, match="session rows are gone"):
                await graph.ainvoke(None, config, context=Context(services=services))
        finally:
            await services.toolbox.aclose()


def checkpoint_bytes(path: Path) -> int:
    """Bytes of everything the SQLite saver stored: checkpoints, their metadata, and pending writes."""
    with sqlite3.connect(path) as conn:
        (snapshots,) = conn.execute("SELECT sum(length(checkpoint) + length(metadata)) FROM checkpoints").fetchone()
        (writes,) = conn.execute("SELECT sum(length(value)) FROM writes").fetchone()
    return int(snapshots or 0) + int(writes or 0)


@pytest.mark.profiles("default")
async def test_checkpoints_grow_linearly_with_the_sessions(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module, "BATCH_SIZE", 25)  # many batches: a whole-state snapshot per batch is N²
    sizes: dict[int, int] = {}
    for n, day in ((100, date(2026, 11, 20)), (400, date(2026, 11, 21))):
        sandbox.store.generate_sessions(day, n, seed=n)
        services = await audit_services(sandbox, clock, tmp_path, store)
        path = tmp_path / f"checkpoints-{n}.sqlite"
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            try:
                report = await run(services, f"n{n}", saver, date=day.isoformat())
            finally:
                await services.toolbox.aclose()
        assert report["totals"]["sessions"] >= 0.9 * n
        sizes[n] = checkpoint_bytes(path)
    growth = sizes[400] / sizes[100]
    assert growth < 6, f"checkpoint bytes grew {growth:.1f}x for 4x the sessions: {sizes}"
