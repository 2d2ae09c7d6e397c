"""End to end on LangGraph's own server: `langgraph dev` serves the graphs of langgraph.json, and
`langgraph_sdk` runs triage and the audit (embedded sandbox, demo data) and registers the nightly cron.

The server is a subprocess on a free loopback port, started with `--no-reload` from a temporary folder: its
log, its `.langgraph_api` state and the audit's report files stay out of the project. The graphs and their
dependency still come from the project's own langgraph.json (paths made absolute). It is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

pytest.importorskip("langgraph_api", reason="langgraph-cli[inmem] is not installed")
from langgraph_sdk import get_client

from sandbox import DEMO_TEAM_ID
from tests.e2e import free_port
from tests.receivers import Webhook, webhook

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).resolve().parents[1]
CLINIC_TZ = "Australia/Sydney"
STARTUP_SECONDS = 90
SCHEDULE_CLI = [sys.executable, "-c", "from agent.cli import main; main()"]
OFFLINE = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
}


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any account, model or tracing settings, plus the offline switches."""
    prefixes = ("TRUTO_", "COVIU_", "OPENAI_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(OFFLINE)
    env.update(HOME=str(tmp), COVIU_AGENT_TIMEZONE=CLINIC_TZ, PYTHONPATH=str(PROJECT), COVIU_AGENT_SANDBOX="1")
    env.update(extra)
    return env


def server_config(tmp: Path) -> Path:
    """The project's langgraph.json with absolute paths, and an inline env in place of the `.env` file."""
    config = json.loads((PROJECT / "langgraph.json").read_text(encoding="utf-8"))

    def absolute(spec: str) -> str:
        return str(PROJECT / spec) if spec.startswith("./") else spec

    graphs: dict[str, Any] = {}
    for name, entry in config["graphs"].items():
        if isinstance(entry, dict):
            graphs[name] = {**entry, "path": absolute(entry["path"])}
        else:
            graphs[name] = absolute(entry)
    config["graphs"] = graphs
    config["dependencies"] = [str((PROJECT / d).resolve()) if d.startswith(".") else d for d in config["dependencies"]]
    config["env"] = dict(OFFLINE)
    path = tmp / "langgraph.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@dataclass
class Server:
    url: str
    folder: Path
    log: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop the server by its PID: SIGTERM, then SIGKILL if it has not exited in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@pytest.fixture(scope="module")
def staff_hook() -> Iterator[Webhook]:
    """The staff's channel (a JSON webhook on loopback): the server's audits deliver their report to it."""
    with webhook() as hook:
        yield hook


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, staff_hook: Webhook) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("langgraph-dev")
    config = server_config(folder)
    port = free_port()
    env = clean_env(
        folder,
        COVIU_AGENT_STATE=str(folder / "state.sqlite"),
        COVIU_AGENT_REPORT_DIR=str(folder / "reports"),
        COVIU_AGENT_PLANNER="rules",
        COVIU_AGENT_NOTIFY=staff_hook.url,
    )
    command = [
        sys.executable,
        "-c",
        "from langgraph_cli.cli import cli; cli()",
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(config),
    ]
    log = folder / "server.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=sink, stderr=subprocess.STDOUT)
    running = Server(f"http://127.0.0.1:{port}", folder, log, process)
    try:
        deadline = started + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"langgraph dev exited with {process.returncode}:\n{running.log_tail()}")
            try:
                if httpx.get(f"{running.url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev did not answer /ok within {STARTUP_SECONDS}s:\n{running.log_tail()}")
            time.sleep(0.25)
        sys.stderr.write(f"langgraph dev answered /ok after {time.monotonic() - started:.1f}s\n")
        yield running
    finally:
        stop(process)


async def test_the_server_serves_the_graphs_with_editable_context(server: Server) -> None:
    async with get_client(url=server.url) as client:
        assistants = await client.assistants.search(limit=100)
        graph_ids = {a["graph_id"] for a in assistants}
        assert {"triage", "audit"} <= graph_ids
        for assistant in assistants:
            schemas = await client.assistants.get_schemas(assistant["assistant_id"])
            fields = set((schemas.get("context_schema") or {}).get("properties", {}))
            assert {"team_id", "waiting_queue_id", "collection_id", "planner"} <= fields, assistant["graph_id"]
            assert "services" not in fields
            inputs = (schemas.get("input_schema") or {}).get("properties", {})  # Studio's input form
            assert inputs, f"no input schema for {assistant['graph_id']}"
            if assistant["graph_id"] == "triage":
                assert inputs["patient_name"].get("description") and "dry_run" in inputs
            if assistant["graph_id"] == "audit":
                assert all(inputs[k].get("description") for k in ("date", "since", "until"))
            outputs = set((schemas.get("output_schema") or {}).get("properties", {}))
            assert outputs and "retry" not in outputs, assistant["graph_id"]


async def test_triage_on_the_server(server: Server) -> None:
    async with get_client(url=server.url) as client:
        state = await client.runs.wait(
            None,
            "triage",
            input={
                "messages": [
                    {"role": "user", "content": "A priority patient needs a duty nurse now. Patient: Ava Jenkins"}
                ]
            },
            context={"planner": "rules"},
        )
        assert isinstance(state, dict), state
        assert not state.get("failure"), state.get("failure")
        # a chat view shows the last AI message: it is the reply; the output is the result, not bookkeeping
        assert state["messages"][-1]["type"] == "ai" and state["messages"][-1]["content"] == state["reply"]
        assert not {"retry", "plan_steps", "session_creates", "known_sessions"} & set(state)
        assert state["session"]["session_name"] == "Triage – Ava Jenkins"
        session = state["session"]
        assert session["session_id"] and session["start_time"] and session["end_time"]
        participants = state["participants"]
        assert sorted(p["role"] for p in participants) == ["guest", "host"]
        for p in participants:
            assert p["entry_url"].startswith("https://") and p["entry_url"] in state["reply"]
        assert state["queue"]["waiting"] >= 1 and state["alerts"]


async def test_audit_on_the_server(server: Server, staff_hook: Webhook) -> None:
    zone = ZoneInfo(CLINIC_TZ)
    yesterday = (datetime.now(zone) - timedelta(days=1)).date()
    async with get_client(url=server.url) as client:
        state = await client.runs.wait(None, "audit", input={"date": yesterday.isoformat()}, context={})
        assert isinstance(state, dict), state
        report = state["report"]
        expected = {"schema_version", "complete", "team_id", "collection_id", "window", "generated_at", "totals"}
        assert expected | {"sessions"} <= set(report)
        assert report["complete"] is True
        assert set(report["totals"]) == {
            "sessions",
            "missing_forms",
            "pending_forms",
            "overruns",
            "no_actual_end",
            "billable_minutes",
            "summary_unavailable",
            "implausible_times",
        }
        since = datetime.fromisoformat(report["window"]["since"])
        assert since == datetime.combine(yesterday, datetime.min.time(), tzinfo=zone)
        assert report["totals"]["sessions"] == len(report["sessions"]) >= 1
        paths = state["report_paths"]
        assert set(paths) == {"md", "json", "html"}
        for path in paths.values():
            assert Path(path).is_file() and Path(path).is_relative_to(server.folder), path
        assert json.loads(Path(paths["json"]).read_text(encoding="utf-8"))["totals"] == report["totals"]
        # the report reached the staff's channel (through the outbox in the server's state store)
        told = [p for p in staff_hook.posts if "End-of-day audit" in p["title"]]
        assert told and "To do" in told[-1]["message"], staff_hook.posts


async def test_nightly_audit_cron_on_the_server(server: Server) -> None:
    async with get_client(url=server.url) as client:
        cron = await client.crons.create("audit", schedule="0 6 * * *", input={}, timezone=CLINIC_TZ)
        try:
            listed = {c["cron_id"]: c for c in await client.crons.search(limit=100)}
            assert cron["cron_id"] in listed
            mine = listed[cron["cron_id"]]
            assert mine["schedule"] == "0 6 * * *" and mine["timezone"] == CLINIC_TZ
            audit = next(a for a in await client.assistants.search(graph_id="audit"))
            assert mine["assistant_id"] == audit["assistant_id"]
            next_run = datetime.fromisoformat(mine["next_run_date"]).astimezone(ZoneInfo(CLINIC_TZ))
            assert (next_run.hour, next_run.minute) == (6, 0)
        finally:
            await client.crons.delete(cron["cron_id"])


async def test_one_assistant_per_clinic_with_its_own_account_and_time_zone(server: Server) -> None:
    perth = ZoneInfo("Australia/Perth")
    yesterday = (datetime.now(perth) - timedelta(days=1)).date()
    clinic = {"integrated_account_id": "sandbox", "team_id": DEMO_TEAM_ID, "timezone": "Australia/Perth"}
    async with get_client(url=server.url) as client:
        assistant = await client.assistants.create("audit", context=clinic, name="Harbourside audit")
        try:
            state = await client.runs.wait(None, assistant["assistant_id"], input={"date": yesterday.isoformat()})
            assert isinstance(state, dict), state
            report = state["report"]
            assert report["team_id"] == DEMO_TEAM_ID
            since = datetime.fromisoformat(report["window"]["since"])
            assert since == datetime.combine(yesterday, datetime.min.time(), tzinfo=perth)  # the clinic's day
            cron = await client.crons.create(
                assistant["assistant_id"], schedule="0 6 * * *", timezone="Australia/Perth"
            )
            await client.crons.delete(cron["cron_id"])
            assert cron["assistant_id"] == assistant["assistant_id"]
            refused = await client.runs.wait(
                None, assistant["assistant_id"], input={}, context={"timezone": "Mars/Olympus"}, raise_error=False
            )
            assert "not an IANA time zone" in json.dumps(refused), refused
        finally:
            await client.assistants.delete(assistant["assistant_id"])


def schedule(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """`coviu-agent schedule ARGS` as a subprocess (clinic time zone in its environment)."""
    command = [*SCHEDULE_CLI, "schedule", *args]
    return subprocess.run(command, env=clean_env(tmp), cwd=tmp, capture_output=True, text=True, timeout=60)


def test_schedule_audit_command_registers_lists_and_deletes_crons(server: Server, tmp_path: Path) -> None:
    result = schedule(["audit", "--cron", "0 6 * * *", "--server", server.url, "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    nightly = json.loads(result.stdout)
    assert nightly["schedule"] == "0 6 * * *" and nightly["timezone"] == CLINIC_TZ  # the clinic's, by default
    assert nightly["context"] == {}  # the audited day follows the server's settings
    args = ["--timezone", "Australia/Perth", "--team-id", DEMO_TEAM_ID, "--integrated-account-id", "sandbox"]
    result = schedule(["audit", "--cron", "30 5 * * 1-5", "--server", server.url, "--json", *args], tmp_path)
    assert result.returncode == 0, result.stderr
    perth = json.loads(result.stdout)
    assert perth["timezone"] == "Australia/Perth"
    assert perth["context"] == {
        "timezone": "Australia/Perth",
        "team_id": DEMO_TEAM_ID,
        "integrated_account_id": "sandbox",
    }

    listed = schedule(["list", "--server", server.url, "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {nightly["cron_id"], perth["cron_id"]} <= {c["cron_id"] for c in json.loads(listed.stdout)["crons"]}
    for cron in (nightly, perth):
        deleted = schedule(["delete", cron["cron_id"], "--server", server.url], tmp_path)
        assert deleted.returncode == 0, deleted.stderr


def test_schedule_audit_makes_one_cron_per_clinic_of_a_fleet(server: Server, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        "[[clinics]]\n"
        f'account = "sandbox"\nteam_id = "{DEMO_TEAM_ID}"\ntimezone = "Australia/Perth"\nname = "West"\n'
        "[[clinics]]\n"
        'account = "clinic-b"\n'
    )
    result = schedule(
        ["audit", "--cron", "0 6 * * *", "--server", server.url, "--fleet", str(fleet), "--json"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    crons = json.loads(result.stdout)["crons"]
    assert [c["context"].get("integrated_account_id") for c in crons] == ["sandbox", "clinic-b"]
    assert crons[0]["timezone"] == "Australia/Perth" and crons[0]["context"]["team_id"] == DEMO_TEAM_ID
    assert crons[1]["timezone"] == CLINIC_TZ  # no zone in the file: the clinic setting's
    for cron in crons:
        assert schedule(["delete", cron["cron_id"], "--server", server.url], tmp_path).returncode == 0
    mixed = schedule(
        ["audit", "--cron", "0 6 * * *", "--server", server.url, "--fleet", str(fleet), "--team-id", "x"], tmp_path
    )
    assert mixed.returncode == 2 and "--fleet" in mixed.stderr


def test_schedule_audit_again_replaces_the_clinics_cron_and_list_says_whose_and_when_locally(
    server: Server, tmp_path: Path
) -> None:
    clinic = ["--integrated-account-id", "sandbox", "--team-id", DEMO_TEAM_ID, "--timezone", "Australia/Perth"]
    first = schedule(["audit", "--cron", "0 6 * * *", "--server", server.url, "--json", *clinic], tmp_path)
    assert first.returncode == 0, first.stderr
    again = schedule(["audit", "--cron", "30 5 * * *", "--server", server.url, "--json", *clinic], tmp_path)
    assert again.returncode == 0, again.stderr
    first_cron, second_cron = json.loads(first.stdout), json.loads(again.stdout)
    assert second_cron["replaced"] == [first_cron["cron_id"]]

    # a cron made by hand for the same clinic is left alone, unless --force
    async def by_hand() -> str:
        context = {"integrated_account_id": "sandbox", "team_id": DEMO_TEAM_ID}
        made = await get_client(url=server.url).crons.create("audit", schedule="0 7 * * *", context=context)
        return str(made["cron_id"])

    import asyncio

    manual = asyncio.run(by_hand())
    kept = schedule(["audit", "--cron", "30 5 * * *", "--server", server.url, "--json", *clinic], tmp_path)
    third = json.loads(kept.stdout)
    assert third["replaced"] == [second_cron["cron_id"]]
    forced = schedule(["audit", "--cron", "30 5 * * *", "--server", server.url, "--json", "--force", *clinic], tmp_path)
    fourth = json.loads(forced.stdout)
    assert sorted(fourth["replaced"]) == sorted([third["cron_id"], manual])

    listed = schedule(["list", "--server", server.url, "--json"], tmp_path)
    mine = [c for c in json.loads(listed.stdout)["crons"] if c["context"].get("team_id") == DEMO_TEAM_ID]
    assert [c["cron_id"] for c in mine] == [fourth["cron_id"]]  # one cron for the clinic
    assert mine[0]["clinic"] == f"integrated_account_id sandbox, team_id {DEMO_TEAM_ID}"
    assert mine[0]["next_run_local"].endswith(" AWST") and " 05:30 " in mine[0]["next_run_local"]
    text = schedule(["list", "--server", server.url], tmp_path).stdout
    assert f"team_id {DEMO_TEAM_ID}" in text and "05:30 AWST" in text
    assert schedule(["delete", fourth["cron_id"], "--server", server.url], tmp_path).returncode == 0


def test_schedule_audit_command_exits_3_when_the_server_is_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = schedule(["audit", "--cron", "0 6 * * *", "--server", url, "--json"], tmp_path)
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout)["exit_code"] == 3
    assert f"cannot reach the LangGraph server at {url}" in result.stderr


def test_schedule_audit_command_rejects_bad_input_before_sending(tmp_path: Path) -> None:
    for args, field in (
        (["--cron", "0 6 * *"], "--cron"),
        (["--cron", "0 6 * * *", "--timezone", "Mars/Olympus"], "--timezone"),
    ):
        result = schedule(["audit", *args, "--server", "http://127.0.0.1:9", "--json"], tmp_path)
        assert result.returncode == 2, result.stderr
        assert field in json.loads(result.stdout)["error"]
