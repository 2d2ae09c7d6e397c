"""A run's inputs have one home: the ids in the run's context (settings as defaults), the request in the graph's
declared input schema. A server run and a CLI run of the same request send the same calls; a reused thread runs
on the ids of its new run, never on the ones an earlier run left in its state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver

import graphs.context
from agent.errors import EXIT_OK
from agent.runs import AuditArgs, TriageArgs, run_audit, run_triage
from agent.settings import Settings
from graphs.audit import AuditInput
from graphs.context import Context, Services
from graphs.triage import TriageInput, compile_triage
from sandbox import (
    DEMO_ACCOUNT_ID,
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
    SandboxTransport,
    create_sandbox,
)
from sandbox.profiles import parse_label
from tests.conftest import START
from tools.clock import FakeClock
from tools.ratelimit import RateLimitGovernor
from tools.toolbox import open_toolbox

pytestmark = pytest.mark.profiles("default")

REQUEST = "A priority patient needs a duty nurse now. Patient: Ava Jenkins"
Call = tuple[str, str, str]


class RecordingTransport(httpx.AsyncBaseTransport):
    """The sandbox's transport, recording each request's line and body as sent."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.calls: list[Call] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        canonical = json.dumps(json.loads(body), sort_keys=True) if body else ""
        query = "&".join(sorted(str(request.url.query, "ascii").split("&"))) if request.url.query else ""
        self.calls.append((request.method, f"{request.url.path}?{query}", canonical))
        return await self.inner.handle_async_request(request)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


async def recorded_services(report_dir: Path) -> tuple[Services, RecordingTransport]:
    """Services on a fresh demo sandbox at the tests' start time, whose every request is recorded.

    Their default ids are none: the ids of these runs come from the request alone (context, flags)."""
    clock = FakeClock(start=START)
    transport = RecordingTransport(SandboxTransport(create_sandbox(config=parse_label("default").config, clock=clock)))
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=transport,
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    return Services(toolbox=toolbox, report_dir=report_dir, source="sandbox"), transport


@pytest.fixture
async def cli_services(tmp_path: Path) -> AsyncIterator[tuple[Services, RecordingTransport]]:
    built = await recorded_services(tmp_path / "cli")
    yield built
    await built[0].toolbox.aclose()


@pytest.fixture
async def server_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Services, RecordingTransport]]:
    """The server's graphs (agent/server.py, as langgraph.json names them), their services provider giving these."""
    import agent.server  # noqa: F401  (registers its provider: replaced below for this test)

    built = await recorded_services(tmp_path / "server")

    async def provide() -> Services:
        return built[0]

    monkeypatch.setattr(graphs.context, "_provider", provide)
    yield built
    await built[0].toolbox.aclose()


async def server_run(graph_id: str, inputs: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A run as the LangGraph server makes one: JSON input, the context as a dict (LangGraph builds the graph's
    `ServerContext` from it), the graph id and thread in the configurable, the server's checkpointer."""
    import agent.server

    graph = getattr(agent.server, graph_id).copy(update={"checkpointer": InMemorySaver()})
    config = {"configurable": {"thread_id": f"server-{graph_id}", "graph_id": graph_id}, "recursion_limit": 10_000}
    return dict(await graph.ainvoke(inputs, config, context=context))


async def test_a_server_triage_and_a_cli_triage_of_one_request_send_identical_calls(
    settings: Settings,
    cli_services: tuple[Services, RecordingTransport],
    server_services: tuple[Services, RecordingTransport],
) -> None:
    cli, cli_calls = cli_services
    args = TriageArgs(request=REQUEST, team_id=DEMO_TEAM_ID, queue_id=DEMO_WAITING_QUEUE_ID)
    result = await run_triage(settings, args, services=cli, checkpointer=InMemorySaver())
    assert result.exit_code == EXIT_OK, result.failure

    _, server_calls = server_services
    state = await server_run(
        "triage",
        {"messages": [{"role": "user", "content": REQUEST}]},
        {"team_id": DEMO_TEAM_ID, "waiting_queue_id": DEMO_WAITING_QUEUE_ID},
    )
    assert not state.get("failure"), state.get("failure")
    assert state["team_id"] == result.state["team_id"] == DEMO_TEAM_ID
    writes = [c for c in cli_calls.calls if c[0] == "POST"]
    assert len(writes) == 3  # one session, two participants: the runs did the whole triage
    assert server_calls.calls == cli_calls.calls


async def test_a_server_audit_and_a_cli_audit_of_one_day_send_identical_calls(
    settings: Settings,
    cli_services: tuple[Services, RecordingTransport],
    server_services: tuple[Services, RecordingTransport],
) -> None:
    cli, cli_calls = cli_services
    args = AuditArgs(
        day="yesterday", team_id=DEMO_TEAM_ID, collection_id=DEMO_INTAKE_COLLECTION_ID, out_dir=cli.report_dir
    )
    result = await run_audit(settings, args, services=cli, checkpointer=InMemorySaver())
    assert result.exit_code == EXIT_OK

    _, server_calls = server_services
    state = await server_run(
        "audit", {"date": "yesterday"}, {"team_id": DEMO_TEAM_ID, "collection_id": DEMO_INTAKE_COLLECTION_ID}
    )
    assert state["report"]["sessions"] == result.report["sessions"]  # type: ignore[index]
    assert len(cli_calls.calls) > 2
    # summaries are fetched concurrently: the same calls, in whatever order they were answered
    assert sorted(server_calls.calls) == sorted(cli_calls.calls)


async def test_a_reused_thread_triages_the_team_of_its_new_run(services: Services) -> None:
    graph = compile_triage(InMemorySaver())
    config: Any = {"configurable": {"thread_id": "chat"}, "recursion_limit": 60}
    first = await graph.ainvoke(
        {"messages": [{"role": "user", "content": REQUEST}]}, config, context=Context(services=services)
    )
    assert first["team_id"] == DEMO_TEAM_ID and not first.get("failure")

    other_team = "00000000-0000-4000-8000-0000000000aa"
    second = await graph.ainvoke(
        {"messages": [{"role": "user", "content": REQUEST}]},
        config,
        context=Context(team_id=other_team, services=services),
    )
    assert second["team_id"] == other_team  # the state's team of the first run does not shadow the context's


def declared(schema: Any) -> set[str]:
    return set(schema.__required_keys__ | schema.__optional_keys__)


async def test_every_input_a_run_passes_is_declared_by_its_graph(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.runs.audit
    import agent.runs.base
    import agent.runs.triage

    given: list[Mapping[str, Any]] = []
    start = agent.runs.base._resume_or_start

    async def recording(graph: Any, config: Any, inputs: Mapping[str, Any], context: Any, **kw: Any) -> Any:
        given.append(inputs)
        return await start(graph, config, inputs, context, **kw)

    monkeypatch.setattr(agent.runs.audit, "_resume_or_start", recording)
    monkeypatch.setattr(agent.runs.triage, "_resume_or_start", recording)
    audit = AuditArgs(team_id=DEMO_TEAM_ID, collection_id=DEMO_INTAKE_COLLECTION_ID, refresh=True)
    await run_audit(settings, audit, services=services, checkpointer=InMemorySaver())
    triage = TriageArgs(request=REQUEST, team_id=DEMO_TEAM_ID, queue_id=DEMO_WAITING_QUEUE_ID, dry_run=True)
    await run_triage(settings, triage, services=services, checkpointer=InMemorySaver())
    audit_inputs, triage_inputs = given
    # LangGraph drops an undeclared input key without a word: the ids travel in the run's context instead
    assert set(audit_inputs) <= declared(AuditInput), set(audit_inputs) - declared(AuditInput)
    assert set(triage_inputs) <= declared(TriageInput), set(triage_inputs) - declared(TriageInput)
