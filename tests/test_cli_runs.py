"""agent.runs: one run from start to typed result (thread, resume-or-start, checkpoint clean-up, exit code),
and the CLI's error mapping (a bug is never 'bad input')."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import typer
from langgraph.checkpoint.memory import InMemorySaver

from agent.cli.common import run_async
from agent.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_UPSTREAM
from agent.runs import AuditArgs, TriageArgs, TriageResult, run_audit, run_triage
from agent.settings import Settings
from graphs.context import Context, Services
from sandbox import Sandbox
from tools.errors import RateLimitBudgetError

pytestmark = pytest.mark.profiles("default")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


async def test_triage_run_is_typed_and_a_second_run_gets_its_own_thread(settings: Settings, services: Services):
    saver = InMemorySaver()
    args = TriageArgs(request="A priority patient needs a duty nurse now", patient_name="Ava Jenkins")
    first = await run_triage(settings, args, services=services, checkpointer=saver)
    assert first.exit_code == EXIT_OK and first.failure is None and not first.resumed
    assert first.thread_id.startswith("triage:") and "Ava" not in first.thread_id
    assert first.as_dict()["session"]["session_name"] == "Triage – Ava Jenkins"
    second = await run_triage(settings, args, services=services, checkpointer=saver)
    assert second.thread_id.startswith(first.thread_id + ":")  # finished before: a new run beside it


async def test_unknown_queue_is_bad_input_by_status_not_by_text(settings: Settings, services: Services):
    args = TriageArgs(queue_id="00000000-0000-4000-8000-000000000404", patient_name="Ava Jenkins")
    result = await run_triage(settings, args, services=services, checkpointer=InMemorySaver())
    assert result.state.get("last_error_status") == 404
    assert result.exit_code == EXIT_BAD_INPUT


def test_a_404_in_an_error_text_is_not_a_404():
    state: dict[str, Any] = {
        "failure": "the waiting queue could not be read",
        "queue": None,
        "last_error": "HTTP 500 from /waiting_queues/q-404/calls",
        "last_error_status": 500,
    }
    assert TriageResult("t", False, state).exit_code == EXIT_UPSTREAM


async def test_audit_run_writes_where_asked_reports_progress_and_drops_its_thread(
    settings: Settings, services: Services, sandbox: Sandbox, tmp_path: Path
):
    saver = InMemorySaver()
    seen: list[str] = []
    out = tmp_path / "elsewhere"
    result = await run_audit(
        settings,
        AuditArgs(day="yesterday", out_dir=out),
        services=services,
        checkpointer=saver,
        on_progress=lambda kind, count, total: seen.append(kind),
    )
    assert result.exit_code == EXIT_OK and result.produced and result.complete
    assert all(Path(p).parent == out for p in result.paths.values())
    assert "sessions" in seen
    assert result.thread_id.startswith("audit:")
    assert not [c async for c in saver.alist({"configurable": {"thread_id": result.thread_id}})]
    assert services.report_dir != out  # the caller's services are not changed
    assert result.figures == {"rate_limit_waits": {"count": 0, "seconds": 0}}  # this run's, for `audit --json`


def test_a_bug_is_not_bad_input():
    async def buggy() -> None:
        raise ValueError("a bug deep inside")

    with pytest.raises(ValueError, match="a bug deep inside"):
        run_async(buggy, as_json=False)


def test_a_run_input_error_is_bad_input():
    from tools.errors import MissingSettingError

    async def missing() -> None:
        raise MissingSettingError("set COVIU_TEAM_ID")

    with pytest.raises(typer.Exit) as caught:
        run_async(missing, as_json=False)
    assert caught.value.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize("through_mcp", [False, True])
async def test_a_real_account_spends_the_shared_rate_budget_through_either_tool_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, through_mcp: bool
):
    """A real Truto account on the system clock paces on the store beside COVIU_AGENT_STATE, whether the tools
    come from /tools or from Truto's MCP server (every process of a deployment spends one budget)."""
    from agent.services import open_services
    from sandbox import SandboxTransport
    from sandbox.mcp import DEMO_MCP_TOKEN
    from tools.ratestore import SqliteRateStore, sqlite_rate_path

    for key in ("OPENAI_API_KEY", "TRUTO_MCP_URL"):
        monkeypatch.delenv(key, raising=False)
    env: dict[str, Any] = {
        "TRUTO_API_KEY": "sandbox",
        "TRUTO_INTEGRATED_ACCOUNT_ID": "sandbox",
        "TRUTO_BASE_URL": "http://sandbox.local",
        "TRUTO_ALLOW_INSECURE": "1",
    }
    if through_mcp:
        env["TRUTO_MCP_URL"] = f"http://sandbox.local/mcp/{DEMO_MCP_TOKEN}"
    state = str(tmp_path / "state.db")
    settings = Settings(_env_file=None, COVIU_AGENT_STATE=state, **env)  # type: ignore[call-arg]
    async with open_services(settings, transport=SandboxTransport(sandbox)) as opened:
        assert opened.toolbox.catalog.source == ("mcp" if through_mcp else "tools")
        store = opened.toolbox.governor.store
        assert isinstance(store, SqliteRateStore) and store.path == Path(sqlite_rate_path(state))


async def test_each_server_run_has_a_whole_rate_limit_budget_of_its_own(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
):
    """The LangGraph server's services outlive its runs, and runs of one account share the toolbox: each run gets a
    whole rate-limit wait budget of its own, as a CLI run does. A run that spent its budget stays spent when
    another starts (the old restart-on-start renewed a running run's budget), and a new run is not charged for an
    earlier run's waits."""
    import agent.server as server
    from graphs.context import resolve_services

    monkeypatch.setattr(server, "_settings", settings)
    monkeypatch.setitem(server._by_account, "sandbox", services)
    seconds = services.toolbox.budget.seconds
    first_run, second_run = Context(), Context()

    async def node_of(run: Context, wait: float | None) -> float:
        """A node of `run`: resolves its services (as every node does), then claims a wait; returns what is left."""
        provided = await resolve_services(run)
        assert provided.toolbox.governor is services.toolbox.governor  # one account, one pacing
        if wait is not None:
            provided.toolbox.governor.claim_wait(provided.budget, wait, "a 429's hold")
        return provided.budget.left

    assert await asyncio.create_task(node_of(first_run, seconds)) == 0  # the first run spends all of its budget
    assert await asyncio.create_task(node_of(second_run, None)) == seconds  # a run starting now has all of its own
    services.clock.advance(seconds)  # type: ignore[attr-defined]  # (FakeClock) the first run's wait is over
    with pytest.raises(RateLimitBudgetError):  # ...and the first run's next wait still does not fit its own
        await asyncio.create_task(node_of(first_run, 1.0))
    assert await asyncio.create_task(node_of(second_run, 1.0)) == seconds - 1.0
    assert services.toolbox.budget.left == seconds  # outside a run: the shared toolbox's own, never charged


@pytest.mark.parametrize(
    ("graph", "seconds"), [("audit", 1800.0), ("triage", 120.0), ("assistant", 120.0), (None, 120.0)]
)
async def test_a_server_run_has_its_graphs_wait_budget_as_the_cli_gives_it(
    graph: str | None, seconds: float, settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nightly audit on the server (a cron) may sit out 30 minutes of rate limits, as `coviu-agent audit` may;
    triage and the assistant two minutes; COVIU_AGENT_MAX_WAIT overrides both."""
    from langchain_core.runnables.config import var_child_runnable_config

    import agent.server as server

    monkeypatch.setattr(server, "_settings", settings)
    monkeypatch.setitem(server._by_account, "sandbox", services)

    async def run_of(graph_id: str | None) -> Services:
        if graph_id is not None:
            var_child_runnable_config.set({"configurable": {"graph_id": graph_id}})
        return await server._provide()

    provided = await asyncio.create_task(run_of(graph))
    assert provided.budget.seconds == seconds
    monkeypatch.setattr(settings, "max_wait", 42.0)
    provided = await asyncio.create_task(run_of(graph))
    assert provided.budget.seconds == 42.0
