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


def _without(dropped: tuple[str, ...], node: Any) -> Any:
    """A node as an earlier version had it: its update lacks the keys that version did not set yet."""
    import dataclasses

    from langgraph.types import Command

    async def old(state: Any, runtime: Any) -> Any:
        out = await node(state, runtime)
        if isinstance(out, Command):
            return dataclasses.replace(out, update={k: v for k, v in dict(out.update).items() if k not in dropped})
        return {k: v for k, v in out.items() if k not in dropped}

    return old


@pytest.mark.parametrize("stopped_before", ["list_sessions", "fetch_summaries", "write_report"])
async def test_an_audit_checkpointed_before_prepare_set_retry_and_summaries_from_list_resumes_to_its_report(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped_before: str
) -> None:
    # AuditState says `retry` and `summaries_from_list` are always there, and the nodes read them directly; a thread
    # an earlier version checkpointed (its prepare set neither) must still resume, wherever it stopped.
    import graphs.audit as audit

    dropped = ("retry", "summaries_from_list")
    original = audit.prepare, audit.list_sessions
    monkeypatch.setattr(audit, "prepare", _without(dropped, audit.prepare))
    monkeypatch.setattr(audit, "list_sessions", _without(("summaries_from_list",), audit.list_sessions))
    old_builder = audit.build_audit_graph()
    monkeypatch.setattr(audit, "prepare", original[0])
    monkeypatch.setattr(audit, "list_sessions", original[1])
    store = SqliteAuditStore(str(tmp_path / "side.sqlite"))
    services = await make_services(sandbox, clock, tmp_path / "reports", audit_store=store)
    config: Any = {"configurable": {"thread_id": f"audit:old:{stopped_before}"}, "recursion_limit": 2000}
    saver = InMemorySaver()
    try:
        old = old_builder.compile(checkpointer=saver, interrupt_before=[stopped_before])
        await old.ainvoke({"date": "yesterday"}, config, context=Context(services=services))
        values = (await old.aget_state(config)).values
        assert "summaries_from_list" not in values and ("retry" in values) == (stopped_before != "list_sessions")
        resumed = build_audit_graph().compile(checkpointer=saver)
        out = await resumed.ainvoke(None, config, context=Context(services=services))
        fresh = await build_audit_graph().compile().ainvoke({"date": "yesterday"}, context=Context(services=services))
    finally:
        await services.toolbox.aclose()
        await store.aclose()
    assert out.get("report_paths") and out["report"]["totals"] == fresh["report"]["totals"]
    assert out["report"]["summaries_from_list"] == (
        fresh["report"]["summaries_from_list"] if stopped_before == "list_sessions" else 0
    )


async def test_a_triage_checkpointed_before_prepare_set_the_planners_keys_resumes(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TriageState's model_corrections, planner_note and planned_session are read directly after `prepare`; a thread
    # an earlier version's prepare checkpointed without them resumes and finishes its triage.
    import graphs.triage as triage

    original = triage.prepare
    monkeypatch.setattr(
        triage, "prepare", _without(("model_corrections", "planner_note", "planned_session"), triage.prepare)
    )
    old_builder = triage.build_triage_graph()
    monkeypatch.setattr(triage, "prepare", original)
    services = await make_services(sandbox, clock, tmp_path / "reports")
    config: Any = {"configurable": {"thread_id": "triage:old"}, "recursion_limit": 100}
    saver = InMemorySaver()
    try:
        old = old_builder.compile(checkpointer=saver, interrupt_before=["plan"])
        await old.ainvoke({"patient_name": "Ava Jenkins"}, config, context=Context(services=services))
        assert "planner_note" not in (await old.aget_state(config)).values
        out = await triage.compile_triage(saver).ainvoke(None, config, context=Context(services=services))
    finally:
        await services.toolbox.aclose()
    assert not out["failure"] and {p["role"] for p in out["participants"]} == {"guest", "host"}


async def test_an_ask_waiting_for_approval_from_before_bound_tools_and_outcomes_resumes(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request waiting for a person's approval, checkpointed by a version whose prepare set neither `tools` nor
    # `outcomes`: approved, the call runs, its outcome is recorded, and the answer follows (every tool bound).
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
    from langgraph.types import Command

    import graphs.assistant as assistant
    from tests.fakes import ScriptedChatModel

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        if not any(isinstance(m, ToolMessage) for m in messages):
            args = {
                "session_name": "Old thread",
                "start_time": "2026-11-26T10:00:00Z",
                "end_time": "2026-11-26T10:30:00Z",
            }
            return AIMessage(
                "", tool_calls=[{"name": "create_a_coviu_session", "args": args, "id": "c1", "type": "tool_call"}]
            )
        return AIMessage("Booked.")

    original = assistant.prepare
    monkeypatch.setattr(assistant, "prepare", _without(("tools", "outcomes"), assistant.prepare))
    old_builder = assistant.build_assistant_graph()
    monkeypatch.setattr(assistant, "prepare", original)
    services = await make_services(sandbox, clock, tmp_path / "reports")
    services.model = ScriptedChatModel(script=script)
    config: Any = {"configurable": {"thread_id": "ask:old"}, "recursion_limit": 100}
    saver = InMemorySaver()
    try:
        old = old_builder.compile(checkpointer=saver)
        await old.ainvoke({"messages": [HumanMessage("Book 'Old thread'")]}, config, context=Context(services=services))
        waiting = await old.aget_state(config)
        assert waiting.interrupts and "outcomes" not in waiting.values and "tools" not in waiting.values
        resumed = assistant.compile_assistant(saver)
        command = Command(resume={"decisions": [{"type": "approve"}]})
        out = await resumed.ainvoke(command, config, context=Context(services=services))
    finally:
        await services.toolbox.aclose()
    assert [o["status"] for o in out["outcomes"]] == ["done"] and out["session_id"]
    assert str(out["messages"][-1].content) == "Booked."


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
