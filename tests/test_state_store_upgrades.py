"""The state store across upgrades: threads checkpointed by an earlier version resume, side rows left under an
earlier key are cleared, an existing side table keeps working, and checkpoints written before compression read back
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from agent.checkpoint import COMPRESS_FROM_BYTES, RedactingSerializer, open_checkpointer
from graphs.audit import build_audit_graph
from graphs.audit_store import SqliteAuditStore
from graphs.context import Context
from sandbox import Sandbox
from tests.conftest import make_services
from tools.clock import FakeClock

# --- the state store -----------------------------------------------------------------------------------------


async def test_a_thread_waiting_at_a_separate_reconcile_node_resumes_to_its_report(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thread written by a version with a separate `reconcile` node and interrupted (crash, kill) there: its
    # checkpoint names that node. Resumed, it must still reconcile and write its report (the side rows are
    # there); not end silently with no report (the CLI would then start the whole audit again).
    import dataclasses

    import graphs.audit as audit

    original = audit.list_submissions

    async def old_list_submissions(state: Any, runtime: Any) -> Any:  # the old graph's edge: on to `reconcile`
        command = await original(state, runtime)
        return dataclasses.replace(command, goto="reconcile") if command.goto == "write_report" else command

    monkeypatch.setattr(audit, "list_submissions", old_list_submissions)
    old_builder = audit.build_audit_graph()
    monkeypatch.setattr(audit, "list_submissions", original)
    if "reconcile" not in old_builder.nodes:

        async def reconcile(state: Any) -> dict[str, Any]:
            return {}

        old_builder.add_node("reconcile", reconcile)
        old_builder.add_edge("reconcile", "write_report")
    store = SqliteAuditStore(str(tmp_path / "side.sqlite"))
    services = await make_services(sandbox, clock, tmp_path / "reports", audit_store=store)
    saver = InMemorySaver()
    config: Any = {"configurable": {"thread_id": "audit:old"}, "recursion_limit": 2000}
    try:
        old = old_builder.compile(checkpointer=saver, interrupt_before=["reconcile"])
        await old.ainvoke({}, config, context=Context(services=services))
        resumed = build_audit_graph().compile(checkpointer=saver)
        assert (await resumed.aget_state(config)).next, "the old thread is seen as interrupted"
        out = await resumed.ainvoke(None, config, context=Context(services=services))
    finally:
        await services.toolbox.aclose()
        await store.aclose()
    assert out.get("report_paths") and out.get("report")


async def test_a_fresh_run_on_a_thread_clears_side_rows_left_under_its_pre_hash_key(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    # Side rows (patient data) keyed by the raw thread id, as a version before hashed run keys left them: a fresh
    # run on the thread clears them too.
    store = SqliteAuditStore(str(tmp_path / "side.sqlite"))
    services = await make_services(sandbox, clock, tmp_path / "reports", audit_store=store)
    thread = "audit:legacy"
    await store.put_rows(thread, "sessions", {"s-1": {"patient": "Jane Citizen"}})
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 2000}
    try:
        graph = build_audit_graph().compile(checkpointer=InMemorySaver())
        await graph.ainvoke({}, config, context=Context(services=services))
        assert await store.count_rows(thread) == 0
    finally:
        await services.toolbox.aclose()
        await store.aclose()


def test_an_existing_rowid_side_store_keeps_working(tmp_path: Path) -> None:
    import sqlite3

    from graphs.audit_store import SCHEMA

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        for statement in SCHEMA:  # the layout before WITHOUT ROWID
            db.execute(statement)
        db.execute("INSERT INTO coviu_audit_rows VALUES ('audit:x', 'sessions', 's-1', '{}')")

    async def go() -> tuple[int, dict[str, Any]]:
        store = SqliteAuditStore(str(path))
        try:
            await store.put_rows("run:new", "sessions", {f"s-{i}": {"i": i} for i in range(2500)})
            return await store.count_rows("run:new"), await store.rows("audit:x", "sessions")
        finally:
            await store.aclose()

    count, old = asyncio.run(go())
    assert count == 2500 and old == {"s-1": {}}


def test_a_checkpoint_written_before_compression_reads_back() -> None:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    plain = JsonPlusSerializer()
    value = {"sessions": [{"id": f"s-{i}", "name": "x" * 50} for i in range(3000)]}
    stored = plain.dumps_typed(value)
    assert len(stored[1]) >= COMPRESS_FROM_BYTES
    assert RedactingSerializer(plain).loads_typed(stored) == value


class _Big(TypedDict, total=False):
    blob: list[str]


async def test_postgres_saver_stores_and_reads_back_compressed_values() -> None:
    url = os.environ.get("COVIU_TEST_POSTGRES_URL", "").strip()
    if not url:
        pytest.skip("COVIU_TEST_POSTGRES_URL is not set")
    import psycopg
    from psycopg import sql

    from tests.test_postgres import with_search_path

    schema = f"coviu_attack_{uuid.uuid4().hex[:10]}"
    try:
        admin = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable: {str(exc).splitlines()[0]}")
    big = [f"line {i} " + "y" * 40 for i in range(3000)]

    def write(state: _Big) -> dict[str, Any]:
        return {"blob": big}

    builder: StateGraph[_Big] = StateGraph(_Big)
    builder.add_node("write", write)
    builder.add_edge(START, "write")
    builder.add_edge("write", END)
    config: Any = {"configurable": {"thread_id": "pg-big"}}
    try:
        async with open_checkpointer(with_search_path(url, schema)) as saver:
            graph = builder.compile(checkpointer=saver)
            await graph.ainvoke({"blob": ["small"]}, config)
            again = (await graph.aget_state(config)).values
            history = [s async for s in graph.aget_state_history(config)]
        async with admin.cursor() as cur:
            await cur.execute(sql.SQL("SELECT type FROM {}.checkpoint_blobs").format(sql.Identifier(schema)))
            kinds = [k for (k,) in await cur.fetchall()]
            await cur.execute(sql.SQL("SELECT type FROM {}.checkpoint_writes").format(sql.Identifier(schema)))
            write_kinds = [k for (k,) in await cur.fetchall()]
    finally:
        await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        await admin.close()
    assert again["blob"] == big
    assert len(history) >= 2
    assert any(k.startswith("zlib+") for k in kinds) and any(k.startswith("zlib+") for k in write_kinds)
