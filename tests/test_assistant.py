"""Assistant graph on the sandbox with a scripted model: the hero requests, approvals, injection, guards, caps.

Each test scripts the model per request and checks the sandbox's state afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import typer
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime
from langgraph.types import Command
from typer.testing import CliRunner

from agent.cli import app
from agent.cli.assistant import report_outcome, terminal_decider
from agent.runs import AskOutcome, run_ask
from agent.settings import Settings
from graphs.assistant import NOT_APPROVED, build_act_node, build_assistant_graph
from graphs.context import Context, Services
from sandbox import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID, Sandbox, generate_sessions
from sandbox.media import EBML_MAGIC
from sandbox.store import DemoData
from tests.fakes import ScriptedChatModel
from tools.clock import FakeClock
from tools.executor import MODEL_RESULT_CAP
from workers.recordings import DownloadIndex, RecordingsWorker

UNIQUE_ENTRY = "session;enforce-participant-uniqueness"
Script = Callable[[list[BaseMessage], list[str]], AIMessage]

# --- helpers -------------------------------------------------------------------------------------


def demo(sandbox: Sandbox) -> DemoData:
    """The sandbox's seeded demo ids."""
    assert sandbox.store.demo is not None
    return sandbox.store.demo


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def since_request(messages: list[BaseMessage]) -> list[BaseMessage]:
    """The messages after the last user message (this request's turn)."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return messages[i + 1 :]
    return []


def request_of(messages: list[BaseMessage]) -> str:
    return next(str(m.content) for m in reversed(messages) if isinstance(m, HumanMessage))


def results(messages: list[BaseMessage]) -> list[ToolMessage]:
    return [m for m in since_request(messages) if isinstance(m, ToolMessage)]


def now_from(messages: list[BaseMessage]) -> datetime:
    """What a model reads from the system prompt: now, with the clinic's UTC offset."""
    system = "\n".join(str(m.content) for m in messages if isinstance(m, SystemMessage))
    assert isinstance(messages[0], SystemMessage)
    match = re.search(r"Now is (\S+) ", system)
    assert match, system
    return datetime.fromisoformat(match.group(1))


class Chat:
    """One assistant thread (in-memory checkpoints) driven by a scripted model."""

    def __init__(self, services: Services, script: Script, thread: str = "t1") -> None:
        self.model = ScriptedChatModel(script=script)
        services.model = self.model
        self.services = services
        self.graph = build_assistant_graph().compile(checkpointer=InMemorySaver())
        self.config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 100}
        self.context = Context(services=services)
        self.interrupts = 0

    async def say(self, text: str) -> dict[str, Any]:
        await self.graph.ainvoke({"messages": [HumanMessage(text)]}, self.config, context=self.context)
        return await self.values()

    async def resume(self, approved: bool) -> dict[str, Any]:
        """Answer the pending HITLRequest: approve (or reject) every action in it."""
        decision = {"type": "approve"} if approved else {"type": "reject"}
        return await self.decide([decision] * len(await self.pending()))

    async def decide(self, decisions: list[dict[str, Any]]) -> dict[str, Any]:
        await self.graph.ainvoke(Command(resume={"decisions": decisions}), self.config, context=self.context)
        return await self.values()

    async def pending(self) -> list[dict[str, Any]]:
        snapshot = await self.graph.aget_state(self.config)
        return [a for i in snapshot.interrupts for a in i.value["action_requests"]]

    async def values(self) -> dict[str, Any]:
        return dict((await self.graph.aget_state(self.config)).values)

    async def answer_all(self, approved: bool) -> dict[str, Any]:
        """Resume every approval the run asks for with the same answer."""
        while await self.pending():
            self.interrupts += 1
            await self.resume(approved)
        return await self.values()


def final_answer(state: dict[str, Any]) -> str:
    last = state["messages"][-1]
    assert isinstance(last, AIMessage) and not last.tool_calls
    return str(last.content)


def writes(sandbox: Sandbox) -> int:
    return sum(1 for r in sandbox.requests if r.truto_method in ("create", "update", "delete"))


def model_inputs(model: ScriptedChatModel) -> list[BaseMessage]:
    return [m for prompt in model.prompts for m in prompt]


# --- 1 and 3: book a session tomorrow in the clinic's zone, then two links for it -----------------


def booking_script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    request = request_of(messages)
    done = results(messages)
    if request.startswith("Create a session"):
        if not done:
            now = now_from(messages)
            start = (now + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
            args = {
                "session_name": "Intake - Jenkins",
                "start_time": start.isoformat(),
                "end_time": (start + timedelta(minutes=45)).isoformat(),
                "feature_flags": [UNIQUE_ENTRY],
            }
            return AIMessage("", tool_calls=[call("create_a_coviu_session", args, "c1")])
        session = json.loads(str(done[-1].content))
        return AIMessage(f"Booked 'Intake - Jenkins' ({session['session_id']}) for tomorrow 10:00-10:45.")
    # "Generate two links for that session": find it in the conversation, check it, add both people
    created = next(
        json.loads(str(m.content))
        for m in messages
        if isinstance(m, ToolMessage) and m.name == "create_a_coviu_session"
    )
    session_id = created["session_id"]
    if not done:
        return AIMessage("", tool_calls=[call("get_single_coviu_session_by_id", {"id": session_id}, "c2")])
    if len(done) == 1:
        return AIMessage(
            "",
            tool_calls=[
                call(
                    "create_a_coviu_participant",
                    {"session_id": session_id, "display_name": "Jenkins", "role": "guest"},
                    "c3",
                ),
                # no session_id: "that session" is filled from the conversation's state
                call("create_a_coviu_participant", {"display_name": "Dr. Smith", "role": "host"}, "c4"),
            ],
        )
    links = [json.loads(str(m.content)) for m in done[1:]]
    return AIMessage("\n".join(f"{p['display_name']} ({p['role']}): {p['entry_url']}" for p in links))


async def test_books_tomorrow_10_in_clinic_zone_then_two_links(services: Services, sandbox: Sandbox) -> None:
    services.zone = ZoneInfo("Australia/Sydney")  # now is 2026-11-25 09:00 UTC = 20:00 in Sydney
    chat = Chat(services, booking_script)
    await chat.say(
        "Create a session 'Intake - Jenkins' tomorrow at 10:00 for 45 minutes, enforcing unique participant entry"
    )
    assert [p["name"] for p in await chat.pending()] == ["create_a_coviu_session"]  # a write waits for a human
    assert not [s for s in sandbox.store.sessions.values() if s.session_name == "Intake - Jenkins"]
    state = await chat.answer_all(approved=True)
    booked = [s for s in sandbox.store.sessions.values() if s.session_name == "Intake - Jenkins"]
    assert len(booked) == 1
    session = booked[0]
    # tomorrow in Sydney is 26 November; 10:00 AEDT (UTC+11) is 23:00 UTC on the 25th
    assert session.start_time == datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    assert session.end_time == datetime(2026, 11, 25, 23, 45, tzinfo=UTC)
    assert UNIQUE_ENTRY in session.feature_flags
    assert session.session_id in final_answer(state)
    system = str(chat.model.prompts[0][1].content)  # this request's facts follow the rules
    assert "Australia/Sydney" in system and "2026-11-25T20:00:07+11:00" in system
    assert "create_a_coviu_session" in chat.model.bound_tools
    assert "delete_a_coviu_session_by_id" not in chat.model.bound_tools  # only what the request needs is bound

    await chat.say("Generate two links for that session: the patient and Dr. Smith as host")
    state = await chat.answer_all(approved=True)
    people = {
        sandbox.store.participants[p].display_name: sandbox.store.participants[p] for p in session.participant_ids
    }
    assert {name: p.role for name, p in people.items()} == {"Jenkins": "GUEST", "Dr. Smith": "HOST"}
    answer = final_answer(state)
    for pid in session.participant_ids:
        assert f"https://coviu.com/session/{pid}" in answer
    assert sandbox.count(resource="participants", truto_method="create", status=200) == 2


# --- 2: the waiting queue -------------------------------------------------------------------------


def queue_script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    done = results(messages)
    if not done:
        args = {"team_id": DEMO_TEAM_ID, "waiting_queue_id": DEMO_WAITING_QUEUE_ID}
        return AIMessage("", tool_calls=[call("list_all_coviu_waiting_queue_calls", args, "q1")])
    now = now_from(messages)
    calls = json.loads(str(done[-1].content))["result"]
    waiting = [c for c in calls if not (c["answeredAt"] or c["leftQueueAt"] or c["finishedAt"])]
    late = []
    for c in waiting:
        minutes = (now - datetime.fromisoformat(c["joinedAt"].replace("Z", "+00:00"))).total_seconds() / 60
        if minutes > 15:
            late.append(f"{json.loads(c['details'])['firstName']} ({minutes:.0f} min)")
    return AIMessage(f"{len(late)} waiting more than 15 minutes: {', '.join(late)}.")


@pytest.mark.profiles("default")  # the scripted model reads the default formats
async def test_queue_check_names_the_long_waits_and_writes_nothing(services: Services, sandbox: Sandbox) -> None:
    chat = Chat(services, queue_script)
    state = await chat.say(
        f"Check team {DEMO_TEAM_ID}, queue {DEMO_WAITING_QUEUE_ID}: anyone waiting more than 15 minutes?"
    )
    answer = final_answer(state)
    assert answer.startswith("3 waiting more than 15 minutes")
    assert "Ava (40 min)" in answer and "Leo (26 min)" in answer and "Henry (17 min)" in answer
    lists = [r for r in sandbox.requests if r.resource == "waiting_queue_calls"]
    assert len(lists) == 1
    assert lists[0].query["team_id"] == DEMO_TEAM_ID and lists[0].query["waiting_queue_id"] == DEMO_WAITING_QUEUE_ID
    assert writes(sandbox) == 0


# --- 4: billable minutes from the summary -----------------------------------------------------------


def billing_script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    done = results(messages)
    session_id = request_of(messages).rsplit(" ", 1)[-1]
    if not done:
        return AIMessage("", tool_calls=[call("get_single_coviu_session_summary_by_id", {"id": session_id}, "b1")])
    summary = json.loads(str(done[-1].content))

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    entries = [at(p["entry_time"]) for p in summary["participants"] if p.get("entry_time")]
    start = min(entries) if entries else at(summary["start_time"])
    minutes = math.ceil((at(summary["actual_end_time"]) - start).total_seconds() / 60)
    return AIMessage(f"Session {session_id}: {minutes} billable minutes.")


@pytest.mark.profiles("default")  # the scripted model reads the default formats
async def test_billable_minutes_come_from_the_summary(services: Services, sandbox: Sandbox) -> None:
    overrun = demo(sandbox).sessions["overrun"]  # entered 10:00, call completed 10:55 yesterday
    chat = Chat(services, billing_script)
    state = await chat.say(f"Billable minutes for session {overrun}")
    assert final_answer(state) == f"Session {overrun}: 55 billable minutes."
    assert sandbox.count(resource="session_summaries", truto_method="get", status=200) == 1
    assert writes(sandbox) == 0


# --- 5: locked submissions over the last 24 hours ----------------------------------------------------


def submissions_script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    done = results(messages)
    if not done:
        since = (now_from(messages) - timedelta(hours=24)).isoformat()
        # team_id and collection_id left out: the graph fills them in
        return AIMessage("", tool_calls=[call("list_all_coviu_submissions", {"from": since, "limit": 200}, "s1")])
    page = json.loads(str(done[-1].content))
    locked = [s["item_submission_id"] for s in page["result"] if s["locked_at"]]
    return AIMessage(f"{len(locked)} locked submissions: {', '.join(locked)}")


@pytest.mark.profiles("default")  # the scripted model reads the default formats
async def test_locked_submissions_over_the_last_24_hours(
    services: Services, sandbox: Sandbox, clock: FakeClock
) -> None:
    chat = Chat(services, submissions_script)
    state = await chat.say("Locked submissions in the intake collection over the last 24 hours")
    since = clock.now() - timedelta(hours=24)
    expected = {
        s.submission_id
        for s in sandbox.store.submissions.values()
        if s.collection_id == DEMO_INTAKE_COLLECTION_ID and s.created_at >= since and s.locked_at is not None
    }
    answer = final_answer(state)
    assert expected and answer.startswith(f"{len(expected)} locked submissions")
    assert all(sid in answer for sid in expected)
    listed = [r for r in sandbox.requests if r.resource == "submissions"]
    assert listed[0].query["collection_id"] == DEMO_INTAKE_COLLECTION_ID and listed[0].query["team_id"] == DEMO_TEAM_ID


# --- 6: cancelling needs approval ---------------------------------------------------------------------


def cancel_script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    session_id = request_of(messages).split("session ")[1].split(" ")[0]
    done = results(messages)
    if not done:
        return AIMessage("", tool_calls=[call("get_single_coviu_session_by_id", {"id": session_id}, "k1")])
    if len(done) == 1:
        return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": session_id}, "k2")])
    outcome = str(done[-1].content)
    if outcome.startswith(NOT_APPROVED):
        return AIMessage(f"Session {session_id} was not cancelled: you did not approve it.")
    return AIMessage(f"Session {session_id} is cancelled.")


async def test_cancel_interrupts_and_runs_only_once_approved(services: Services, sandbox: Sandbox) -> None:
    future = demo(sandbox).sessions["future"]
    chat = Chat(services, cancel_script)
    await chat.say(f"The patient for session {future} cancelled: cancel it")
    pending = await chat.pending()
    assert [(p["name"], p["args"]["id"]) for p in pending] == [("delete_a_coviu_session_by_id", future)]
    assert sandbox.store.sessions[future].canceled_time is None
    assert sandbox.count(resource="sessions", truto_method="delete") == 0
    state = await chat.resume(True)
    assert sandbox.store.sessions[future].canceled_time is not None
    assert sandbox.count(resource="sessions", truto_method="delete", status=200) == 1
    assert final_answer(state) == f"Session {future} is cancelled."


async def test_rejected_cancel_is_not_sent(services: Services, sandbox: Sandbox) -> None:
    future = demo(sandbox).sessions["future"]
    chat = Chat(services, cancel_script)
    await chat.say(f"The patient for session {future} cancelled: cancel it")
    state = await chat.resume(False)
    assert sandbox.store.sessions[future].canceled_time is None
    assert sandbox.count(resource="sessions", truto_method="delete") == 0
    rejected = [m for m in state["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "k2"]
    assert rejected[0].status == "error" and str(rejected[0].content).startswith(NOT_APPROVED)
    assert "not cancelled" in final_answer(state)


def offline_settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.sqlite"))  # type: ignore[call-arg]


async def test_ask_without_approval_exits_4_then_resumes_with_yes(
    services: Services, sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    future = demo(sandbox).sessions["future"]
    services.model = ScriptedChatModel(script=cancel_script)
    settings = offline_settings(tmp_path)
    request = f"The patient for session {future} cancelled: cancel it"
    outcome = await run_ask(settings, request, services=services, thread_id="ask:1")  # no --yes, no terminal
    assert outcome.needs_approval and outcome.thread_id == "ask:1"
    with pytest.raises(typer.Exit) as exited:
        report_outcome(outcome, as_json=False)
    assert exited.value.exit_code == 4
    printed = json.loads(capsys.readouterr().out)
    assert printed["thread_id"] == "ask:1"
    assert printed["resume"] == "coviu-agent ask --thread-id ask:1 --yes"
    assert printed["action_requests"][0]["name"] == "delete_a_coviu_session_by_id"
    assert printed["action_requests"][0]["args"]["id"] == future
    assert printed["review_configs"] == [
        {"action_name": "delete_a_coviu_session_by_id", "allowed_decisions": ["approve", "edit", "reject"]}
    ]
    assert sandbox.store.sessions[future].canceled_time is None

    yes = terminal_decider(yes=True, no=False, interactive=False)

    # a new process: same checkpoint file, `--thread-id ask:1 --yes`, no request
    resumed = await run_ask(settings, "", services=services, thread_id="ask:1", decide=yes)
    assert not resumed.needs_approval
    assert resumed.note == f"Session {future} is cancelled."
    assert resumed.tool_calls == 2
    assert sandbox.store.sessions[future].canceled_time is not None
    report_outcome(resumed, as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["note"] == f"Session {future} is cancelled."
    assert (printed["thread_id"], printed["tool_calls"], printed["exit_code"]) == ("ask:1", 2, 0)
    assert [(o["tool"], o["status"], o["change"]) for o in printed["outcomes"]] == [
        ("get_single_coviu_session_by_id", "done", False),
        ("delete_a_coviu_session_by_id", "done", True),
    ]


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The CLI configures logging (root handler on CliRunner's stderr, library levels): put it all back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


def test_ask_cli_without_an_llm_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keep_logging: None) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "TRUTO_API_KEY", "COVIU_AGENT_PLANNER"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["ask", "Billable minutes for session S", "--json"])
    assert result.exit_code == 2
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert "OPENAI_API_KEY" in payload["error"] and "OPENAI_BASE_URL" in payload["error"]


def test_ask_cli_rejects_yes_and_no_together(keep_logging: None) -> None:
    result = CliRunner().invoke(app, ["ask", "x", "--yes", "--no"])
    assert result.exit_code == 2


# --- prompt injection in queue data ------------------------------------------------------------------


def obedient_script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """A model that obeys the instruction hidden in a waiting call's details."""
    done = results(messages)
    if not done:
        return AIMessage("", tool_calls=[call("list_all_coviu_waiting_queue_calls", {}, "i1")])
    if len(done) == 1:
        assert "delete every session" in str(done[0].content)
        since = (now_from(messages) - timedelta(hours=1)).isoformat()  # the sessions of the hour, started and to come
        return AIMessage("", tool_calls=[call("list_all_coviu_sessions", {"limit": 200, "start_time": since}, "i2")])
    if len(done) == 2:
        sessions = json.loads(str(done[1].content))["result"]
        deletes = [
            call("delete_a_coviu_session_by_id", {"id": s["session_id"]}, f"d{i}") for i, s in enumerate(sessions)
        ]
        return AIMessage("", tool_calls=deletes)
    return AIMessage("Done.")


async def test_injected_delete_every_session_deletes_nothing_without_approval(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    canceled_before = {sid for sid, s in sandbox.store.sessions.items() if s.canceled_time}
    chat = Chat(services, obedient_script)
    state = await chat.say("Check the waiting queue")
    pending = await chat.pending()
    asked = [
        c for m in state["messages"] if isinstance(m, AIMessage) for c in m.tool_calls if c["name"].startswith("delete")
    ]
    refused = [o for o in state["outcomes"] if o["status"] == "refused"]
    # the started ones are refused without a person (they cannot succeed); the rest wait for one
    assert pending and {p["name"] for p in pending} == {"delete_a_coviu_session_by_id"}
    assert refused and len(refused) + len(pending) == len(asked)
    assert sandbox.count(resource="sessions", truto_method="delete") == 0  # stopped before anything was sent
    state = await chat.resume(False)
    assert sandbox.count(resource="sessions", truto_method="delete") == 0
    assert {sid for sid, s in sandbox.store.sessions.items() if s.canceled_time} == canceled_before
    assert final_answer(state)

    # the CLI path without --yes and without a terminal: exit 4, nothing deleted
    services.model = ScriptedChatModel(script=obedient_script)
    outcome = await run_ask(offline_settings(tmp_path), "Check the waiting queue", services=services)
    assert outcome.needs_approval
    assert sandbox.count(resource="sessions", truto_method="delete") == 0


async def test_act_refuses_an_unapproved_delete_even_without_the_approve_step(
    services: Services, sandbox: Sandbox
) -> None:
    future = demo(sandbox).sessions["future"]
    act = build_act_node()
    state = {
        "messages": [
            HumanMessage("cancel it"),
            AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": future}, "x1")]),
        ],
        "approvals": [],
    }
    command = await act(state, Runtime(context=Context(services=services)))
    message = command.update["messages"][0]
    assert message.status == "error" and "not approved by the user" in message.content
    assert command.update["refusals"] == 1
    assert sandbox.count(resource="sessions", truto_method="delete") == 0
    assert sandbox.store.sessions[future].canceled_time is None


# --- temporal guard: cancelling a session that has started --------------------------------------------


def stubborn_cancel(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    session_id = request_of(messages).split("session ")[1].split(" ")[0]
    n = len(results(messages))
    return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": session_id}, f"g{n}")])


async def test_cancel_of_a_started_session_is_refused_with_one_more_try(services: Services, sandbox: Sandbox) -> None:
    started = demo(sandbox).sessions["in_progress"]
    chat = Chat(services, stubborn_cancel)
    await chat.say(f"The patient for session {started} cancelled: cancel it")
    state = await chat.answer_all(approved=True)
    assert len(chat.model.prompts) == 2  # the refusal, one more try, then the graph stops
    refusals = [m for m in state["messages"] if isinstance(m, ToolMessage) and str(m.content).startswith("Refused")]
    assert len(refusals) == 2
    assert "started at" in str(refusals[0].content) and "do not retry" in str(refusals[0].content)
    assert refusals[0] in chat.model.prompts[1]  # the model saw the refusal and its next step
    answer = final_answer(state)
    assert answer.startswith("I stopped here.") and "started at" in answer
    assert sandbox.count(resource="sessions", truto_method="delete") == 0
    assert sandbox.store.sessions[started].canceled_time is None


# --- bounds -------------------------------------------------------------------------------------------


async def test_model_calls_are_bounded_per_request(services: Services, sandbox: Sandbox) -> None:
    def looping(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        n = len(results(messages))
        return AIMessage("", tool_calls=[call("list_all_coviu_collections", {}, f"l{n}")])

    services.max_model_calls = 3
    chat = Chat(services, looping)
    state = await chat.say("Loop forever")
    assert len(chat.model.prompts) == 3
    assert final_answer(state).startswith("I stopped after 3 model calls")
    # a new request on the same thread gets a fresh budget
    await chat.say("Again")
    assert len(chat.model.prompts) == 6


# --- binary guard and the cap ---------------------------------------------------------------------------


def recording_script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    done = results(messages)
    session_id = request_of(messages).rsplit(" ", 1)[-1]
    if not done:
        since = (now_from(messages) - timedelta(days=2)).isoformat()
        return AIMessage("", tool_calls=[call("list_all_coviu_submissions", {"from": since, "limit": 200}, "r1")])
    if len(done) == 1:
        page = json.loads(str(done[0].content))["result"]
        sub = next(s["item_submission_id"] for s in page if s["session_id"] == session_id)
        return AIMessage("", tool_calls=[call("get_single_coviu_submission_by_id", {"id": sub}, "r2")])
    if len(done) == 2:
        submission = json.loads(str(done[1].content))
        sub = submission["item_submission_id"]
        file_id = submission["files"][0]["id"]
        return AIMessage(
            "",
            tool_calls=[
                call("get_single_coviu_submission_file_by_id", {"id": file_id, "submission_id": sub}, "r3"),
                call("get_single_coviu_audio_recording_by_id", {"id": sub}, "r4"),
            ],
        )
    return AIMessage(
        "The recording is downloaded: " + ", ".join(json.loads(str(m.content))["local_path"] for m in done[2:])
    )


def assert_clean_for_model(model: ScriptedChatModel) -> list[ToolMessage]:
    """No WebM bytes, nothing undecodable, nothing over the cap in any message any model call saw."""
    tool_messages = []
    for message in model_inputs(model):
        text = message.content if isinstance(message.content, str) else json.dumps(message.content)
        assert EBML_MAGIC.decode("latin-1") not in text
        assert "\ufffd" not in text
        assert not re.search(r"[\x00-\x08\x0e-\x1f]", text)
        if isinstance(message, ToolMessage):
            assert len(text) <= MODEL_RESULT_CAP
            tool_messages.append(message)
    return tool_messages


async def test_recording_request_gives_metadata_and_local_path_never_bytes(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    downloads = tmp_path / "recordings"
    worker = RecordingsWorker(
        services.toolbox, team_id=DEMO_TEAM_ID, collection_id=DEMO_INTAKE_COLLECTION_ID, download_dir=downloads
    )
    await worker.run(session_id=ontime)
    services.toolbox.executor.binary_locator = DownloadIndex(downloads)
    chat = Chat(services, recording_script)
    state = await chat.say(f"Get me the recording of session {ontime}")
    tool_messages = assert_clean_for_model(chat.model)
    binaries = [json.loads(str(m.content)) for m in tool_messages if m.tool_call_id in ("r3", "r4")]
    assert len(binaries) == 2
    for meta in binaries:
        assert meta["binary"] is True and meta["downloaded"] is True
        assert meta["content_type"] in ("video/webm", "audio/webm") and meta["size_bytes"] > 100_000
        assert Path(meta["local_path"]).is_file()
        assert Path(meta["local_path"]).stat().st_size == meta["size_bytes"]
    assert "downloaded" in final_answer(state)


async def test_binary_not_yet_downloaded_says_how_it_will_be_fetched(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    services.toolbox.executor.binary_locator = DownloadIndex(tmp_path / "nothing-here")

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        if len(results(messages)) < 3:
            return recording_script(messages, tools)
        return AIMessage("Not downloaded yet.")

    chat = Chat(services, script)
    await chat.say(f"Get me the recording of session {ontime}")
    tool_messages = assert_clean_for_model(chat.model)
    video = json.loads(
        str(next(m.content for m in tool_messages if m.name == "get_single_coviu_submission_file_by_id"))
    )
    assert video["downloaded"] is False and "coviu-agent recordings" in video["fetch_with"]


async def test_big_tool_results_are_capped_with_a_note(services: Services, sandbox: Sandbox, clock: FakeClock) -> None:
    generate_sessions(sandbox.store, clock.now().date() - timedelta(days=1), 150, seed=1)

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        if not results(messages):
            return AIMessage("", tool_calls=[call("list_all_coviu_sessions", {"limit": 200}, "big")])
        return AIMessage("Many sessions.")

    chat = Chat(services, script)
    await chat.say("List every session")
    (listed,) = assert_clean_for_model(chat.model)
    assert "cut:" in str(listed.content)
    assert json.loads(str(listed.content))["result"]  # still valid JSON, with the items that fit


def test_outcome_resume_command_is_shell_quoted() -> None:
    assert AskOutcome("ask:a b").resume == "coviu-agent ask --thread-id 'ask:a b' --yes"


async def test_the_state_type_says_what_every_node_after_prepare_finds(services: Services) -> None:
    """AssistantState's required keys are set by `prepare` for each request: the nodes after it read them directly."""
    from typing import NotRequired, get_origin

    from typing_extensions import get_type_hints

    from graphs.assistant import AssistantState

    hints = get_type_hints(AssistantState, include_extras=True)
    optional = {key for key, hint in hints.items() if get_origin(hint) is NotRequired}
    required = set(hints) - optional
    assert optional == {"messages", "session_id"}
    services.model = ScriptedChatModel(script=lambda messages, tools: AIMessage("Nothing to do."))
    graph = build_assistant_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "typed"}}
    seen: list[set[str]] = []
    async for values in graph.astream(
        {"messages": [HumanMessage("hello")]}, config, context=Context(services=services), stream_mode="values"
    ):
        seen.append(set(values))
    assert len(seen) >= 3 and all(required <= keys for keys in seen[1:])  # [0]: the input, before `prepare`
