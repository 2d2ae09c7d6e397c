"""`coviu-agent status`: the run log the runs leave in the state store, and a LangGraph server's threads and crons
(a fake server on loopback answering the SDK's calls)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from agent import runlog
from agent.cli import app
from agent.errors import BadInput
from agent.runs import AuditArgs, TriageArgs, run_audit, run_triage
from agent.settings import Settings
from graphs.context import Services
from sandbox import DEMO_TEAM_ID

pytestmark = pytest.mark.profiles("default")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def settings(state: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(state))  # type: ignore[call-arg]


def cli(state: Path, *args: str, **more_env: str) -> Any:
    """`coviu-agent ARGS` in process on the state store `state` and the embedded sandbox; the root logger is put back
    (the CLI points it at CliRunner's stderr, which is closed after the invocation)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    env = {"COVIU_AGENT_STATE": str(state), "COVIU_AGENT_SANDBOX": "1", **more_env}
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def status(state: Path, *args: str) -> Any:
    """`coviu-agent status ARGS` in process."""
    return cli(state, "status", *args)


async def test_status_shows_each_graphs_last_run_per_clinic_and_pending_approvals(
    settings: Settings, services: Services, state: Path, tmp_path: Path
):
    assert json.loads(status(state, "--json").stdout)["last_runs"] == []  # nothing ran: nothing recorded
    first = await run_audit(settings, AuditArgs(day="yesterday", out_dir=tmp_path / "r"), services=services)
    second = await run_audit(
        settings, AuditArgs(day="yesterday", out_dir=tmp_path / "r", refresh=True), services=services
    )
    await run_triage(settings, TriageArgs(patient_name="Ava Jenkins"), services=services)
    with pytest.raises(BadInput):
        await run_audit(settings, AuditArgs(day="no-such-day", team_id="clinic-b"), services=services)
    entry = dict(graph="assistant", clinic="", started_at="2026-12-07T01:00:00+00:00", duration_seconds=1.0)
    runlog.record(
        str(state),
        runlog.RunEntry(
            **entry, thread_id="ask:1", finished_at="2026-12-07T01:00:01", outcome="needs_approval", exit_code=4
        ),
    )  # type: ignore[arg-type]
    runlog.record(
        str(state),
        runlog.RunEntry(
            **entry, thread_id="ask:2", finished_at="2026-12-07T01:00:02", outcome="needs_approval", exit_code=4
        ),
    )  # type: ignore[arg-type]
    runlog.record(
        str(state),
        runlog.RunEntry(**entry, thread_id="ask:2", finished_at="2026-12-07T01:00:03", outcome="done", exit_code=0),
    )  # type: ignore[arg-type]

    result = status(state, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    last = {(r["graph"], r["clinic"]): r for r in shown["last_runs"]}
    audit = last[("audit", DEMO_TEAM_ID)]
    assert audit["thread_id"] == second.thread_id and audit["exit_code"] == 0 and audit["outcome"] == "done"
    assert audit["report_path"] == second.paths["md"] and first.paths["md"] == second.paths["md"]
    assert last[("audit", "clinic-b")]["exit_code"] == 2 and last[("audit", "clinic-b")]["outcome"] == "bad_input"
    assert last[("triage", DEMO_TEAM_ID)]["exit_code"] == 0
    assert [p["thread_id"] for p in shown["pending_approvals"]] == ["ask:1"]  # ask:2 was answered since
    assert shown["pending_approvals"][0]["resume"] == "coviu-agent ask --thread-id ask:1"  # review first
    assert shown["server"] is None
    with sqlite3.connect(state) as conn:  # the run log holds ids, times and outcomes: no patient name
        rows = conn.execute("SELECT * FROM coviu_agent_runs").fetchall()
    assert len(rows) == 7 and "Ava" not in repr(rows)

    text = status(state)
    assert text.exit_code == 0
    assert f"audit      clinic {DEMO_TEAM_ID}" in text.stdout and "done (exit 0" in text.stdout
    assert "ask:1" in text.stdout and "next scheduled run: unknown" in text.stdout


def booking_script(messages: list[Any], tools: list[str]) -> Any:
    """A model that asks to book an intake session in two days (a change: it waits for approval), then is done."""
    from datetime import UTC, datetime, timedelta

    from langchain_core.messages import AIMessage, ToolMessage

    from tests.test_assistant import since_request

    if any(isinstance(m, ToolMessage) for m in since_request(messages)):
        return AIMessage("Booked.")
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    args = {
        "session_name": "Intake",
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(minutes=30)).isoformat(),
    }
    return AIMessage("", tool_calls=[{"name": "create_a_coviu_session", "args": args, "id": "k1", "type": "tool_call"}])


def test_status_shows_a_pending_approval_with_the_command_that_shows_it_first(
    state: Path, monkeypatch: pytest.MonkeyPatch
):
    # status told the operator to run `ask --thread-id T --yes`: approving blind what it had not shown. Its next step
    # is now the command that shows the pending action (exit 4 with the request, here no terminal), then the decisions
    import shlex

    import agent.services
    from tests.fakes import ScriptedChatModel

    monkeypatch.setattr(agent.services, "make_model", lambda settings: ScriptedChatModel(script=booking_script))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    asked = cli(state, "ask", "book an intake session in two days")
    assert asked.exit_code == 4, asked.output
    thread = json.loads(asked.stdout)["thread_id"]

    (pending,) = json.loads(status(state, "--json").stdout)["pending_approvals"]
    review = f"coviu-agent ask --thread-id {thread}"
    assert (pending["thread_id"], pending["runs_on"], pending["resume"]) == (thread, "cli", review)
    assert (pending["approve"], pending["reject"]) == (f"{review} --yes", f"{review} --no")
    text = status(state).stdout
    assert f"review with `{review}`, then add --yes or --no" in text and "--yes`" not in text

    shown = cli(state, *shlex.split(pending["resume"])[1:])  # what the operator runs, as status printed it
    assert shown.exit_code == 4, shown.output
    request = json.loads(shown.stdout)
    assert [a["name"] for a in request["action_requests"]] == ["create_a_coviu_session"]
    assert request["action_requests"][0]["args"]["session_name"] == "Intake"
    assert [p["thread_id"] for p in json.loads(status(state, "--json").stdout)["pending_approvals"]] == [thread]

    approved = cli(state, *shlex.split(pending["approve"])[1:], "--json")
    assert approved.exit_code == 0, approved.output
    assert [(o["tool"], o["status"]) for o in json.loads(approved.stdout)["outcomes"]] == [
        ("create_a_coviu_session", "done")
    ]
    assert json.loads(status(state, "--json").stdout)["pending_approvals"] == []


async def test_a_run_given_its_own_checkpointer_is_not_logged(settings: Settings, services: Services, state: Path):
    from langgraph.checkpoint.memory import InMemorySaver

    await run_triage(settings, TriageArgs(patient_name="Ava Jenkins"), services=services, checkpointer=InMemorySaver())
    assert runlog.last_runs(str(state)) == []


class _FakeServer(BaseHTTPRequestHandler):
    crons: ClassVar[list[dict[str, Any]]] = []

    def _json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._json({"ok": True})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        if self.path == "/threads/search":
            interrupted = {"thread_id": "t-wait", "status": "interrupted", "metadata": {"graph_id": "assistant"}}
            done = {"thread_id": "t-audit", "status": "idle", "metadata": {"graph_id": "audit"}, "updated_at": "x"}
            self._json([interrupted] if request.get("status") == "interrupted" else [done, interrupted])
        elif self.path == "/runs/crons/search":
            self._json(type(self).crons)
        else:
            self._json({})

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def fake_server() -> Iterator[str]:
    _FakeServer.crons = [
        {"cron_id": "c2", "assistant_id": "audit", "schedule": "0 6 * * *", "next_run_date": "2026-12-09T06:00:00Z"},
        {"cron_id": "c1", "assistant_id": "audit", "schedule": "0 5 * * *", "next_run_date": "2026-12-08T05:00:00Z"},
    ]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_status_with_a_server_shows_its_waiting_threads_and_next_cron(fake_server: str, state: Path):
    result = status(state, "--server", fake_server, "--json")
    assert result.exit_code == 0, result.output
    server = json.loads(result.stdout)["server"]
    assert server["next_run"]["cron_id"] == "c1" and len(server["crons"]) == 2
    assert [t["thread_id"] for t in server["pending_approvals"]] == ["t-wait"]
    assert server["last_threads"]["audit"]["thread_id"] == "t-audit"
    text = status(state, "--server", fake_server)
    assert "next scheduled run: 2026-12-08T05:00:00Z" in text.stdout


def test_status_with_a_bad_or_unreachable_server(state: Path):
    assert status(state, "--server", "ftp://x").exit_code == 2
    assert status(state, "--server", "http://127.0.0.1:9").exit_code == 3


def test_status_and_queue_status_read_the_store_without_a_truto_key(state: Path):
    # an operator on the host, in a shell without the cron's environment: reading the local store needs no Truto
    # account (the refusal said "TRUTO_API_KEY is not set", and the tests above set COVIU_AGENT_SANDBOX=1)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    env = {"COVIU_AGENT_STATE": str(state), "COVIU_AGENT_SANDBOX": None, "TRUTO_API_KEY": None}
    try:
        shown = CliRunner().invoke(app, ["status", "--json"], env=env)
        queue = CliRunner().invoke(app, ["queue", "status", "--team-id", "t-1", "--queue-id", "q-1"], env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["last_runs"] == []
    assert queue.exit_code == 0, queue.output


async def test_a_fleet_clinic_that_failed_before_its_audit_ran_is_in_status_and_the_textfile(
    state: Path, clock: Any, tmp_path: Path
):
    # an account Truto does not know fails at the tool catalog, before run_audit: it was in the fleet summary only,
    # so `status` and `coviu_agent_last_run_success == 0` never showed the clinic whose nightly audit fails
    import httpx

    from agent import runlog
    from agent.fleet import Clinic, run_fleet
    from tools import telemetry
    from tools.promfile import read as read_textfile

    unknown = httpx.MockTransport(lambda request: httpx.Response(404, json={"error": "integrated account not found"}))
    cfg = Settings(
        _env_file=None,  # type: ignore[call-arg]
        COVIU_AGENT_STATE=str(state),
        TRUTO_API_KEY="key-for-test-only",
        TRUTO_INTEGRATED_ACCOUNT_ID="gone",
    )
    textfile = tmp_path / "coviu_agent.prom"
    previous = telemetry.install(telemetry.Telemetry(metrics_file=textfile))
    try:
        runs = await run_fleet(
            cfg, [Clinic(account="gone")], AuditArgs(out_dir=tmp_path / "fleet"), transport=unknown, clock=clock
        )
    finally:
        telemetry.install(previous)
    assert [r.exit_code for r in runs] == [2]
    logged = [(r.graph, r.clinic, r.exit_code) for r in runlog.last_runs(str(state))]
    assert logged == [("audit", "gone", 2)]
    samples = read_textfile(textfile)
    assert samples[("coviu_agent_last_run_success", (("clinic", "gone"), ("graph", "audit"), ("team", "")))] == 0


async def test_two_fleet_clinics_on_one_team_are_two_rows_in_status_and_two_series_in_the_textfile(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # clinics are their integrated accounts: two accounts on one Coviu team were one row (their team id), the last
    # writer's, so one clinic's failed night was hidden behind the other's success (issue 27)
    from datetime import date

    from agent.fleet import Clinic, run_fleet
    from sandbox import SandboxConfig, SandboxTransport, create_sandbox, generate_sessions
    from tools import telemetry
    from tools.clock import FakeClock
    from tools.promfile import read as read_textfile

    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "COVIU_TEAM_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COVIU_AGENT_TIMEZONE", "UTC")
    monkeypatch.setenv("COVIU_AGENT_PLANNER", "rules")
    cfg = Settings(_env_file=None, COVIU_AGENT_STATE=str(state))  # type: ignore[call-arg]
    clock = FakeClock()
    day = date(2026, 11, 24)
    sandbox = create_sandbox(SandboxConfig(accounts=["clinic-a"]), clock=clock)  # "clinic-gone" is not served
    generate_sessions(sandbox.store_for("clinic-a"), day, 3, seed=1)
    clinics = [Clinic(account="clinic-a", team_id=DEMO_TEAM_ID), Clinic(account="clinic-gone", team_id=DEMO_TEAM_ID)]
    textfile = tmp_path / "coviu_agent.prom"
    previous = telemetry.install(telemetry.Telemetry(metrics_file=textfile))
    try:
        args = AuditArgs(day=day.isoformat(), out_dir=tmp_path / "fleet")
        runs = await run_fleet(cfg, clinics, args, transport=SandboxTransport(sandbox), clock=clock)
    finally:
        telemetry.install(previous)
    assert sorted(r.exit_code for r in runs) == [0, 2], [r.error for r in runs]

    shown = json.loads(status(state, "--json").stdout)["last_runs"]
    rows = sorted((r["clinic"], r["team_id"], r["exit_code"]) for r in shown)
    assert rows == [("clinic-a", DEMO_TEAM_ID, 0), ("clinic-gone", DEMO_TEAM_ID, 2)]
    text = status(state).stdout
    assert "clinic clinic-a" in text and "clinic clinic-gone" in text

    samples = read_textfile(textfile)
    success = {dict(labels)["clinic"]: value for (name, labels), value in samples.items() if name.endswith("success")}
    assert success == {"clinic-a": 1.0, "clinic-gone": 0.0}
    teams = {dict(labels)["team"] for (name, labels) in samples if name == "coviu_agent_last_run_exit_code"}
    assert teams == {DEMO_TEAM_ID}
    runs_counted = [dict(labels) for (name, labels) in samples if name == "coviu_agent_runs_total"]
    assert sorted((r["clinic"], r["exit_code"]) for r in runs_counted) == [("clinic-a", "0"), ("clinic-gone", "2")]


def test_a_run_log_written_before_team_ids_is_read_and_added_to(state: Path):
    # the run log of an earlier version: no `team_id` column, `clinic` a team id; its rows show with no team known
    state.parent.mkdir(parents=True)
    with sqlite3.connect(state) as conn:
        conn.execute(
            f"CREATE TABLE {runlog.TABLE} (graph TEXT NOT NULL, clinic TEXT NOT NULL, thread_id TEXT, started_at TEXT "
            "NOT NULL, finished_at TEXT NOT NULL, duration_seconds DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL, "
            "exit_code INTEGER NOT NULL, report_path TEXT)"
        )
        conn.execute(
            f"INSERT INTO {runlog.TABLE} VALUES ('audit', 'team-old', NULL, '2026-12-06T01:00:00+00:00', "
            "'2026-12-06T01:00:09', 9.0, 'upstream_failure', 3, NULL)"
        )
    conn.close()
    shown = status(state)
    assert shown.exit_code == 0, shown.output
    assert "clinic team-old (team ?)" in shown.stdout and "upstream_failure" in shown.stdout
    entry = dict(graph="audit", thread_id=None, started_at="2026-12-07T01:00:00+00:00", duration_seconds=1.0)
    runlog.record(
        str(state),
        runlog.RunEntry(
            **entry, clinic="acct-1", team_id="team-old", finished_at="2026-12-07T01:00:01", outcome="done", exit_code=0
        ),  # type: ignore[arg-type]
    )
    rows = [(r.clinic, r.team_id, r.exit_code) for r in runlog.last_runs(str(state))]
    assert rows == [("acct-1", "team-old", 0), ("team-old", None, 3)]
