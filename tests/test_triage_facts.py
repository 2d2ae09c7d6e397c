"""Triage with the LLM planner held to the facts: what the user gave wins over the model's values, a dry
run prints exactly the calls the run sends, and a triage ends with its session and both links or fails (exit 3)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent.errors import EXIT_OK, EXIT_UPSTREAM
from agent.runs import TriageArgs, TriageResult, run_triage
from agent.settings import Settings
from graphs.context import Services
from graphs.triage import NEW_SESSION_ID, PARTICIPANT_TOOL, QUEUE_TOOL, SESSION_TOOL
from sandbox import DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID, Sandbox
from tests.fakes import ScriptedChatModel

FAKE_URL = "https://coviu.example/made-up-by-the-model"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def results(messages: list[BaseMessage]) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


def inventing_model(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """A model that makes up its own names, ids, times and extra participants at every step."""
    done = results(messages)
    if not done:
        return AIMessage("", tool_calls=[call(QUEUE_TOOL, {"team_id": "team-other", "waiting_queue_id": "q-9"}, "c1")])
    if len(done) == 1:
        args = {
            "session_name": "Triage – Noah Brown",
            "start_time": "2030-01-01T09:00:00Z",
            "end_time": "2030-01-01T10:00:00Z",
            "feature_flags": [],
            "participants": [{"display_name": "Noah Brown", "role": "guest"}],
        }
        return AIMessage("", tool_calls=[call(SESSION_TOOL, args, "c2")])
    if len(done) == 2:
        return AIMessage(
            "",
            tool_calls=[
                call(PARTICIPANT_TOOL, {"display_name": "Noah Brown", "role": "guest", "session_id": "s-nope"}, "c3"),
                call(PARTICIPANT_TOOL, {"display_name": "Dr. Smith", "role": "host", "phone": "+61400000000"}, "c4"),
            ],
        )
    return AIMessage(f"Done. Patient link: {FAKE_URL}")


async def run(
    settings: Settings, services: Services, script: Callable[..., AIMessage], **args: Any
) -> tuple[TriageResult, ScriptedChatModel]:
    model = ScriptedChatModel(script=script)
    services.model = model
    services.planner = "llm"
    request = TriageArgs(**{"request": "A priority patient needs a duty nurse now", **args})
    result = await run_triage(settings, request, services=services, checkpointer=InMemorySaver())
    return result, model


def sent_writes(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every write the run sends, as (tool, arguments) after the graph filled and held them."""
    executor = services.toolbox.executor
    sent: list[tuple[str, dict[str, Any]]] = []
    prepare = executor.prepare

    def recording(name: str, args: dict[str, Any], **kwargs: Any) -> Any:
        if not executor.spec(name).is_read_only:
            sent.append((name, dict(args)))
        return prepare(name, args, **kwargs)

    monkeypatch.setattr(executor, "prepare", recording)
    return sent


@pytest.mark.parametrize("given", ["flags", "request label"])
async def test_given_names_ids_and_duration_win_over_the_models(
    settings: Settings, services: Services, sandbox: Sandbox, caplog: pytest.LogCaptureFixture, given: str
):
    args: dict[str, Any] = {"host_name": "Dr Lee", "duration_minutes": 20}
    if given == "flags":
        args["patient_name"] = "Ava Jenkins"
    else:
        args["request"] = "A priority patient needs a duty nurse now. Patient: Ava Jenkins"
    with caplog.at_level(logging.INFO):
        result, _ = await run(settings, services, inventing_model, **args)
    assert result.exit_code == EXIT_OK, result.failure
    state = result.state
    assert state["session"]["session_name"] == "Triage – Ava Jenkins"
    names = {p["role"]: p["display_name"] for p in state["participants"]}
    assert names == {"guest": "Ava Jenkins", "host": "Dr Lee"}
    session = await services.toolbox.executor.run(
        "get_single_coviu_session_by_id", {"id": state["session"]["session_id"]}
    )
    assert sorted(p["display_name"] for p in session["participants"]) == ["Ava Jenkins", "Dr Lee"]  # no inline extras
    assert "session;enforce-participant-uniqueness" in session["feature_flags"]
    from tools.timeparse import parse_time

    start, end = parse_time(session["start_time"]), parse_time(session["end_time"])
    assert start is not None and end is not None and (end - start).total_seconds() == 20 * 60
    assert start.year != 2030
    queue_reads = [r for r in sandbox.requests if r.resource == "waiting_queue_calls"]
    assert {(r.query["team_id"], r.query["waiting_queue_id"]) for r in queue_reads} == {
        (DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID)
    }
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "display_name" in logged and "session_name" in logged and "team_id" in logged
    assert "Ava Jenkins" not in logged and "Noah" not in logged  # field names and ids, never patient names
    assert FAKE_URL not in result.state["reply"]


def session_then_stop(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """Reads the queue, asks for the session with its own name and times, then (never reached in a dry run) links."""
    done = results(messages)
    if not done:
        return AIMessage("", tool_calls=[call(QUEUE_TOOL, {}, "q1")])
    if len(done) == 1:
        args = {"session_name": "Noah's room", "start_time": "2030-01-01T09:00:00Z", "end_time": "2030-01-01T09:45Z"}
        return AIMessage("", tool_calls=[call(SESSION_TOOL, args, "s1")])
    if len(done) == 2:
        return AIMessage(
            "",
            tool_calls=[
                call(PARTICIPANT_TOOL, {"display_name": "Dr. Smith", "role": "host"}, "p2"),
                call(PARTICIPANT_TOOL, {"display_name": "Noah", "role": "guest", "state": "waiting"}, "p1"),
            ],
        )
    return AIMessage("All set.")


async def test_dry_run_prints_exactly_the_calls_the_run_sends(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
):
    args = {"patient_name": "Ava Jenkins", "host_name": "Dr Lee"}
    dry, _ = await run(settings, services, session_then_stop, dry_run=True, **args)
    assert dry.exit_code == EXIT_OK, dry.failure
    planned = [(c["tool"], c["args"]) for c in dry.state["planned_calls"]]
    assert not any("error" in c for c in dry.state["planned_calls"])
    sent = sent_writes(services, monkeypatch)
    real, _ = await run(settings, services, session_then_stop, **args)
    assert real.exit_code == EXIT_OK, real.failure
    session_id = real.state["session"]["session_id"]
    as_sent = [
        (tool, {k: (NEW_SESSION_ID if k == "session_id" and v == session_id else v) for k, v in a.items()})
        for tool, a in sent
    ]

    def key(c: tuple[str, dict[str, Any]]) -> str:
        return json.dumps(c, sort_keys=True)

    assert sorted(planned, key=key) == sorted(as_sent, key=key)
    # and the dry run's reply prints those calls, one line each
    for tool, planned_args in planned:
        assert f"- {tool} {json.dumps(planned_args, ensure_ascii=False, sort_keys=True)}" in dry.state["reply"]


def talker(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """Never calls a tool; claims it did, with a link of its own."""
    return AIMessage(f"I created the session and both links. Patient link: {FAKE_URL}")


def truncating(times: int) -> Callable[[list[BaseMessage], list[str]], AIMessage]:
    """Reads the queue, then sends its create-session call with truncated JSON `times` times, then correctly."""

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        done = results(messages)
        invalid = [m for m in done if "not valid JSON" in str(m.content)]
        if not done:
            return AIMessage("", tool_calls=[call(QUEUE_TOOL, {}, "q1")])
        if len(invalid) < times and not any(m.name == SESSION_TOOL and m.status == "success" for m in done):
            return AIMessage(
                "",
                invalid_tool_calls=[
                    {
                        "name": SESSION_TOOL,
                        "args": '{"session_name": "Triage – Ava',
                        "id": f"bad{len(invalid)}",
                        "error": "Unterminated string",
                        "type": "invalid_tool_call",
                    }
                ],
            )
        return inventing_model([m for m in messages if "not valid JSON" not in str(getattr(m, "content", ""))], tools)

    return script


def skipper(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """Skips the queue check and the clinician's link, then says it is done."""
    done = results(messages)
    system = "\n".join(str(m.content) for m in messages if isinstance(m, SystemMessage))  # the job, then its facts
    if not done:
        start = system.split("start_time `")[1].split("`")[0]
        end = system.split("end_time `")[1].split("`")[0]
        args = {"session_name": "x", "start_time": start, "end_time": end}
        return AIMessage("", tool_calls=[call(SESSION_TOOL, args, "s1")])
    if len(done) == 1:
        return AIMessage(
            "", tool_calls=[call(PARTICIPANT_TOOL, {"display_name": "Ava Jenkins", "role": "guest"}, "p1")]
        )
    return AIMessage("Done.")


def parallel(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """Everything at once: the queue, two sessions, both links (before any session exists), then the links again."""
    done = results(messages)
    links = [
        call(PARTICIPANT_TOOL, {"display_name": "A", "role": "guest"}, f"g{len(done)}"),
        call(PARTICIPANT_TOOL, {"display_name": "B", "role": "host"}, f"h{len(done)}"),
    ]
    if not done:
        session = {"session_name": "x", "start_time": "2030-01-01T09:00:00Z", "end_time": "2030-01-01T09:30:00Z"}
        return AIMessage(
            "",
            tool_calls=[
                call(QUEUE_TOOL, {}, "q"),
                call(SESSION_TOOL, session, "s1"),
                call(SESSION_TOOL, session, "s2"),
                *links,
            ],
        )
    if len(done) == 5:
        return AIMessage("", tool_calls=links)
    return AIMessage("Done.")


@pytest.mark.parametrize(
    "script",
    [talker, truncating(1), truncating(5), skipper, parallel],
    ids=["text-only", "truncated-once", "truncated-always", "skipped-steps", "parallel"],
)
async def test_triage_ends_with_its_session_and_both_links_whatever_the_model_does(
    settings: Settings, services: Services, sandbox: Sandbox, script: Callable[..., AIMessage]
):
    result, model = await run(settings, services, script, patient_name="Ava Jenkins", host_name="Dr Lee")
    assert result.exit_code == EXIT_OK, result.failure
    state = result.state
    assert sandbox.count(resource="sessions", truto_method="create", status=200) == 1
    assert sandbox.count(resource="participants", truto_method="create", status=200) == 2
    session = await services.toolbox.executor.run(
        "get_single_coviu_session_by_id", {"id": state["session"]["session_id"]}
    )
    urls = {p["entry_url"] for p in session["participants"]}
    assert {p["entry_url"] for p in state["participants"]} == urls
    assert all(url in state["reply"] for url in urls)
    assert FAKE_URL not in state["reply"]
    assert state["queue"] is not None
    if script is talker:
        assert result.as_dict()["planner"] == "rules"
        assert "stopped without calling a tool" in result.as_dict()["planner_note"]
    if "truncated" in str(getattr(script, "__qualname__", "")):
        # the model saw its invalid call answered with the error
        answered = [
            m for p in model.prompts for m in p if isinstance(m, ToolMessage) and "not valid JSON" in str(m.content)
        ]
        assert answered


def queue_forever(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """Creates the session, then only ever reads the queue again."""
    done = results(messages)
    if len(done) == 1:
        return inventing_model(messages, tools)
    return AIMessage("", tool_calls=[call(QUEUE_TOOL, {}, f"q{len(done)}")])


async def test_a_triage_that_cannot_finish_exits_3_naming_the_step_and_what_exists(
    settings: Settings, services: Services
):
    result, _ = await run(settings, services, queue_forever, patient_name="Ava Jenkins")
    assert result.exit_code == EXIT_UPSTREAM
    session_id = result.state["session"]["session_id"]
    assert "the patient's link" in str(result.failure) and "the clinician's link" in str(result.failure)
    assert f"session {session_id}" in str(result.failure)


def extracting(answer: str) -> Callable[..., AIMessage]:
    """A model that answers the name question with `answer`, and plans like `inventing_model`."""

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        if "patient's name only" in str(messages[0].content):
            return AIMessage(answer)
        return inventing_model(messages, tools)

    return script


@pytest.mark.parametrize(
    ("request_text", "answer", "expected"),
    [
        ("Ava Jenkins is waiting and needs a duty nurse now", "Ava Jenkins", "Ava Jenkins"),
        ("Ava Jenkins is waiting and needs a duty nurse now", "Patient: Ava Jenkins.", "Ava Jenkins"),
        ("A priority patient needs a duty nurse now", "Noah Brown", None),  # not in the request: made up
        ("Ava Jenkins needs a nurse", "The patient's name is Ava Jenkins, as written.", None),  # a sentence
    ],
    ids=["as-written", "labelled", "invented", "a-sentence"],
)
async def test_the_patient_name_the_model_reads_is_one_written_in_the_request(
    settings: Settings, services: Services, sandbox: Sandbox, request_text: str, answer: str, expected: str | None
):
    """The model only reads the name from the request: a name that is not in it (made up) or a sentence is never a
    patient's link label; the run stops asking for the name (exit 2), nothing sent."""
    from tools.errors import RunInputError

    if expected is None:
        with pytest.raises(RunInputError, match="patient's name"):
            await run(settings, services, extracting(answer), request=request_text)
        assert sandbox.count(resource="sessions", truto_method="create") == 0
        return
    result, _ = await run(settings, services, extracting(answer), request=request_text)
    assert result.exit_code == EXIT_OK, result.failure
    assert {p["role"]: p["display_name"] for p in result.state["participants"]}["guest"] == expected


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"patient_name": "Ava\u202eJenkins"}, "patient_name"),
        ({"patient_name": "Ava\nPatient: Bob"}, "patient_name"),
        ({"patient_name": "A" * 300}, "patient_name"),
        ({"patient_name": "Ava Jenkins", "host_name": "Dr\tLee"}, "host_name"),
        ({"patient_name": "Ava Jenkins", "duration_minutes": 100000}, "duration_minutes"),
        ({"patient_name": "Ava Jenkins", "wait_threshold_minutes": -5}, "wait_threshold_minutes"),
    ],
    ids=["bidi", "newline", "long", "host-tab", "duration", "threshold"],
)
async def test_a_server_runs_input_is_checked_like_the_command_lines(
    settings: Settings, services: Services, sandbox: Sandbox, given: dict[str, Any], named: str
):
    """The CLI refuses these (exit 2); a run's input (the LangGraph server, a schedule) reached Coviu with them."""
    from tools.errors import RunInputError

    services.planner = "rules"
    with pytest.raises(RunInputError, match=named):
        await run_triage(
            settings, TriageArgs(request="Queue check", **given), services=services, checkpointer=InMemorySaver()
        )
    assert sandbox.count(resource="sessions", truto_method="create") == 0


@pytest.mark.parametrize("missing", ["entry_url", "participant_id"])
async def test_a_link_the_server_did_not_return_is_never_shown_and_never_exit_0(
    settings: Settings, services: Services, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, missing: str
):
    """A participant create answered 200 without the link (or its id): the reply showed `Patient link (Ava): None`
    and exit 0. The link does not exist as far as we know: the step is not done (exit 3, naming it)."""
    from sandbox.coviu import CoviuApi

    shown = CoviuApi.participant_json

    def without(self: CoviuApi, participant: Any) -> dict[str, Any]:
        payload = shown(self, participant)
        if str(participant.role).lower() == "guest":
            payload.pop(missing, None)
        return payload

    monkeypatch.setattr(CoviuApi, "participant_json", without)
    services.planner = "rules"
    result = await run_triage(
        settings,
        TriageArgs(request="Queue check", patient_name="Ava Jenkins"),
        services=services,
        checkpointer=InMemorySaver(),
    )
    assert result.exit_code == EXIT_UPSTREAM, result.state.get("reply")
    assert "None" not in result.state["reply"]
    assert "the patient's link" in str(result.failure)


async def test_a_session_create_answered_without_its_id_stops_at_once_saying_so(
    settings: Settings, services: Services, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
):
    """A 200 without `session_id`: the run went on planning links for session None until 'too many planning
    steps', and said 'created: session None'. It stops at the session step, naming what Coviu left out."""
    from sandbox.coviu import CoviuApi

    shown = CoviuApi.session_json

    def without(self: CoviuApi, session: Any, include_deleted: bool = False) -> dict[str, Any]:
        payload = shown(self, session, include_deleted)
        payload.pop("session_id", None)
        return payload

    monkeypatch.setattr(CoviuApi, "session_json", without)
    services.planner = "rules"
    result = await run_triage(
        settings,
        TriageArgs(request="Queue check", patient_name="Ava Jenkins"),
        services=services,
        checkpointer=InMemorySaver(),
    )
    assert result.exit_code == EXIT_UPSTREAM
    assert "the session could not be created" in str(result.failure) and "session_id" in str(result.failure)
    assert "None" not in str(result.failure) and "None" not in result.state["reply"]
    assert sandbox.count(resource="sessions", truto_method="create") == 1  # never sent twice
