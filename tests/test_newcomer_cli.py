"""A newcomer's first hour at the CLI, end to end: `coviu-agent sandbox serve` as a subprocess, then only the README's
three variables, a triage and an audit; a bare triage that must not write; --dry-run; output that fits a pipe;
-v that does not flood; --version.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox import (
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
    Sandbox,
    create_sandbox,
)
from tests.e2e import CLI, free_port, run_cli, serve

pytestmark = pytest.mark.e2e

REQUEST = "A priority patient needs a duty nurse now"


def readme_env(tmp: Path, base_url: str, **extra: str) -> dict[str, str]:
    """Only what the README says to set for the served sandbox (plus HOME, so state stays in the test's folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTO_", "COVIU_", "OPENAI_"))}
    env.update(
        TRUTO_BASE_URL=base_url,
        TRUTO_API_KEY="sandbox",
        TRUTO_INTEGRATED_ACCOUNT_ID="sandbox",
        HOME=str(tmp),
        XDG_STATE_HOME=str(tmp / "state"),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    env.update(extra)
    return env


def writes(sandbox: Sandbox) -> int:
    return sum(
        1 for r in sandbox.requests if r.resource is not None and r.truto_method in ("create", "update", "delete")
    )


@pytest.fixture
def served_subprocess(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`coviu-agent sandbox serve` as a newcomer starts it; yields (url, banner). Stopped by its PID."""
    port = free_port()
    env = readme_env(tmp_path, "unused")
    for key in ("TRUTO_BASE_URL", "TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID"):
        env.pop(key)
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*CLI, "sandbox", "serve", "--port", str(port)], env=env, cwd=tmp_path, stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"sandbox serve did not start: {log.read_text()}")
        yield url, log.read_text()
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def test_a_newcomer_reaches_a_triage_and_an_audit_with_the_readmes_three_variables(
    served_subprocess: tuple[str, str], tmp_path: Path
):
    url, banner = served_subprocess
    for demo_id in (DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID, DEMO_INTAKE_COLLECTION_ID):
        assert demo_id in banner
    env = readme_env(tmp_path, url)
    triage = run_cli(["triage", REQUEST, "--patient-name", "Ava Jenkins", "--json"], env, tmp_path)
    assert triage.returncode == 0, triage.stderr
    result = json.loads(triage.stdout)
    assert result["team_id"] == DEMO_TEAM_ID and result["session"]["session_name"] == "Triage – Ava Jenkins"
    assert result["figures"]["rate_limit_waits"] == {"count": 0, "seconds": 0.0}
    audit = run_cli(["audit", "--out", str(tmp_path / "reports"), "--json"], env, tmp_path)
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert report["team_id"] == DEMO_TEAM_ID and report["totals"]["sessions"] >= 1
    assert set(report["figures"]["rate_limit_waits"]) == {"count", "seconds"}
    written = json.loads(next((tmp_path / "reports").glob("*.json")).read_text(encoding="utf-8"))
    assert "figures" not in written  # the file is the report; the figures are the run's


def _served_env(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, str]]]:
    sandbox = create_sandbox()
    with serve(sandbox) as s:
        yield sandbox, readme_env(tmp_path, s.url)


@pytest.fixture
def account(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, str]]]:
    yield from _served_env(tmp_path)


def test_a_bare_triage_writes_nothing_and_names_the_patient_flag(account, tmp_path: Path):
    sandbox, env = account
    result = run_cli(["triage"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--patient-name" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sandbox.requests == []  # checked before any request


def test_the_patient_name_may_come_from_the_request(account, tmp_path: Path):
    _, env = account
    result = run_cli(["triage", f"{REQUEST}. Patient: Ava Jenkins", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["session"]["session_name"] == "Triage – Ava Jenkins"


def test_triage_dry_run_plans_and_sends_no_write(account, tmp_path: Path):
    sandbox, env = account
    result = run_cli(["triage", REQUEST, "--patient-name", "Ava Jenkins", "--dry-run", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["dry_run"] is True and out["session"] is None
    assert [c["tool"] for c in out["planned_calls"]] == [
        "create_a_coviu_session",
        "create_a_coviu_participant",
        "create_a_coviu_participant",
    ]
    assert writes(sandbox) == 0
    text = run_cli(["triage", REQUEST, "--patient-name", "Ava Jenkins", "--dry-run"], env, tmp_path)
    assert text.returncode == 0 and "Dry run: nothing was written" in text.stdout
    assert writes(sandbox) == 0


def test_tools_in_a_pipe_never_cut_a_name(account, tmp_path: Path):
    _, env = account
    listed = json.loads(run_cli(["tools", "--json"], env, tmp_path).stdout)
    names = {t["name"] for t in listed["tools"]}
    piped = run_cli(["tools"], {**env, "COLUMNS": "40"}, tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert "…" not in piped.stdout
    rows = [line.split("\t") for line in piped.stdout.splitlines() if not line.startswith("#")]
    assert rows[0] == ["name", "resource", "method", "required"]
    assert {row[0] for row in rows[1:]} == names


def test_verbose_is_ours_and_very_verbose_is_everyones(account, tmp_path: Path):
    _, env = account
    args = ["audit", "--out", str(tmp_path / "r")]
    quiet = run_cli([*args, "-v"], env, tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    for library in ("aiosqlite", "httpcore", "httpx"):
        assert f"DEBUG {library}" not in quiet.stderr, library
    loud = run_cli([*args, "-vv", "--thread-id", "loud"], env, tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "DEBUG aiosqlite" in loud.stderr and "DEBUG httpcore" in loud.stderr


def test_version_and_help_text_on_every_option():
    version = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("coviu-agent ")
    from typer.main import get_command

    from agent.cli import app

    missing = []

    def walk(command, path: str) -> None:
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and not getattr(param, "help", None):
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(get_command(app), "coviu-agent")
    assert missing == []


def test_a_read_only_mcp_server_exits_2_naming_the_missing_tools(account, tmp_path: Path):
    sandbox, env = account
    created = run_cli(["mcp", "create", "--methods", "read", "--json"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    mcp_url = json.loads(created.stdout)["url"]
    result = run_cli(["triage", REQUEST, "--patient-name", "Ava Jenkins"], {**env, "TRUTO_MCP_URL": mcp_url}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "create_a_coviu_session" in result.stderr and "planning steps" not in result.stderr
    assert writes(sandbox) == 0


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"COVIU_AGENT_STATE": "{tmp}"}, "COVIU_AGENT_STATE"),
        ({"TRUTO_BASE_URL": "http://[::1"}, "TRUTO_BASE_URL"),
    ],
)
def test_config_errors_are_one_line_exit_2_before_any_request(account, tmp_path: Path, variables, named):
    sandbox, env = account
    env = {**env, **{k: v.format(tmp=tmp_path) for k, v in variables.items()}}
    result = run_cli(["triage", REQUEST, "--patient-name", "Ava Jenkins"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sandbox.requests == []
