"""Fewer requests than the floor, small checkpoints, many clinics (issue 18), on the in-process sandbox.

    python -m bench.fleet_bench cache --sessions 1000        # cold run, re-run, 7 daily audits + a 7-day report
    python -m bench.fleet_bench checkpoints --sessions 2000  # checkpoint store bytes at its peak (SQLite saver)
    python -m bench.fleet_bench fleet --clinics 5 --sessions 500   # wall time vs the one-clinic floor (real clock)

`cache` and `checkpoints` run on a fake clock (requests and bytes do not depend on pacing); `fleet` runs on the
real clock at the sandbox's real limit (50 / 10 s per account), so it takes about sessions / 5 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.fleet import Clinic, run_fleet
from agent.runs import AuditArgs
from agent.settings import Settings
from graphs.audit import build_audit_graph
from graphs.audit_store import SqliteAuditStore
from graphs.context import Context, Services
from sandbox import (
    DEMO_ACCOUNT_ID,
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
    create_sandbox,
)
from tools.clock import FakeClock
from tools.ratelimit import RateLimitBudget, RateLimitGovernor
from tools.toolbox import open_toolbox

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def services_for(sandbox: Sandbox, clock: FakeClock, store: SqliteAuditStore, out: Path) -> Services:
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=SandboxTransport(sandbox),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    toolbox.governor.budget = RateLimitBudget(10**9)
    return Services(
        toolbox=toolbox,
        team_id=DEMO_TEAM_ID,
        collection_id=DEMO_INTAKE_COLLECTION_ID,
        report_dir=out,
        audit_store=store,
    )


async def audit(services: Services, thread: str, saver: Any = None, **inputs: Any) -> dict[str, Any]:
    graph = build_audit_graph().compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 100_000, "max_concurrency": 4}
    payload: Any = inputs
    return dict(await graph.ainvoke(payload, config, context=Context(services=services)))


async def bench_cache(sessions: int) -> None:
    clock = FakeClock(NOW)
    sandbox = create_sandbox(SandboxConfig(rate_limit=10**6), clock=clock, seed_demo=False)
    days = [NOW.date() - timedelta(days=d) for d in range(7, 0, -1)]
    for n, day in enumerate(days):
        sandbox.store.generate_sessions(day, sessions, seed=n)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteAuditStore(str(Path(tmp) / "state.sqlite"))
        services = await services_for(sandbox, clock, store, Path(tmp) / "r")

        async def requests(thread: str, **inputs: Any) -> int:
            before = len(sandbox.requests)
            await audit(services, thread, **inputs)
            return len(sandbox.requests) - before

        yesterday = days[-1].isoformat()
        cold = await requests("cold", date=yesterday, refresh=True)
        rerun = await requests("rerun", date=yesterday)
        for day in days[:-1]:
            await requests(f"daily-{day}", date=day.isoformat())
        week_cold = await requests("week-cold", since=days[0].isoformat(), until=NOW.date().isoformat(), refresh=True)
        week = await requests("week", since=days[0].isoformat(), until=NOW.date().isoformat())
        await services.toolbox.aclose()
        await store.aclose()
    print(f"sessions per day: {sessions}")
    print(f"yesterday cold: {cold} requests; re-run: {rerun} ({100 * rerun / cold:.1f}% of cold)")
    print(f"7-day report cold: {week_cold}; after seven daily audits: {week} ({100 * week / week_cold:.1f}% of cold)")


async def bench_checkpoints(sessions: int) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    clock = FakeClock(NOW)
    sandbox = create_sandbox(SandboxConfig(rate_limit=10**6), clock=clock, seed_demo=False)
    day = NOW.date() - timedelta(days=1)
    sandbox.store.generate_sessions(day, sessions, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoints.sqlite"
        store = SqliteAuditStore(str(path))
        services = await services_for(sandbox, clock, store, Path(tmp) / "r")
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            started = time.perf_counter()
            await audit(services, "size", saver, date=day.isoformat())
            elapsed = time.perf_counter() - started
        with sqlite3.connect(path) as conn:
            (snapshots,) = conn.execute("SELECT sum(length(checkpoint) + length(metadata)) FROM checkpoints").fetchone()
            (writes,) = conn.execute("SELECT sum(length(value)) FROM writes").fetchone()
        await services.toolbox.aclose()
        await store.aclose()
        file_bytes = path.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("checkpoints.sqlite-*"))
    total = int(snapshots or 0) + int(writes or 0)
    print(
        f"N={sessions}: checkpoint bytes at the end of the run {total / 1e6:.2f} MB (checkpoints + writes; the thread"
        f" is not deleted here), state file {file_bytes / 1e6:.2f} MB, {elapsed:.1f} s"
    )


async def bench_fleet(clinics: int, sessions: int) -> None:
    accounts = [f"clinic-{i}" for i in range(clinics)]
    sandbox = create_sandbox(SandboxConfig(accounts=accounts), seed_demo=False)
    day = sandbox.clock.now().date() - timedelta(days=1)
    for n, account in enumerate(accounts):
        sandbox.store_for(account).generate_sessions(day, sessions, seed=n)
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["COVIU_AGENT_STATE"] = str(Path(tmp) / "state.sqlite")
        os.environ.pop("TRUTO_API_KEY", None)
        settings = Settings()
        started = time.monotonic()
        runs = await run_fleet(
            settings,
            [Clinic(account=a) for a in accounts],
            AuditArgs(day=day.isoformat(), out_dir=Path(tmp) / "r", refresh=True),
            transport=SandboxTransport(sandbox),
        )
        wall = time.monotonic() - started
    per_clinic = max(sum(1 for r in sandbox.requests if r.query.get("integrated_account_id") == a) for a in accounts)
    floor = per_clinic / 5.0
    print(
        f"{clinics} clinics x {sessions} sessions: {wall:.1f} s; one-clinic floor {floor:.1f} s "
        f"({per_clinic} requests / 5 per s): {wall / floor:.3f}x; exit codes {[r.exit_code for r in runs]}; "
        f"429s {sandbox.count(status=429)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["cache", "checkpoints", "fleet"])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--clinics", type=int, default=5)
    ns = parser.parse_args()
    if ns.what == "cache":
        asyncio.run(bench_cache(ns.sessions))
    elif ns.what == "checkpoints":
        asyncio.run(bench_checkpoints(ns.sessions))
    else:
        asyncio.run(bench_fleet(ns.clinics, ns.sessions))


if __name__ == "__main__":
    main()
