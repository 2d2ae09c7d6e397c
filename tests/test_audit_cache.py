"""The summary cache and the audit's side rows (graphs/audit_store.py): a re-run fetches only what it has not seen,
`refresh` fetches everything again, summaries that may still change are never cached, side rows are gone once the
report is written, and checkpoints grow with N, not N² (in-process sandbox, fake clock)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from graphs import audit as audit_module
from graphs.audit import build_audit_graph
from graphs.audit_store import SqliteAuditStore
from graphs.context import Context, Services
from sandbox import Sandbox, SandboxConfig, generate_sessions
from sandbox.errors import CoviuError
from sandbox.profiles import Profile
from tests.conftest import make_services
from tools.clock import FakeClock

YESTERDAY = date(2026, 11, 24)
SUMMARIES = "session_summaries"


@pytest.fixture
def sandbox_config(sandbox_profile: Profile) -> SandboxConfig:
    """Session lists that never carry entry times: every summary the cache does not hold is fetched (the summaries
    a list makes unnecessary are tests/test_audit_list_facts.py's)."""
    return sandbox_profile.config.model_copy(update={"participant_entry_listed": False})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteAuditStore]:
    opened = SqliteAuditStore(str(tmp_path / "state" / "checkpoints.sqlite"))
    yield opened
    await opened.aclose()


async def audit_services(sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore) -> Services:
    return await make_services(sandbox, clock, tmp_path / "reports", audit_store=store)


async def run(
    services: Services, thread: str, saver: Any = None, *, provenance: bool = False, **inputs: Any
) -> dict[str, Any]:
    """One audit on its own thread; the report without generated_at (and, with `provenance=False`, without
    summaries_from_cache: how a run got its summaries, not what they say; test_audit_cache_agrees.py checks it)."""
    graph = build_audit_graph().compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 2000, "max_concurrency": 4}
    payload: Any = inputs
    out = await graph.ainvoke(payload, config, context=Context(services=services))
    report = dict(out["report"])
    report.pop("generated_at")
    if not provenance:
        report.pop("summaries_from_cache")
    return report


def summaries_fetched(sandbox: Sandbox) -> int:
    return sandbox.count(resource=SUMMARIES)


def no_shows(sandbox: Sandbox, ids: list[str]) -> list[Any]:
    """The generated sessions nobody ended (not canceled): the day's no-shows."""
    sessions = [sandbox.store.sessions[sid] for sid in ids]
    return [s for s in sessions if s.actual_end_time is None and s.canceled_time is None]


def cached_ends(store: SqliteAuditStore) -> dict[str, str]:
    """The summary cache's actual end per session id ("" for a settled no-show)."""
    with sqlite3.connect(store.path) as db:
        return dict(db.execute("SELECT session_id, actual_end FROM coviu_summary_cache"))


def settled_no_show(sandbox: Sandbox, row: dict[str, Any], now: datetime) -> bool:
    """Nobody entered the session, and it was scheduled to end at least 12 hours before `now`."""
    session = sandbox.store.sessions[row["session_id"]]
    entered = any(p.entry_time for p in sandbox.store.session_participants(session, True))
    return not entered and session.actual_end_time is None and now - session.end_time >= timedelta(hours=12)


def changeable(report: dict[str, Any], sandbox: Sandbox | None = None, now: datetime | None = None) -> list[str]:
    """Sessions whose summary may still change: unavailable, implausible, or no recorded end (unless, given the
    sandbox and the time of the fetch, it is a settled no-show)."""
    kinds = {"no_actual_end", "summary_unavailable", "implausible_times"}
    out = []
    for r in report["sessions"]:
        if not kinds & set(r["flags"]):
            continue
        settled = sandbox is not None and now is not None and settled_no_show(sandbox, r, now)
        if settled and "no_actual_end" in r["flags"]:
            continue
        out.append(r["session_id"])
    return out


async def test_a_rerun_fetches_only_summaries_that_may_change_and_gives_the_identical_report(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    ids = generate_sessions(sandbox.store, YESTERDAY, 80, seed=3)
    sessions = [sandbox.store.sessions[sid] for sid in ids]
    nobody = no_shows(sandbox, ids)
    # One no-show scheduled late yesterday (under 12 h before the audit: it may yet change) and one call someone
    # entered that has no recorded end: both are fetched again, whatever the time.
    late = nobody[0]
    late.end_time = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)
    late.start_time = late.end_time - timedelta(minutes=30)
    next(s for s in sessions if s.actual_end_time is not None).actual_end_time = None
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
    now = clock.now()
    assert changeable(first), "the sandbox's day has sessions without a recorded end"
    may_change = changeable(first, sandbox, now)
    settled = set(changeable(first)) - set(may_change)
    assert settled, "the sandbox's day has settled no-shows"
    assert may_change, "and sessions fetched again: a no-show ended less than 12 h ago, or a call with no end"
    assert late.session_id in may_change and late.session_id in changeable(first)
    assert warm == len(may_change) < cold / 10
    path = Path(store.path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cached = sqlite3.connect(path).execute("SELECT session_id, actual_end FROM coviu_summary_cache").fetchall()
    assert len(cached) == cold - len(may_change)
    assert not {sid for sid, _ in cached} & set(may_change)
    assert {sid for sid, end in cached if not end} == settled  # kept as no-shows: no end stored


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


@pytest.mark.profiles("variant")
async def test_a_cached_no_show_that_the_list_shows_an_end_for_is_fetched_again(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    # An account whose session list carries `actual_end_time` (OAS's optional field) tells a no-show that was
    # entered after all (however unlikely) from one that was not: the cached "no recorded end" is not served.
    ids = generate_sessions(sandbox.store, YESTERDAY, 80, seed=3)
    no_show = no_shows(sandbox, ids)[0]
    services = await audit_services(sandbox, clock, tmp_path, store)
    try:
        await run(services, "first")
        cached = cached_ends(store)
        assert cached[no_show.session_id] == ""  # kept as a settled no-show
        no_show.actual_end_time = no_show.end_time + timedelta(minutes=5)
        before = summaries_fetched(sandbox)
        later = await run(services, "later")
        fetched = summaries_fetched(sandbox) - before
    finally:
        await services.toolbox.aclose()
    row = next(r for r in later["sessions"] if r["session_id"] == no_show.session_id)
    assert "no_actual_end" not in row["flags"] and row["actual_end"] is not None
    assert fetched == 1


async def test_a_no_show_is_kept_only_once_it_has_settled(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    # Audited an hour after its scheduled end, a no-show is fetched again; audited 12 h after, it is kept.
    ids = generate_sessions(sandbox.store, YESTERDAY, 80, seed=3)
    no_show = no_shows(sandbox, ids)[0]
    no_show.end_time = clock.now() - timedelta(hours=1)  # still yesterday for a window that ends at midnight
    no_show.start_time = no_show.end_time - timedelta(minutes=30)
    today = date(2026, 11, 25)
    services = await audit_services(sandbox, clock, tmp_path, store)
    try:
        await run(services, "an hour after", date=today.isoformat())
        cached = cached_ends(store)
        assert no_show.session_id not in cached
        clock.advance(11 * 3600.0)
        await run(services, "twelve hours after", date=today.isoformat())
        cached = cached_ends(store)
        assert cached.get(no_show.session_id) == ""
    finally:
        await services.toolbox.aclose()


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
    assert fetched == len(changeable(healthy, sandbox, clock.now())) + 1


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
            run = state["run_key"]
            assert run.startswith("run:") and len(run) == 28  # short (it is in every side row), from the thread
            assert "sessions" not in state and "summaries" not in state  # per-session data is not in the state
            assert "report" not in state  # reconciled in the step that writes it: one checkpoint holds the report
            held = await store.count_rows(run)
            assert held >= 2 * state["sessions_listed"] > 0
            await graph.ainvoke(None, config, context=Context(services=services))
        finally:
            await services.toolbox.aclose()
    assert await store.count_rows(run) == 0


async def test_a_run_whose_side_rows_are_gone_stops_instead_of_reporting_less(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    services = await audit_services(sandbox, clock, tmp_path, store)
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "cp.sqlite")) as saver:
        graph = build_audit_graph().compile(checkpointer=saver, interrupt_before=["list_submissions"])
        config: Any = {"configurable": {"thread_id": "lost"}, "recursion_limit": 2000}
        try:
            await graph.ainvoke({}, config, context=Context(services=services))
            run = (await graph.aget_state(config)).values["run_key"]
            await store.delete_run(run)  # e.g. resumed in another process with an in-memory store
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
        generate_sessions(sandbox.store, day, n, seed=n)
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
