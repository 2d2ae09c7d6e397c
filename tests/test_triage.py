"""Triage graph on the sandbox: rules and LLM planners, id filling, 429s, lost creates, refusals."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent.errors import EXIT_OK
from agent.runs import TriageArgs, run_triage
from agent.settings import Settings
from graphs.context import Context, Services
from graphs.nodes import execute_call
from graphs.triage import build_triage_graph, session_start
from sandbox import DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID, FaultConfig, Sandbox
from tests.fakes import ScriptedChatModel
from tools.clock import FakeClock
from tools.timeparse import parse_time


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


async def triage(settings: Settings, services: Services, **args: Any) -> dict[str, Any]:
    """A triage as `coviu-agent triage` runs it (agent.runs.run_triage) on the test's services; the graph's output."""
    request = TriageArgs(request="A priority patient needs a duty nurse now", **args)
    result = await run_triage(settings, request, services=services, checkpointer=InMemorySaver())
    assert result.exit_code == EXIT_OK, result.failure
    return result.state


def writes(sandbox: Sandbox) -> dict[str, int]:
    return {
        # queue checks: first pages only (a check reads every page; small-page profiles serve several)
        "queue_lists": sum(
            1
            for r in sandbox.requests
            if r.resource == "waiting_queue_calls"
            and r.truto_method == "list"
            and r.status == 200
            and not r.query.get("next_cursor")
        ),
        "session_creates": sandbox.count(resource="sessions", truto_method="create", status=200),
        "participant_creates": sandbox.count(resource="participants", truto_method="create", status=200),
    }


async def test_rules_triage_makes_one_session_and_two_links(
    settings: Settings, services: Services, sandbox: Sandbox, clock: FakeClock
):
    state = await triage(settings, services, patient_name="Ava Jenkins")
    assert writes(sandbox) == {"queue_lists": 1, "session_creates": 1, "participant_creates": 2}
    queue = state["queue"]
    # demo queue: 5 waiting calls (3, 8, 17, 26, 40 min); answered and left calls do not count
    assert queue["waiting"] == 5
    assert queue["longest_wait_minutes"] >= 40
    assert sorted(c["waited_minutes"] >= 15 for c in queue["over_threshold"]) == [True, True, True]
    assert len(state["alerts"]) == 3
    session = state["session"]
    assert session["session_name"] == "Triage – Ava Jenkins"
    start = parse_time(session["start_time"])
    assert start == session_start(clock.now())
    assert start is not None and start.second == 0 and start - clock.now() >= timedelta(seconds=30)
    assert parse_time(session["end_time"]) == start + timedelta(minutes=30)
    roles = {p["role"]: p for p in state["participants"]}
    assert set(roles) == {"guest", "host"}
    assert roles["guest"]["display_name"] == "Ava Jenkins"
    for p in roles.values():
        assert p["entry_url"].startswith("https://") and p["entry_url"] in state["reply"]
    assert not state.get("failure")


async def test_session_is_created_with_unique_entry_flag(settings: Settings, services: Services, sandbox: Sandbox):
    state = await triage(settings, services, patient_name="Ava Jenkins")
    created = await services.toolbox.executor.run(
        "get_single_coviu_session_by_id", {"id": state["session"]["session_id"]}
    )
    assert "session;enforce-participant-uniqueness" in created["feature_flags"]
    assert {p["role"] for p in created["participants"]} == {"GUEST", "HOST"}


def scripted_llm_triage(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """A model that omits team_id, waiting_queue_id and session_id: the graph must fill them."""
    done = [m for m in messages if isinstance(m, ToolMessage)]
    system = "\n".join(str(m.content) for m in messages if isinstance(m, SystemMessage))  # the job, then its facts
    if not done:
        return AIMessage("", tool_calls=[{"name": "list_all_coviu_waiting_queue_calls", "args": {}, "id": "c1"}])
    if len(done) == 1:
        start = system.split("start_time `")[1].split("`")[0]
        end = system.split("end_time `")[1].split("`")[0]
        args = {
            "session_name": "Triage – Noah",
            "start_time": start,
            "end_time": end,
            "feature_flags": ["session;enforce-participant-uniqueness"],
        }
        return AIMessage("", tool_calls=[{"name": "create_a_coviu_session", "args": args, "id": "c2"}])
    if len(done) == 2:
        return AIMessage(
            "",
            tool_calls=[
                {"name": "create_a_coviu_participant", "args": {"display_name": "Noah", "role": "guest"}, "id": "c3"},
                {
                    "name": "create_a_coviu_participant",
                    "args": {"display_name": "Dr. Smith", "role": "host"},
                    "id": "c4",
                },
            ],
        )
    return AIMessage("Done: the session and both links are ready.")


async def test_llm_triage_fills_ids_the_model_omitted(settings: Settings, services: Services, sandbox: Sandbox):
    model = ScriptedChatModel(script=scripted_llm_triage)
    services.model = model
    services.planner = "llm"
    state = await triage(settings, services, patient_name="Noah", host_name="Dr. Smith")
    assert writes(sandbox) == {"queue_lists": 1, "session_creates": 1, "participant_creates": 2}
    assert "create_a_coviu_session" in model.bound_tools
    queue_calls = [r for r in sandbox.requests if r.resource == "waiting_queue_calls"]
    assert queue_calls[0].query["team_id"] == DEMO_TEAM_ID
    assert queue_calls[0].query["waiting_queue_id"] == DEMO_WAITING_QUEUE_ID
    participant_calls = [r for r in sandbox.requests if r.resource == "participants"]
    assert {r.query["session_id"] for r in participant_calls} == {state["session"]["session_id"]}
    assert {p["display_name"] for p in state["participants"]} == {"Noah", "Dr. Smith"}


async def test_rate_limit_storm_goes_through_wait_and_retry(services: Services, sandbox: Sandbox, clock: FakeClock):
    sandbox.set_faults(FaultConfig(seed=3, rate_limit_storm=0.4))
    graph = build_triage_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "storm"}, "recursion_limit": 100}
    visited: list[str] = []
    async for update in graph.astream(
        {"messages": [HumanMessage("now")], "patient_name": "Ava Jenkins"},
        config,
        context=Context(services=services),
        stream_mode="updates",
    ):
        visited.extend(update)
    state = (await graph.aget_state(config)).values
    rejected = sandbox.count(status=429)
    assert rejected > 0
    assert visited.count("wait_and_retry") >= 1
    assert writes(sandbox) == {"queue_lists": 1, "session_creates": 1, "participant_creates": 2}
    # the waits the graph took are what the 429s' headers asked for (1-3 s; up to 1 s more when Retry-After is an
    # HTTP date, whose whole seconds are rounded up, never early), on the injected clock
    waits = [w for w in clock.sleeps if w >= 1]
    assert waits and all(w <= 4.0 for w in waits)
    assert state["session"] and len(state["participants"]) == 2


async def test_lost_create_response_makes_exactly_one_session(settings: Settings, services: Services, sandbox: Sandbox):
    sandbox.config.honour_idempotency_keys = False  # prove the lookup, not Truto's dedupe, prevents a duplicate
    sandbox.set_faults(FaultConfig(lost_response_next=1, only_resources=["sessions"]))
    state = await triage(settings, services, patient_name="Ava Jenkins")
    names = [r for r in sandbox.requests if r.resource == "sessions" and r.truto_method == "create"]
    assert len(names) == 1  # written once, response lost, then found by the lookup instead of re-created
    listed = await services.toolbox.executor.all_items(
        "list_all_coviu_sessions", {"start_time": state["session"]["start_time"]}
    )
    assert sum(1 for s in listed if s["session_name"] == "Triage – Ava Jenkins") == 1
    assert len(state["participants"]) == 2


async def test_finished_session_refuses_participants_with_next_step(services: Services, sandbox: Sandbox):
    finished = sandbox.store.demo.sessions["finished_today"]
    before = len(sandbox.requests)
    outcome = await execute_call(
        services,
        "create_a_coviu_participant",
        {"display_name": "Late patient", "role": "guest"},
        call_id="x",
        ids={"session_id": finished},
    )
    assert outcome.kind == "refused"
    assert "ended at" in outcome.text and "create a new session" in outcome.text.lower()
    assert sandbox.count(resource="participants", truto_method="create") == 0
    assert len(sandbox.requests) - before <= 1  # at most the session lookup


async def test_clock_skew_moves_the_start_forward_once(
    settings: Settings, services: Services, sandbox: Sandbox, clock: FakeClock
):
    # the sandbox's clock runs ahead of ours by 90 s: our first start is already past for Coviu
    skewed = FakeClock(start=clock.now() + timedelta(seconds=90))
    sandbox.clock = skewed  # type: ignore[attr-defined]
    state = await triage(settings, services, patient_name="Ava Jenkins")
    creates = [r for r in sandbox.requests if r.resource == "sessions" and r.truto_method == "create"]
    assert [r.status for r in creates] == [400, 200]
    assert state["session"] and not state.get("failure")


def test_session_start_is_first_whole_minute_30s_ahead():
    base = datetime.fromisoformat("2026-11-25T09:00:29+00:00")
    assert session_start(base).isoformat() == "2026-11-25T09:01:00+00:00"
    base = datetime.fromisoformat("2026-11-25T09:00:31+00:00")
    assert session_start(base).isoformat() == "2026-11-25T09:02:00+00:00"
    assert json.dumps(session_start(base).isoformat())


async def test_the_state_type_says_what_every_node_after_prepare_finds(services: Services) -> None:
    """TriageState's required keys are set by `prepare` for each run: every node after it reads them directly."""
    from typing import NotRequired, get_origin

    from typing_extensions import get_type_hints

    from graphs.triage import TriageState

    hints = get_type_hints(TriageState, include_extras=True)
    optional = {key for key, hint in hints.items() if get_origin(hint) is NotRequired}
    required = set(hints) - optional
    assert optional == {"messages", "reply"}
    assert {"team_id", "waiting_queue_id", "patient_name", "duration_minutes", "session", "plan_steps"} <= required
    graph = build_triage_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "typed"}}
    seen: list[set[str]] = []
    async for values in graph.astream(
        {"patient_name": "Ava Jenkins"}, config, context=Context(services=services), stream_mode="values"
    ):
        seen.append(set(values))
    assert len(seen) > 3 and all(required <= keys for keys in seen[1:])  # [0]: the input, before `prepare`


async def test_a_triage_model_calling_a_tool_it_was_not_given_is_refused(
    settings: Settings, services: Services, sandbox: Sandbox
):
    """The triage model is given its three tools; a waiting call's `details` (written by a patient) may talk it into
    another: a call to a catalog tool it was not given (here cancelling a booked session) is refused by name, never
    sent. Before, triage's act allowed every catalog tool, so the cancel ran with no approval."""
    assert sandbox.store.demo is not None
    booked = sandbox.store.demo.sessions["future"]

    def injected(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        done = [m for m in messages if isinstance(m, ToolMessage)]
        if not done:
            return AIMessage(
                "", tool_calls=[{"name": "delete_a_coviu_session_by_id", "args": {"id": booked}, "id": "x"}]
            )
        return scripted_llm_triage(
            [m for m in messages if not (isinstance(m, ToolMessage) and m.tool_call_id == "x")], tools
        )

    services.model = ScriptedChatModel(script=injected)
    services.planner = "llm"
    request = TriageArgs(
        request="A priority patient needs a duty nurse now", patient_name="Noah", host_name="Dr. Smith"
    )
    await run_triage(settings, request, services=services, checkpointer=InMemorySaver())
    assert sandbox.count(resource="sessions", truto_method="delete") == 0


async def test_a_refusal_in_a_turn_whose_next_call_waits_on_a_429_is_still_counted(
    services: Services, sandbox: Sandbox
):
    """A model turn with a refused call, then a call answered 429: the turn goes to `wait_and_retry` with the
    refused call answered. Its refusal must be counted (the stop rule after two refusals); before, the act node's
    update on the way to `wait_and_retry` left the count out, and the refused call never came back to be counted."""
    from types import SimpleNamespace
    from typing import cast

    from graphs.nodes import allow_only, make_act_node

    sandbox.set_faults(FaultConfig(seed=1, rate_limit_storm_next=1))
    act = make_act_node(policy=allow_only("list_all_coviu_waiting_queue_calls"))
    turn = AIMessage(
        "",
        tool_calls=[
            {"name": "list_all_coviu_sessions", "args": {}, "id": "refused"},  # not this act's tool: refused
            {"name": "list_all_coviu_waiting_queue_calls", "args": {}, "id": "limited"},
        ],
    )
    state = {"messages": [turn], "refusals": 0, "team_id": DEMO_TEAM_ID, "waiting_queue_id": DEMO_WAITING_QUEUE_ID}
    command = await act(cast(Any, state), cast(Any, SimpleNamespace(context=Context(services=services))))
    assert command.goto == "wait_and_retry"
    assert [m.tool_call_id for m in command.update["messages"]] == ["refused"]
    assert command.update["refusals"] == 1
