"""The one exit-code table (README "Exit codes", every `--help`), walked across the commands on the embedded sandbox:
0 done, 2 bad input or an unknown id, 3 upstream after retries, 4 needs approval, 5 incomplete, 130 interrupted.
The same failure gives the same code alone and in a fleet, with a message written for a person."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

import sandbox as sandbox_module
from agent.cli import app
from agent.errors import EXIT_CODES

UNKNOWN = "00000000-0000-4000-8000-000000000000"
Invoke = Callable[..., Result]


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The CLI configures logging (root handler on CliRunner's stderr, library levels): put it all back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {n: lg.level for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_logging: None) -> Invoke:
    """`coviu-agent ARGS` in-process on the embedded sandbox, in an empty directory (no `.env`), with `env` on top."""
    monkeypatch.chdir(tmp_path)
    import os

    for name in list(os.environ):
        if name.startswith(("TRUTO_", "COVIU_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COVIU_AGENT_SANDBOX", "1")
    monkeypatch.setenv("COVIU_AGENT_STATE", str(tmp_path / "state.sqlite"))
    monkeypatch.setenv("COVIU_AGENT_PLANNER", "rules")
    # the process's rate-limit state of the embedded account starts afresh (a test's spent quota stays its own)
    from tools.ratelimit import GOVERNORS, MemoryRateStore

    monkeypatch.setattr(GOVERNORS, "_system_store", MemoryRateStore())

    def invoke(*args: str, **env: str) -> Result:
        return CliRunner().invoke(app, list(args), env=env)

    return invoke


def only_the_demo_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded sandbox serving its demo account only (as a served sandbox or Truto does): another account id
    is a 404 'integrated account not found'."""
    create = sandbox_module.create_sandbox

    def create_sandbox(config: Any = None, **kwargs: Any) -> Any:
        if config is not None:
            config.accounts = []
        return create(config, **kwargs)

    monkeypatch.setattr(sandbox_module, "create_sandbox", create_sandbox)


def test_the_table_is_the_one_every_help_shows(cli: Invoke) -> None:
    for command in (["triage"], ["audit"], ["ask"], ["schedule", "list"], ["sandbox", "serve"], ["mcp", "list"]):
        shown = cli(*command, "-h").output
        for code, meaning in EXIT_CODES:
            assert f"{code:>3}  {meaning}" in shown, (command, code)


def test_done_is_0(cli: Invoke, tmp_path: Path) -> None:
    assert cli("triage", "--patient-name", "Ava Jenkins").exit_code == 0
    assert cli("audit", "--out", str(tmp_path / "r")).exit_code == 0


def test_a_malformed_team_id_is_bad_input_for_a_person_in_triage_and_audit(cli: Invoke, tmp_path: Path) -> None:
    triage = cli("triage", "--patient-name", "Ava Jenkins", COVIU_TEAM_ID="bad id!")
    audit = cli("audit", "--out", str(tmp_path / "r"), COVIU_TEAM_ID="bad id!")
    for result in (triage, audit):
        assert result.exit_code == 2, result.output
        assert "COVIU_TEAM_ID" in result.output and "'bad id!'" in result.output
        assert "nothing was sent" in result.output
        assert "call the tool again" not in result.output  # written for the model before


def test_an_unknown_team_or_collection_is_2_in_triage_and_audit(cli: Invoke, tmp_path: Path) -> None:
    triage = cli("triage", "--patient-name", "Ava Jenkins", COVIU_TEAM_ID=UNKNOWN)
    audit = cli("audit", "--out", str(tmp_path / "r"), COVIU_TEAM_ID=UNKNOWN)
    collection = cli("audit", "--out", str(tmp_path / "r"), "--collection-id", UNKNOWN)
    for result, source in ((triage, "COVIU_TEAM_ID"), (audit, "COVIU_TEAM_ID"), (collection, "--collection-id")):
        assert result.exit_code == 2, result.output
        assert UNKNOWN in result.output and source in result.output
        assert "a rerun will not help" in result.output


def test_an_unknown_account_is_2_alone_and_in_a_fleet(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_the_demo_account(monkeypatch)
    alone = cli("audit", "--out", str(tmp_path / "alone"), TRUTO_INTEGRATED_ACCOUNT_ID="nope")
    assert alone.exit_code == 2, alone.output
    assert "nope" in alone.output and "TRUTO_INTEGRATED_ACCOUNT_ID" in alone.output

    fleet = cli("audit", "--accounts", "sandbox,nope", "--out", str(tmp_path / "fleet"), "--json")
    assert fleet.exit_code == 2, fleet.output
    summary = json.loads(fleet.stdout)
    codes = {c["account"]: c["exit_code"] for c in summary["clinics"]}
    assert codes == {"sandbox": 0, "nope": 2}
    said = next(c["error"] for c in summary["clinics"] if c["account"] == "nope")
    assert "integrated account not found: nope" in said and "TRUTO_INTEGRATED_ACCOUNT_ID" in said
    assert "TrutoError" not in said  # a sentence, not an exception's class


def test_bad_flags_and_settings_are_2(cli: Invoke) -> None:
    assert cli("audit", "--date", "2026-02-30").exit_code == 2
    assert cli("triage", "--duration-minutes", "0", "--patient-name", "A").exit_code == 2
    assert cli("triage", "--patient-name", "A", COVIU_AGENT_PLANNER="gpt").exit_code == 2


def test_upstream_after_retries_is_3(cli: Invoke, tmp_path: Path) -> None:
    # every reply says the account's quota is spent for a day: longer than the 1 s wait budget
    faults = json.dumps({"exhausted_reset": "86400"})
    result = cli("triage", "--patient-name", "A", COVIU_SANDBOX_FAULTS=faults, COVIU_AGENT_MAX_WAIT="1")
    assert result.exit_code == 3, result.output
    assert "rate limited" in result.output


class OneSummaryRefused(httpx.AsyncBaseTransport):
    """The embedded sandbox, with one session's summary answered 404."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.refused: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/proxy/session_summaries/"):
            session = path.rsplit("/", 1)[-1]
            self.refused = self.refused or session
            if session == self.refused:
                return httpx.Response(404, json={"error": "Not Found", "message": "no such summary"})
        return await self.inner.handle_async_request(request)


def test_a_report_written_but_incomplete_is_5(cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = sandbox_module.SandboxTransport
    monkeypatch.setattr(sandbox_module, "SandboxTransport", lambda box: OneSummaryRefused(transport(box)))
    result = cli("audit", "--out", str(tmp_path / "r"))
    assert result.exit_code == 5, result.output
    assert "incomplete" in result.output and list((tmp_path / "r").glob("audit-*.md"))


def test_needs_approval_is_4(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.messages import AIMessage, BaseMessage

    from tests.fakes import ScriptedChatModel

    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    args = {
        "session_name": "Intake",
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(minutes=30)).isoformat(),
    }

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        # a change that can succeed (a session in the future): shown for approval, never sent unasked
        call = {"name": "create_a_coviu_session", "args": args, "id": "k1", "type": "tool_call"}
        return AIMessage("", tool_calls=[call])

    monkeypatch.setattr("agent.services.make_model", lambda settings: ScriptedChatModel(script=script))
    result = cli("ask", "book an intake session in two days", OPENAI_API_KEY="sk-test")
    assert result.exit_code == 4, result.output
    assert "--yes" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("COVIU_AGENT_MAX_WAIT", "abc", "COVIU_AGENT_MAX_WAIT='abc': expected a number"),
        ("COVIU_AGENT_PLANNER", "gpt", "COVIU_AGENT_PLANNER='gpt': expected 'llm', 'rules' or 'auto'"),
        ("TRUTO_RATE_LIMIT_PER_10S", "0", "TRUTO_RATE_LIMIT_PER_10S='0': expected a number of at least 1"),
        ("TRUTO_ALLOW_INSECURE", "maybe", "TRUTO_ALLOW_INSECURE='maybe': expected true or false"),
        ("COVIU_AGENT_TIMEZONE", "Mars/X", "COVIU_AGENT_TIMEZONE='Mars/X' is not an IANA time zone"),
    ],
)
def test_a_setting_error_names_the_variable_its_value_and_what_is_accepted(
    cli: Invoke, variable: str, value: str, said: str
) -> None:
    result = cli("audit", "--json", **{variable: value})
    assert result.exit_code == 2
    assert said in json.loads(result.stdout)["error"]


def test_dates_are_checked_as_dates(cli: Invoke) -> None:
    for command in (["audit", "--date"], ["recordings", "--date"], ["sandbox", "serve", "--synthetic-day"]):
        result = (
            cli(*command, "2026-02-30", "--synthetic-sessions", "1")
            if "serve" in command
            else cli(*command, "2026-02-30")
        )
        assert result.exit_code == 2
        assert "2026-02-30 is not a day of the calendar" in result.output and "YYYY-MM-DD" in result.output


# --- help ------------------------------------------------------------------------------------------

COMMANDS = [
    ["tools"],
    ["triage"],
    ["audit"],
    ["ask"],
    ["recordings"],
    ["queue", "watch"],
    ["sandbox", "serve"],
    ["mcp", "create"],
    ["mcp", "list"],
    ["mcp", "delete"],
    ["schedule", "audit"],
    ["schedule", "list"],
    ["schedule", "delete"],
]
# the flag each setting backs, in every command that has the flag
BACKED = {
    "--team-id": "COVIU_TEAM_ID",
    "--queue-id": "COVIU_WAITING_QUEUE_ID",
    "--collection-id": "COVIU_INTAKE_COLLECTION_ID",
    "--max-wait": "COVIU_AGENT_MAX_WAIT",
    "--timezone": "COVIU_AGENT_TIMEZONE",
    "--profile": "COVIU_SANDBOX_PROFILE",
    "--seed": "COVIU_SANDBOX_SEED",
}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_help_has_h_v_q_and_names_the_variable_behind_each_flag(cli: Invoke, command: list[str]) -> None:
    import re

    short, long = cli(*command, "-h"), cli(*command, "--help")
    assert short.exit_code == 0 and short.output == long.output
    text = " ".join(short.output.split())  # click wraps the help: compare with single spaces
    assert "-v, --verbose" in text and "-q, --quiet" in text
    assert "Scenario" not in text and "range>" not in text.lower()
    for flag, variable in BACKED.items():
        described = re.search(rf"{flag} (<\w+>|[A-Z]+) (.*?)(?= --?[a-z]|\s+Exit codes)", text)
        server_side = command == ["schedule", "audit"] and flag in ("--team-id", "--collection-id")
        if described and not server_side:  # a cron's ids default to the server's settings, not this shell's
            assert f"[env var: {variable}]" in described.group(2), (flag, described.group(2))


def test_the_default_log_level_is_warning_at_a_terminal_and_info_under_cron() -> None:
    from agent.cli.common import log_level

    assert log_level(0, None) in ("WARNING", "INFO")  # depends on this test's stderr; both branches below
    import sys
    from unittest import mock

    with mock.patch.object(sys.stderr, "isatty", return_value=True):
        assert log_level(0, None) == "WARNING"
        assert log_level(0, "INFO") == "INFO"  # COVIU_AGENT_LOG_LEVEL set
        assert log_level(1, "INFO") == "DEBUG" and log_level(-1, "DEBUG") == "ERROR"
    with mock.patch.object(sys.stderr, "isatty", return_value=False):
        assert log_level(0, None) == "INFO"


def test_no_info_lines_on_a_quiet_run(cli: Invoke) -> None:
    result = cli("triage", "--patient-name", "Ava Jenkins", "-q")
    assert result.exit_code == 0
    assert " INFO " not in result.output
