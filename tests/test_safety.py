"""Approvals that cannot be bypassed, secrets that cannot leak, text that cannot crash or forge output,
patient files that only their owner can read."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import typer
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from rich.table import Table

from agent.checkpoint import open_checkpointer
from agent.cli import emit_json, fail
from agent.cli.assistant import report_outcome, terminal_decider
from agent.logging import configure_logging
from agent.redact import SafeConsole, run_guarded
from agent.runs import run_ask
from agent.settings import Settings
from graphs.audit import summary_facts
from graphs.audit_store import open_audit_store
from graphs.context import Services
from sandbox import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, Sandbox
from tests.fakes import ScriptedChatModel
from tests.test_assistant import Chat, call, demo, offline_settings, request_of, results
from tests.test_never_silently_wrong import (
    audit,
    ended_session,
    healthy_report,
    names_session,
    resource_of,
    rows_by_id,
    services_for,
)
from tests.test_never_silently_wrong import json_response as rewrite_json
from tools.clock import FakeClock
from tools.textsafety import (
    REDACTED,
    REDACTOR,
    Redactor,
    register_secrets,
    safe_line,
    safe_text,
)
from workers.recordings import MANIFEST_NAME, RecordingsWorker

SECRET = "truto-secret-TOKEN-7f3a9c"
KEY = "sk-fake-openai-KEY-5b2e8d"


@pytest.fixture(autouse=True)
def secrets() -> Iterator[None]:
    register_secrets([SECRET, KEY])
    yield
    REDACTOR.forget()


# --- approvals -------------------------------------------------------------------------------------


def two_cancels_same_id(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    """Cancel A (id k1); once approved and done, cancel B reusing the approved call's id k1."""
    first, second = request_of(messages).split()[-2:]
    done = results(messages)
    if not done:
        return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": first}, "k1")])
    if len(done) == 1:
        return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": second}, "k1")])
    return AIMessage("Done.")


async def test_a_reused_tool_call_id_does_not_carry_an_approval(services: Services, sandbox: Sandbox) -> None:
    a = demo(sandbox).sessions["future"]
    b = next(  # another session that can still be cancelled (one that started is refused without approval)
        sid
        for sid, s in sandbox.store.sessions.items()
        if sid != a and s.canceled_time is None and s.start_time > services.clock.now()
    )
    chat = Chat(services, two_cancels_same_id)
    await chat.say(f"cancel {a} {b}")
    assert [p["args"]["id"] for p in await chat.pending()] == [a]
    await chat.resume(True)
    assert sandbox.store.sessions[a].canceled_time is not None
    # the second cancel (same model id, other session) stops for its own approval
    assert [p["args"]["id"] for p in await chat.pending()] == [b]
    assert sandbox.count(resource="sessions", truto_method="delete") == 1


def cancel_a_then_b(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    first, second = request_of(messages).split()[-2:]
    done = results(messages)
    if not done:
        return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": first}, "x1")])
    if len(done) == 1:
        return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": second}, "x2")])
    return AIMessage("Both cancelled.")


async def test_yes_approves_only_what_exit_4_listed(
    services: Services, sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = demo(sandbox).sessions["future"]
    b = next(
        sid
        for sid, s in sandbox.store.sessions.items()
        if sid != a and s.canceled_time is None and s.start_time > services.clock.now()
    )
    services.model = ScriptedChatModel(script=cancel_a_then_b)
    settings = offline_settings(tmp_path)
    first = await run_ask(settings, f"cancel {a} {b}", services=services, thread_id="ask:y")
    assert [p["args"]["id"] for p in first.pending] == [a]
    yes = terminal_decider(yes=True, no=False, interactive=False)
    second = await run_ask(settings, "", services=services, thread_id="ask:y", decide=yes)
    assert sandbox.store.sessions[a].canceled_time is not None
    assert sandbox.store.sessions[b].canceled_time is None  # never shown: stops again
    assert [p["args"]["id"] for p in second.pending] == [b]
    with pytest.raises(typer.Exit) as exited:
        report_outcome(second, as_json=True)
    assert exited.value.exit_code == 4
    assert json.loads(capsys.readouterr().out)["action_requests"][0]["args"]["id"] == b


async def test_a_custom_method_write_needs_approval(services: Services, sandbox: Sandbox) -> None:
    custom = [s for s in services.toolbox.catalog if not s.is_read_only and s.method not in ("create", "update")]
    assert custom  # delete, and any custom method the account serves
    for spec in custom:
        assert spec.needs_approval
    # a custom method is judged by what it is not (list/get), never by its name
    from tools.catalog import ToolSpec

    cancel = ToolSpec(name="cancel_a_coviu_session", description="", resource="sessions", method="cancel")
    assert cancel.needs_approval and not cancel.is_read_only


async def test_interrupt_is_a_hitl_request_and_edit_runs_the_edited_call(services: Services, sandbox: Sandbox) -> None:
    future = demo(sandbox).sessions["future"]
    wrong = next(  # a session that could be cancelled, but not the one the person means
        sid
        for sid, s in sandbox.store.sessions.items()
        if sid != future and s.canceled_time is None and s.start_time > services.clock.now()
    )

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        if not results(messages):
            return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": wrong}, "e1")])
        return AIMessage("ok")

    chat = Chat(services, script)
    await chat.say("cancel the session")
    snapshot = await chat.graph.aget_state(chat.config)
    request = snapshot.interrupts[0].value
    assert request["review_configs"] == [
        {"action_name": "delete_a_coviu_session_by_id", "allowed_decisions": ["approve", "edit", "reject"]}
    ]
    action = request["action_requests"][0]
    assert action["name"] == "delete_a_coviu_session_by_id" and action["args"] == {"id": wrong}
    assert "delete_a_coviu_session_by_id" in action["description"]
    edited = {"type": "edit", "edited_action": {"name": "delete_a_coviu_session_by_id", "args": {"id": future}}}
    await chat.decide([edited])
    assert sandbox.store.sessions[future].canceled_time is not None
    assert sandbox.store.sessions[wrong].canceled_time is None
    deletes = [r for r in sandbox.requests if r.truto_method == "delete"]
    assert len(deletes) == 1 and future in json.dumps(deletes[0].query) + str(deletes[0].path)


async def test_reject_carries_the_reviewers_message(services: Services, sandbox: Sandbox) -> None:
    future = demo(sandbox).sessions["future"]

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        if not results(messages):
            return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": future}, "r1")])
        return AIMessage("not done")

    chat = Chat(services, script)
    await chat.say("cancel it")
    state = await chat.decide([{"type": "reject", "message": "the patient rebooked"}])
    answer = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert answer.status == "error" and "the patient rebooked" in str(answer.content)
    assert sandbox.count(resource="sessions", truto_method="delete") == 0


# --- secrets ---------------------------------------------------------------------------------------


async def test_checkpoint_writes_are_redacted_and_errors_are_text(tmp_path: Path) -> None:
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class S(TypedDict, total=False):
        note: str

    def leaky(state: S) -> S:
        return {"note": f"upstream said: invalid token {SECRET}"}

    def crash(state: S) -> S:
        raise RuntimeError(f"401 from upstream, echoing Authorization: Bearer {SECRET} and key {KEY}")

    builder = StateGraph(S)
    builder.add_node("leaky", leaky)
    builder.add_node("crash", crash)
    builder.add_edge(START, "leaky")
    builder.add_edge("leaky", "crash")
    builder.add_edge("crash", END)
    path = tmp_path / "state.sqlite"
    async with open_checkpointer(str(path)) as saver:
        assert isinstance(saver, AsyncSqliteSaver)
        graph = builder.compile(checkpointer=saver)
        with pytest.raises(RuntimeError):
            await graph.ainvoke({}, {"configurable": {"thread_id": "t"}}, durability="sync")
        state = await graph.aget_state({"configurable": {"thread_id": "t"}})
        assert state.values["note"] == "upstream said: invalid token [redacted]"
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert SECRET.encode() not in data and KEY.encode() not in data
    with sqlite3.connect(path) as db:
        errors = [row for row in db.execute("select type, value from writes where channel = '__error__'")]
    assert errors and all(kind != "pickle" for kind, _ in errors)
    assert b"RuntimeError: 401 from upstream" in errors[0][1]


def test_logs_json_and_errors_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    configure_logging("DEBUG", [SECRET])
    try:
        logging.getLogger("tools.client").debug("sent Bearer %s", SECRET)
        try:
            raise ValueError(f"echo {KEY}")
        except ValueError:
            logging.getLogger("x").exception("failed")
        emit_json({"error": f"invalid token {SECRET}", "nested": [{"k": KEY}]})
        with pytest.raises(typer.Exit):
            fail(3, f"upstream said {SECRET}", as_json=True)
    finally:
        logging.getLogger().handlers.clear()
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err and KEY not in captured.out + captured.err
    assert "[redacted]" in captured.err and "[redacted]" in captured.out


def test_a_crash_prints_one_redacted_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["coviu-agent", "ask"])

    def boom() -> None:
        raise RuntimeError(f"model endpoint said: bad key {KEY}")

    with pytest.raises(SystemExit) as exited:
        run_guarded(boom)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert KEY not in err and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: unexpected error (RuntimeError): model endpoint said: bad key [redacted]"
    ]


def test_plain_http_token_to_a_remote_host_is_bad_input() -> None:
    base: dict[str, Any] = {"_env_file": None, "TRUTO_API_KEY": SECRET, "TRUTO_INTEGRATED_ACCOUNT_ID": "acc"}
    with pytest.raises(ValueError, match="TRUTO_ALLOW_INSECURE"):
        Settings(**base, TRUTO_BASE_URL="http://truto.example.com")  # type: ignore[call-arg]
    assert Settings(**base, TRUTO_BASE_URL="http://127.0.0.1:8765")  # type: ignore[call-arg]
    assert Settings(**base, TRUTO_BASE_URL="http://truto.example.com", TRUTO_ALLOW_INSECURE="1")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="TRUTO_MCP_URL"):
        Settings(**base, TRUTO_MCP_URL="http://mcp.example.com/mcp/abcdefghijkl")  # type: ignore[call-arg]
    # without a Truto key only the embedded sandbox's MCP URL is accepted (agent.services), never sent on the wire
    assert Settings(_env_file=None, TRUTO_MCP_URL="http://sandbox.local/mcp/sandbox-mcp-demo")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        Settings(_env_file=None, OPENAI_API_KEY="sk-x", OPENAI_BASE_URL="http://llm.example.com/v1")  # type: ignore[call-arg]
    assert Settings(_env_file=None, OPENAI_API_KEY="sk-x", OPENAI_BASE_URL="http://127.0.0.1:11434/v1")  # type: ignore[call-arg]


# --- text from outside -----------------------------------------------------------------------------


def console() -> tuple[SafeConsole, io.StringIO]:
    buffer = io.StringIO()
    return SafeConsole(file=buffer, width=200, force_terminal=False), buffer


def test_markup_in_outside_text_is_printed_not_parsed() -> None:
    out, buffer = console()
    out.print("session [/x] Bob [bold]x[/bold]", highlight=False)
    table = Table(title="[/x] tools")
    table.add_column("name")
    table.add_row("[/x]list_all")
    out.print(table)
    text = buffer.getvalue()
    assert "session [/x] Bob [bold]x[/bold]" in text and "[/x]list_all" in text


def test_control_and_bidi_characters_are_shown_escaped() -> None:
    out, buffer = console()
    out.print("Bob\x1b[2J\rALERT: forged\u202eevil\x00", highlight=False)
    printed = buffer.getvalue()
    assert "\x1b" not in printed and "\u202e" not in printed and "\x00" not in printed and "\r" not in printed
    assert "\\x1b[2J\\x0dALERT" in printed and "\\u202e" in printed
    assert safe_line("a\nALERT: b") == "a\\nALERT: b" and safe_text("a\nb") == "a\nb"


def test_json_output_escapes_bidi_but_keeps_the_data(capsys: pytest.CaptureFixture[str]) -> None:
    emit_json({"name": "Bob\u202eevil\x1b"})
    printed = capsys.readouterr().out
    assert "\u202e" not in printed and "\x1b" not in printed
    assert json.loads(printed) == {"name": "Bob\u202eevil\x1b"}


@pytest.mark.parametrize("name", ["Bob\x1b[31m", "Bob\u202e", "Bob\nALERT: x", "Bob\x00"])
def test_a_display_name_with_control_characters_is_bad_input(name: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    result = CliRunner().invoke(app, ["triage", "now", "--patient-name", name, "--json"])
    assert result.exit_code == 2
    assert "--patient-name" in json.loads(result.stdout.strip().splitlines()[-1])["error"]


# --- files -----------------------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_recordings_transcripts_and_manifest_are_owner_only(
    services: Services, sandbox: Sandbox, tmp_path: Path, umask_022: None
) -> None:
    class Transcriber:
        name = "fake"

        async def transcribe(self, path: Path, content_type: str) -> str:
            return "transcript of a consultation"

    root = tmp_path / "downloads"
    worker = RecordingsWorker(
        services.toolbox,
        team_id=DEMO_TEAM_ID,
        collection_id=DEMO_INTAKE_COLLECTION_ID,
        download_dir=root,
        transcriber=Transcriber(),
    )
    report = await worker.run(session_id=demo(sandbox).sessions["ontime"])
    await worker.transcribe(report)
    files = [p for p in root.rglob("*") if p.is_file()]
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    assert (root / MANIFEST_NAME) in files and any(p.suffix == ".txt" for p in files) and len(files) >= 3
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {"0o700"}


@pytest.mark.e2e
def test_a_patient_name_with_markup_is_printed_and_written_once(tmp_path: Path) -> None:
    """`triage --patient-name "[/x] Bob"` crashed after creating the session and both links; each rerun made another."""
    from sandbox import create_sandbox
    from tests.e2e import cli_env, run_cli, serve

    sandbox = create_sandbox()
    with serve(sandbox) as served:
        result = run_cli(["triage", "--patient-name", "[/x] Bob [bold]"], cli_env(tmp_path, served.url), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[/x] Bob [bold]" in result.stdout and "Traceback" not in result.stderr
    creates = [r for r in sandbox.requests if r.truto_method == "create" and r.status == 200]
    assert sorted(r.resource or "" for r in creates) == ["participants", "participants", "sessions"]


async def test_ask_dry_run_prints_the_plan_and_changes_nothing(
    services: Services, sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = demo(sandbox).sessions["future"]
    services.model = ScriptedChatModel(script=cancel_a_then_b)
    outcome = await run_ask(offline_settings(tmp_path), f"cancel {a} {a}", services=services, decide=None)
    report_outcome(outcome, as_json=True, dry_run=True)  # exit 0: no typer.Exit
    printed = json.loads(capsys.readouterr().out)
    assert printed["dry_run"] is True and printed["action_requests"][0]["args"]["id"] == a
    assert "--yes" in printed["resume"]
    assert sandbox.store.sessions[a].canceled_time is None
    assert sandbox.count(truto_method="delete") == 0


def test_ask_dry_run_goes_alone() -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    result = CliRunner().invoke(app, ["ask", "cancel x", "--dry-run", "--yes"], env={"OPENAI_API_KEY": "sk-x"})
    assert result.exit_code == 2 and "--dry-run" in result.output


# --- secrets echoed URL-encoded ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    ["https://api.truto.one/mcp/0a1b2c3d4e5f60718293a4b5c6d7e8f9", "tk_live/abc+def=ghi=="],
    ids=["mcp-url", "token-with-reserved-chars"],
)
@pytest.mark.parametrize("encode", [lambda s: quote(s, safe=""), quote_plus], ids=["quote", "quote-plus"])
def test_a_secret_echoed_url_encoded_is_redacted(secret: str, encode: Any) -> None:
    """An upstream that echoes a configured secret URL-encoded (an MCP URL in a `redirect_uri=` or `url=` parameter
    of an error message) is redacted too, not only the secret's own text or the `/mcp/` pattern."""
    redactor = Redactor()
    redactor.register([secret])
    echoed = f"invalid request: url={encode(secret)}&x=1"
    out = redactor.text(echoed)
    assert encode(secret) not in out
    assert REDACTED in out
    assert json.dumps(secret) not in redactor.text(json.dumps({"a": secret}))


# --- a secret echoed into a report's fields ----------------------------------------------------------------------

ECHOED_SECRET = "echoed-secret-5f0c2a9e"


@pytest.fixture
def echoed_secret() -> Any:
    register_secrets([ECHOED_SECRET])
    yield ECHOED_SECRET
    REDACTOR.forget()


@pytest.mark.profiles("default")
async def test_a_secret_echoed_into_a_summary_never_reaches_the_report_files(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, echoed_secret: str
) -> None:
    """A token echoed into a summary field (here `actual_end_time`) reaches the report's `problem`: every report file
    (Markdown, HTML and JSON) has it redacted."""
    healthy = await healthy_report(sandbox, clock, tmp_path)
    victim = ended_session(healthy)

    def echo(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "session_summaries" and names_session(request, victim["session_id"]):
            return rewrite_json(response, {**response.json(), "actual_end_time": f"token {echoed_secret}"})
        return response

    report = await audit(await services_for(sandbox, clock, tmp_path, echo))
    assert "summary_unavailable" in rows_by_id(report)[victim["session_id"]]["flags"]
    written = sorted((tmp_path / "reports").glob("audit-*"))
    assert {p.suffix for p in written} == {".md", ".json", ".html"}
    for path in written:
        assert echoed_secret not in path.read_text(encoding="utf-8"), path.name


async def test_a_secret_echoed_into_a_summary_never_reaches_the_state_files_side_rows(
    tmp_path: Path, echoed_secret: str
) -> None:
    """The audit keeps each summary's facts (with `unavailable` quoting the raw value) in side rows of the state store;
    a run that then stops (exit 3) leaves no echoed token at rest in COVIU_AGENT_STATE there, as the checkpoint
    writes (through the redacting serializer) leave none."""
    path = tmp_path / "state.sqlite"
    store = open_audit_store(str(path))
    try:
        facts = summary_facts({"participants": [], "actual_end_time": f"token {echoed_secret}"})
        await store.put_rows("thread-1", "summaries", {"s-1": facts})
    finally:
        await store.aclose()
    assert echoed_secret.encode() not in path.read_bytes()


# --- approvals: duplicates in one turn, a write hidden in a batch of reads, a look-alike tool name ---


def reads_and_the_same_cancel_twice(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    target = request_of(messages).split()[-1]
    if not results(messages):
        return AIMessage(
            "",
            tool_calls=[
                call("list_all_coviu_sessions", {}, "r1"),
                call("delete_a_coviu_session_by_id", {"id": target}, "d1"),
                call("delete_a_coviu_session_by_id", {"id": target}, "d2"),
            ],
        )
    return AIMessage("Done.")


@pytest.mark.profiles("default")
async def test_the_same_write_twice_in_a_batch_of_reads_runs_only_as_often_as_approved(
    services: Services, sandbox: Sandbox
) -> None:
    """Two identical cancels in one turn are two actions: approving one and rejecting the other sends exactly one,
    and the read in the same turn waits for the answer like everything else in the turn."""
    target = demo(sandbox).sessions["future"]
    chat = Chat(services, reads_and_the_same_cancel_twice)
    await chat.say(f"cancel {target}")
    pending = await chat.pending()
    assert [p["name"] for p in pending] == ["delete_a_coviu_session_by_id"] * 2
    assert sandbox.count(resource="sessions", truto_method="delete") == 0
    assert sandbox.count(resource="sessions", truto_method="list") == 0
    await chat.decide([{"type": "approve"}, {"type": "reject", "message": "once is enough"}])
    assert sandbox.count(resource="sessions", truto_method="delete") == 1
    assert not await chat.pending()


def look_alike_cancel(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
    target = request_of(messages).split()[-1]
    if not results(messages):
        names = ["DELETE_A_COVIU_SESSION_BY_ID", " delete_a_coviu_session_by_id", "delete_a_coviu_session_by_id\n"]
        return AIMessage("", tool_calls=[call(n, {"id": target}, f"l{i}") for i, n in enumerate(names)])
    return AIMessage("Done.")


@pytest.mark.profiles("default")
async def test_a_look_alike_tool_name_is_never_sent(services: Services, sandbox: Sandbox) -> None:
    target = demo(sandbox).sessions["future"]
    chat = Chat(services, look_alike_cancel)
    state = await chat.say(f"cancel {target}")
    assert not await chat.pending()
    assert sandbox.count(resource="sessions", truto_method="delete") == 0
    answers = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert len(answers) == 3 and all(m.status == "error" for m in answers)


_TRICKY = [
    "plain text, nothing here",
    "Authorization: Bearer abcdefghijkl",
    "BASIC dXNlcjpwYXNzd29yZA==",
    'a body {"api_key": "abcdefgh12345"}',
    "refresh_token=abcdefgh12345",
    "to\u212aen=abcdefghijk",  # the Kelvin sign: IGNORECASE matches it as a k
    "ba\u017fic abcdefghijkl",  # the long s
    "ba\u0131ic abcdefghijkl",  # the dotless i
    "BAS\u0130C abcdefghijkl",  # the dotted capital I
    "line\nsk-abcdefgh1234",
    "https://x.example/mcp/abcdefgh123",
    "%2Fmcp%2Fabcdefgh123",
    "postgres://user:pa55word@db/x",
    "Triage \u2013 Ava Jenkins",
    "the configured tok_abcdefghijkl inside",
]


def test_the_quick_checks_skip_only_what_cannot_match():
    """Issue 28 (CPU per request): a pattern is skipped when its words are absent, and a row's structural pass when
    its JSON shows no secret and no word; what is redacted is exactly what the full passes redact."""
    import json

    from graphs.audit_store import _redacted_json
    from tools.textsafety import _PATTERNS, REDACTED, Redactor

    redactor = Redactor()
    redactor.register(["tok_abcdefghijkl"])

    def full(text: str) -> str:  # every pattern, no gate
        for secret in redactor.secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    for text in _TRICKY:
        assert redactor.text(text) == full(text), text
        assert redactor.needs_text(text) == (full(text) != text), text
        assert redactor.needs(text.encode()) == (full(text) != text), text
        assert redactor.needs(f'{{"long": "{"x" * 70_000} {text}"}}'.encode()) == (full(text) != text), text
    import tools.textsafety as textsafety

    saved = textsafety.REDACTOR
    textsafety.REDACTOR = redactor
    try:
        import graphs.audit_store as audit_store

        audit_store.REDACTOR, before = redactor, audit_store.REDACTOR
        try:
            for text in _TRICKY:
                row = {"name": text, "nested": [{"k": text}], "n": 3}
                expected = json.dumps(redactor.value(row), separators=(",", ":"))
                assert _redacted_json(row) == expected, text
        finally:
            audit_store.REDACTOR = before
    finally:
        textsafety.REDACTOR = saved


def test_a_secret_json_would_escape_is_not_left_to_the_quick_check():
    from tools.textsafety import Redactor

    redactor = Redactor()
    redactor.register(['se"cret\\value'])
    assert redactor.may_change_json('{"a":"nothing"}')  # its JSON form differs: the structural pass decides
