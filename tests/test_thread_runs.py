"""Issue 23, state: a dry run is the command's, never the thread's; one run per thread at a time (a lock on the
thread in the state store, stale once its holder is gone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent.errors import BadInput
from agent.runs import TriageArgs, run_triage
from agent.settings import Settings
from graphs.context import Context, Services
from graphs.triage import build_triage_graph
from sandbox import Sandbox


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


def writes(sandbox: Sandbox) -> list[tuple[str, str]]:
    return [
        (r.resource, r.truto_method)
        for r in sandbox.requests
        if r.resource is not None and r.truto_method not in ("list", "get")
    ]


async def interrupted_triage(saver: InMemorySaver, services: Services, thread: str) -> None:
    """A triage that stopped (crash, kill) after reading nothing: its next steps create a session and two links."""
    graph = build_triage_graph().compile(checkpointer=saver, interrupt_before=["act"])
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 60}
    inputs = {"messages": [HumanMessage("A priority patient needs a duty nurse now")], "patient_name": "Ava Jenkins"}
    await graph.ainvoke(inputs, config, context=Context(services=services))
    assert (await graph.aget_state(config)).next == ("act",)


async def test_a_dry_run_never_resumes_an_interrupted_triage(
    settings: Settings, services: Services, sandbox: Sandbox
) -> None:
    saver = InMemorySaver()
    await interrupted_triage(saver, services, "t-crashed")
    with pytest.raises(BadInput, match="--dry-run: thread t-crashed .* nothing was sent"):
        await run_triage(
            settings, TriageArgs(thread_id="t-crashed", dry_run=True), services=services, checkpointer=saver
        )
    assert writes(sandbox) == []
    # the thread is undamaged: the real command finishes it, once
    done = await run_triage(settings, TriageArgs(thread_id="t-crashed"), services=services, checkpointer=saver)
    assert done.resumed and done.failure is None
    assert sorted(writes(sandbox)) == [("participants", "create"), ("participants", "create"), ("sessions", "create")]


async def test_a_dry_run_on_a_fresh_thread_plans_and_sends_nothing(
    settings: Settings, services: Services, sandbox: Sandbox
) -> None:
    args = TriageArgs(thread_id="t-new", dry_run=True, patient_name="Ava Jenkins")
    result = await run_triage(settings, args, services=services, checkpointer=InMemorySaver())
    assert result.as_dict()["dry_run"] is True and result.as_dict()["planned_calls"]
    assert writes(sandbox) == []
