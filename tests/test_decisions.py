"""Issue 23: approval answers are validated against LangChain's HITL decision types (approve / edit with
edited_action {name, args} / reject with an optional message). Anything else is an error that names what is wrong,
never a reject: nothing is decided, and the thread stays answerable (a later correct answer works). The same at the
command line (`ask --decisions`, exit 2) and on the LangGraph server path (the graph's resume)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.cli.assistant import terminal_decider
from agent.errors import BadInput
from agent.runs import run_ask
from graphs.context import Services
from sandbox import Sandbox
from tests.fakes import ScriptedChatModel
from tests.test_assistant import Chat, cancel_script, demo, offline_settings

MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"type": "edit"}, "decisions[0].edited_action"),
    ({"type": "edit", "edited_action": {"name": "delete_a_coviu_session_by_id"}}, "decisions[0].edited_action.args"),
    ({"type": "edit", "edited_action": {"args": {}}}, "decisions[0].edited_action.name"),
    ({"type": "approved"}, "decisions[0].type"),
    ({"type": "respond", "message": "done"}, "decisions[0].type"),
    ({"decision": "approve"}, "decisions[0].type"),
    ({"type": "reject", "message": 42}, "decisions[0].message"),
    # a key its type does not take is what the user meant, never dropped: an approve carrying an edit would
    # otherwise send the call as listed, and a reject carrying one would drop the edit
    (
        {"type": "approve", "edited_action": {"name": "delete_a_coviu_session_by_id", "args": {"id": "other"}}},
        "decisions[0].edited_action",
    ),
    ({"type": "approve", "args": {"id": "other"}}, "decisions[0].args"),
    ({"type": "approve", "message": "only if the patient agrees"}, "decisions[0].message"),
    ({"type": "reject", "edited_action": {"name": "x", "args": {}}}, "decisions[0].edited_action"),
    ({"type": "edit", "edited_action": {"name": "x", "args": {}, "arguments": {"id": "y"}}}, "edited_action.arguments"),
]
IDS = ["edit-without-action", "edit-without-args", "edit-without-name", "unknown-type", "respond", "no-type", "msg"]
IDS += ["approve-with-edit", "approve-with-args", "approve-with-message", "reject-with-edit", "edit-extra-key"]


@pytest.mark.parametrize(("decision", "named"), MALFORMED, ids=IDS)
def test_a_malformed_decisions_file_is_exit_2_naming_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decision: dict[str, Any], named: str
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")  # so only the file can be what is wrong
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps({"decisions": [decision]}), encoding="utf-8")
    result = CliRunner().invoke(app, ["ask", "--thread-id", "ask:1", "--decisions", str(path)])
    assert result.exit_code == 2, result.output
    assert "--decisions" in result.output and named in result.output


@pytest.mark.parametrize(("decision", "named"), MALFORMED[:4], ids=IDS[:4])
async def test_the_graph_takes_a_malformed_resume_as_an_error_and_stays_answerable(
    services: Services, sandbox: Sandbox, decision: dict[str, Any], named: str
):
    """The server path: LangGraph resumes the graph with whatever the client sent."""
    future = demo(sandbox).sessions["future"]
    chat = Chat(services, cancel_script)
    await chat.say(f"The patient for session {future} cancelled: cancel it")
    await chat.decide([decision])
    snapshot = await chat.graph.aget_state(chat.config)
    (waiting,) = [i.value for i in snapshot.interrupts]
    assert named in waiting["error"]  # the error says what was wrong ...
    assert [a["name"] for a in waiting["action_requests"]] == ["delete_a_coviu_session_by_id"]  # ... asked again
    assert sandbox.count(resource="sessions", truto_method="delete") == 0  # nothing decided, nothing sent
    assert sandbox.store.sessions[future].canceled_time is None

    state = await chat.decide([{"type": "approve"}])  # a later correct answer works
    assert sandbox.store.sessions[future].canceled_time is not None
    assert sandbox.count(resource="sessions", truto_method="delete", status=200) == 1
    assert "is cancelled" in str(state["messages"][-1].content)


async def test_run_ask_says_a_refused_answer_is_bad_input_and_a_later_answer_works(
    services: Services, sandbox: Sandbox, tmp_path: Path
):
    future = demo(sandbox).sessions["future"]
    services.model = ScriptedChatModel(script=cancel_script)
    settings = offline_settings(tmp_path)
    request = f"The patient for session {future} cancelled: cancel it"
    outcome = await run_ask(settings, request, services=services, thread_id="ask:1")
    assert outcome.needs_approval

    async def malformed(request: dict[str, Any], listed: bool) -> list[dict[str, Any]]:
        return [{"type": "edit"}]  # past the CLI's own check (e.g. a library caller): the graph refuses it too

    with pytest.raises(BadInput, match=r"edited_action.*still waits"):
        await run_ask(settings, "", services=services, thread_id="ask:1", decide=malformed)
    assert sandbox.store.sessions[future].canceled_time is None

    yes = terminal_decider(yes=True, no=False, interactive=False)
    resumed = await run_ask(settings, "", services=services, thread_id="ask:1", decide=yes)
    assert not resumed.needs_approval and resumed.exit_code == 0
    assert [(o["tool"], o["status"]) for o in resumed.outcomes if o["change"]] == [
        ("delete_a_coviu_session_by_id", "done")
    ]
    assert sandbox.store.sessions[future].canceled_time is not None
