"""The state store stays small at its peak: large checkpointed values (the audit's final report) are
stored compressed, after redaction, and read back whole; the report is in one checkpoint, not two."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent.checkpoint import COMPRESS_FROM_BYTES, RedactingSerializer, open_checkpointer, stored_bytes
from graphs.audit import build_audit_graph
from graphs.audit_store import SqliteAuditStore
from graphs.context import Context
from sandbox import Sandbox, generate_sessions
from tests.conftest import make_services
from tools.clock import FakeClock
from tools.textsafety import Redactor

SECRET = "tk_live_0123456789abcdefSECRET"


def test_a_large_value_is_stored_compressed_and_read_back_whole() -> None:
    serde = RedactingSerializer(JsonPlusSerializer())
    rows = [{"session_id": f"s-{i}", "session_name": "Follow-up", "flags": ["missing_form"]} for i in range(4000)]
    kind, data = serde.dumps_typed({"sessions": rows})
    plain_kind, plain = JsonPlusSerializer().dumps_typed({"sessions": rows})
    assert len(plain) >= COMPRESS_FROM_BYTES
    assert kind == f"zlib+{plain_kind}" and len(data) < len(plain) / 4
    assert serde.loads_typed((kind, data)) == {"sessions": rows}
    assert stored_bytes(kind, data) == plain


def test_a_small_value_is_stored_as_it_is() -> None:
    serde = RedactingSerializer(JsonPlusSerializer())
    assert serde.dumps_typed({"cursor": "abc"}) == JsonPlusSerializer().dumps_typed({"cursor": "abc"})


def test_a_secret_in_a_large_value_is_redacted_before_it_is_compressed() -> None:
    redactor = Redactor()
    redactor.register([SECRET])
    serde = RedactingSerializer(JsonPlusSerializer(), redactor)
    value = {"note": f"upstream echoed {SECRET}", "padding": ["x" * 100] * 2000}
    kind, data = serde.dumps_typed(value)
    assert kind.startswith("zlib+")
    stored = stored_bytes(kind, data)
    assert SECRET.encode() not in stored and b"upstream echoed" in stored


async def test_the_audit_report_is_in_one_checkpoint_compressed_and_the_thread_reads_it_back(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    generate_sessions(sandbox.store, date(2026, 11, 24), 600, seed=2)
    path = tmp_path / "state.sqlite"
    store = SqliteAuditStore(str(path))
    services = await make_services(sandbox, clock, tmp_path / "reports", audit_store=store)
    config: Any = {"configurable": {"thread_id": "audit:size"}, "recursion_limit": 2000, "max_concurrency": 4}
    try:
        async with open_checkpointer(str(path)) as saver:
            graph = build_audit_graph().compile(checkpointer=saver)
            out = await graph.ainvoke({"date": "2026-11-24"}, config, context=Context(services=services))
            again = (await graph.aget_state(config)).values
    finally:
        await services.toolbox.aclose()
        await store.aclose()
    assert len(out["report"]["sessions"]) > 500
    assert again["report"] == out["report"]
    with sqlite3.connect(path) as db:
        kinds = [kind for (kind,) in db.execute("select type from checkpoints")]
        writes = list(db.execute("select channel, type, length(value) from writes where channel = 'report'"))
        checkpoints_with_report = sum(
            1
            for kind, blob in db.execute("select type, checkpoint from checkpoints")
            if b"scheduled_start" in stored_bytes(kind, blob)
        )
    assert kinds, "the thread was checkpointed"
    assert len(writes) == 1 and writes[0][1].startswith("zlib+")  # the report's one write, compressed
    assert checkpoints_with_report == 1  # reconciled and written in one step: one checkpoint holds the report
