"""`ask` reports what the tools did, not what the model said: one outcome per action, the model's text as a note,
an exit code that follows the outcomes; a change that cannot succeed is never shown to a person; plain messages
for a thread that waits for nothing and for `--dry-run` at a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from langchain_core.messages import AIMessage, BaseMessage

from agent.cli.assistant import report_outcome, terminal_decider
from agent.errors import BadInput
from agent.runs import AskOutcome, run_ask
from graphs.assistant import action_outcome
from graphs.context import Services
from graphs.nodes import CallOutcome
from sandbox import Sandbox
from tests.fakes import ScriptedChatModel
from tests.test_assistant import call, demo, offline_settings, request_of, results
from tools.errors import TrutoError


def handled(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """A model that cancels the session it is told, then says it was handled, whatever the tool said."""
    session_id = request_of(messages).split("session ")[1].split(" ")[0]
    if not results(messages):
        return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": session_id}, "h1")])
    return AIMessage(f"Session {session_id} has been handled.")


async def test_a_cancel_coviu_refuses_is_refused_not_shown_and_exits_5(
    services: Services, sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = demo(sandbox).sessions["in_progress"]
    services.model = ScriptedChatModel(script=handled)
    shown: list[dict[str, object]] = []

    async def decide(request: dict[str, object], listed: bool) -> list[dict[str, object]]:
        shown.append(request)
        return [{"type": "approve"}]

    outcome = await run_ask(
        offline_settings(tmp_path), f"cancel session {started} now", services=services, decide=decide
    )
    assert shown == []  # it cannot succeed: nobody is asked to approve it
    assert not outcome.needs_approval
    assert [(o["tool"], o["status"]) for o in outcome.outcomes] == [("delete_a_coviu_session_by_id", "refused")]
    assert "started at" in outcome.outcomes[0]["reason"]
    assert outcome.note == f"Session {started} has been handled."
    assert outcome.exit_code == 5
    assert sandbox.count(resource="sessions", truto_method="delete") == 0

    with pytest.raises(typer.Exit) as exited:
        report_outcome(outcome, as_json=False)
    assert exited.value.exit_code == 5
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    refused = next(i for i, line in enumerate(lines) if line.strip().startswith("refused"))
    note = next(i for i, line in enumerate(lines) if line.startswith("Note from the model:"))
    assert refused < note and started in lines[refused] and "started at" in lines[refused]

    with pytest.raises(typer.Exit):
        report_outcome(outcome, as_json=True)
    payload = json.loads(capsys.readouterr().out)
    assert payload["exit_code"] == 5 and payload["outcomes"][0]["status"] == "refused"
    assert payload["note"] == f"Session {started} has been handled."


async def test_approved_cancel_is_done_with_its_id_and_a_rejected_one_is_rejected(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    future = demo(sandbox).sessions["future"]
    services.model = ScriptedChatModel(script=handled)
    settings = offline_settings(tmp_path)
    no = terminal_decider(yes=False, no=True, interactive=False)
    rejected = await run_ask(settings, f"cancel session {future} now", services=services, decide=no)
    assert [o["status"] for o in rejected.outcomes] == ["rejected"]
    assert rejected.note == f"Session {future} has been handled."  # the model's words, shown as its note only
    assert rejected.exit_code == 0  # the person decided; nothing failed
    assert sandbox.store.sessions[future].canceled_time is None

    async def approve(request: dict[str, object], listed: bool) -> list[dict[str, object]]:
        return [{"type": "approve"}]

    done = await run_ask(settings, f"cancel session {future} now", services=services, decide=approve)
    assert [(o["tool"], o["status"], o["change"]) for o in done.outcomes] == [
        ("delete_a_coviu_session_by_id", "done", True)
    ]
    assert done.exit_code == 0 and sandbox.store.sessions[future].canceled_time is not None


def linker(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    session_id = request_of(messages).split("session ")[1].split(" ")[0]
    if not results(messages):
        args = {"session_id": session_id, "display_name": "Ava", "role": "guest"}
        return AIMessage("", tool_calls=[call("create_a_coviu_participant", args, "p1")])
    return AIMessage("Here is the link: https://example.invalid/made-up")


async def test_a_created_link_is_reported_with_the_ids_and_url_the_server_returned(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    future = demo(sandbox).sessions["future"]
    services.model = ScriptedChatModel(script=linker)
    yes = terminal_decider(yes=False, no=False, interactive=False, decisions=[{"type": "approve"}])

    async def approve(request: dict[str, object], listed: bool) -> list[dict[str, object]] | None:
        return await yes(request, True)

    outcome = await run_ask(
        offline_settings(tmp_path), f"a link for Ava in session {future}", services=services, decide=approve
    )
    (entry,) = outcome.outcomes
    participant = next(
        p for p in sandbox.store.participants.values() if p.session_id == future and p.display_name == "Ava"
    )
    assert entry["status"] == "done"
    assert entry["ids"]["participant_id"] == participant.participant_id
    assert entry["entry_urls"] and participant.participant_id in entry["entry_urls"][0]
    assert outcome.exit_code == 0


def test_a_coviu_4xx_is_refused_with_its_reason_and_other_errors_are_failed() -> None:
    refused = action_outcome(
        CallOutcome("error", "delete_a_coviu_session_by_id", {"id": "S"}, error=TrutoError(422, "x", "session started"))
    )
    assert refused["status"] == "refused" and "session started" in refused["reason"]
    failed = action_outcome(CallOutcome("error", "nope", {}, text="boom", error=TrutoError(500, "x", "oops")))
    assert failed["status"] == "failed" and failed["reason"] == "boom"


def test_exit_code_follows_the_outcomes() -> None:
    def entry(tool: str, status: str, target: str | None = None, **extra: object) -> dict[str, object]:
        return {"tool": tool, "status": status, "change": True, "arguments": {"id": target} if target else {}, **extra}

    assert AskOutcome("t", outcomes=[entry("delete", "done", "A")]).exit_code == 0
    assert AskOutcome("t", outcomes=[entry("delete", "failed", "A")]).exit_code == 5
    assert AskOutcome("t", outcomes=[entry("delete", "not_attempted", "A")]).exit_code == 5
    # refused for A, then done for B: A is still not done
    assert AskOutcome("t", outcomes=[entry("delete", "refused", "A"), entry("delete", "done", "B")]).exit_code == 5
    # an invalid create corrected by the model
    assert AskOutcome("t", outcomes=[entry("create", "failed", sent=False), entry("create", "done")]).exit_code == 0
    assert AskOutcome("t", outcomes=[entry("x", "failed", unknown_tool=True), entry("create", "done")]).exit_code == 0
    assert AskOutcome("t", request={"action_requests": [{"name": "delete"}]}).exit_code == 4


async def test_yes_on_an_unknown_or_finished_thread_says_so(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    settings = offline_settings(tmp_path)
    yes = terminal_decider(yes=True, no=False, interactive=False)
    services.model = ScriptedChatModel(script=lambda m, t: AIMessage("Nothing to do."))
    with pytest.raises(BadInput, match="no such conversation") as unknown:
        await run_ask(settings, "", services=services, thread_id="ask:nope", decide=yes)
    assert "REQUEST" not in str(unknown.value)
    await run_ask(settings, "hello", services=services, thread_id="ask:done")
    with pytest.raises(BadInput, match="not waiting for approval") as finished:
        await run_ask(settings, "", services=services, thread_id="ask:done", decide=yes)
    assert "coviu-agent ask --thread-id ask:done" in str(finished.value)


async def test_dry_run_without_json_prints_text(
    services: Services, sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    future = demo(sandbox).sessions["future"]
    services.model = ScriptedChatModel(script=handled)
    outcome = await run_ask(offline_settings(tmp_path), f"cancel session {future} now", services=services)
    report_outcome(outcome, as_json=False, dry_run=True)
    printed = capsys.readouterr().out
    assert printed.startswith("Dry run: 1 change(s) planned, none sent")
    assert "delete_a_coviu_session_by_id" in printed and future in printed
    with pytest.raises(json.JSONDecodeError):
        json.loads(printed)
    report_outcome(outcome, as_json=True, dry_run=True)
    assert json.loads(capsys.readouterr().out)["dry_run"] is True


async def test_a_link_refused_for_one_session_is_not_made_good_by_a_link_done_in_another(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Participant tools name their session by `session_id`, not `id`: a refused link for a finished session and a
    done link for a future one are two actions, and the refused one leaves a patient without a room (exit 5)."""
    finished = demo(sandbox).sessions["finished_today"]
    future = demo(sandbox).sessions["future"]

    def two_links(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        if not results(messages):
            calls = [
                call("create_a_coviu_participant", {"session_id": s, "display_name": "Ava", "role": "guest"}, f"p{i}")
                for i, s in enumerate((finished, future))
            ]
            return AIMessage("", tool_calls=calls)
        return AIMessage("Both links are ready.")

    services.model = ScriptedChatModel(script=two_links)

    async def approve(request: dict[str, object], listed: bool) -> list[dict[str, object]]:
        return [{"type": "approve"} for _ in request["action_requests"]]  # type: ignore[attr-defined]

    outcome = await run_ask(offline_settings(tmp_path), "links for Ava", services=services, decide=approve)
    assert sorted(o["status"] for o in outcome.outcomes) == ["done", "refused"]
    assert outcome.exit_code == 5


async def test_a_cancel_under_a_made_up_tool_name_is_not_made_good_by_a_read(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The model asks for a cancel under a tool name that does not exist, then only reads the session and says it
    is cancelled: nothing changed, so the request is not done (exit 5), whatever the later read."""
    future = demo(sandbox).sessions["future"]

    def made_up(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        done = results(messages)
        if not done:
            return AIMessage("", tool_calls=[call("cancel_coviu_session", {"id": future}, "m1")])
        if len(done) == 1:
            return AIMessage("", tool_calls=[call("get_single_coviu_session_by_id", {"id": future}, "m2")])
        return AIMessage(f"Session {future} is cancelled.")

    services.model = ScriptedChatModel(script=made_up)
    outcome = await run_ask(offline_settings(tmp_path), f"cancel session {future}", services=services)
    assert [o["status"] for o in outcome.outcomes] == ["failed", "done"]
    assert sandbox.store.sessions[future].canceled_time is None
    assert outcome.exit_code == 5


def test_a_misnamed_read_corrected_by_the_read_is_done() -> None:
    def entry(tool: str, status: str, change: bool, **extra: object) -> dict[str, object]:
        return {"tool": tool, "status": status, "change": change, "arguments": {}, **extra}

    corrected = [entry("list_sessions", "failed", False, unknown_tool=True), entry("list_all", "done", False)]
    assert AskOutcome("t", outcomes=corrected).exit_code == 0
