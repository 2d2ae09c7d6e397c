"""What the commands print, for a person and for a pipe (issue 25): each downloaded file listed once and no empty
folder for a missing recording; `mcp list` as tab-separated lines when piped; a cached audit's pace and ETA."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from tests.test_exit_codes import Invoke, cli, keep_logging  # noqa: F401  (fixtures)


def test_recordings_download_lists_each_file_once_and_leaves_no_empty_folder(cli: Invoke, tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "recordings"
    result = cli("recordings", "--download", str(target), COVIU_AGENT_LOG_LEVEL="WARNING")  # a terminal's level
    assert result.exit_code == 0, result.output
    files = [p for p in target.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert files
    for path in files:
        relative = path.relative_to(target).as_posix()
        assert result.output.count(relative) == 1, (relative, result.output)
    assert "missing" in result.output  # the demo day has submissions without an audio recording
    empty = [p for p in target.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert empty == []


def test_mcp_list_piped_is_one_tab_separated_line_per_server(cli: Invoke) -> None:  # noqa: F811
    result = cli("mcp", "list")  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines and all(len(line.split("\t")) == 5 for line in lines), lines
    assert "MCP servers" not in result.stdout and "None" not in result.stdout and "┃" not in result.stdout


def test_mcp_list_at_a_terminal_says_server_in_the_singular_and_never_none() -> None:
    from rich.console import Console

    from agent.cli import mcp as mcp_cli

    console = Console(file=io.StringIO(), width=120)
    server = {"id": "m1", "name": "demo", "methods": [], "tags": [], "expires_at": None}
    original = mcp_cli.out
    try:
        mcp_cli.out = console  # type: ignore[assignment]
        mcp_cli.print_servers([server], at_terminal=True)
    finally:
        mcp_cli.out = original
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "1 MCP server " in shown and "MCP servers" not in shown and "never" in shown and "None" not in shown


def test_a_cached_audit_paces_only_the_summaries_it_fetches(caplog: pytest.LogCaptureFixture) -> None:
    from rich.console import Console

    from agent.cli.progress import AuditProgress

    now = [0.0]
    progress = AuditProgress(Console(file=io.StringIO()), clock=lambda: now[0], terminal=False)
    with caplog.at_level(logging.INFO, logger="agent.progress"), progress:
        progress("sessions", 1000, 1000)
        now[0] += 0.0002
        progress("cached", 300, 0)  # 30% at once from the cache
        for _ in range(100):  # then 5 fetched a second
            now[0] += 0.2
            progress("summaries", 1, 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.progress"]
    assert lines[0] == "audit progress: 301/1000 summaries (30%; 300 cached)"  # no pace from a burst
    assert "/s" not in lines[0] and "left" not in lines[0]
    last = lines[-1]
    assert "400/1000" in last and "5.0/s" in last and "about 2 min 00 s left" in last, lines


def test_the_fleet_summary_escapes_each_cell_once() -> None:
    from agent.fleet import fleet_markdown

    clinic = {
        "account": "ia_1",
        "name": None,
        "totals": None,
        "exit_code": 2,
        "error": "not found: integrated account not found: ia_1",
        "reports": {},
    }
    summary = {"totals": {"clinics": 1, "failed": 1, "sessions": 0, "billable_minutes": 0}, "clinics": [clinic]}
    row = fleet_markdown(summary).splitlines()[-1]
    assert row.startswith("| ia\\_1 |")
    assert row.endswith("| 2 | not found: integrated account not found: ia\\_1 |"), row
    assert "\\\\" not in row


def test_the_served_sandboxs_public_token_is_not_redacted_out_of_the_account_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.settings import Settings

    monkeypatch.setenv("TRUTO_API_KEY", "sandbox")
    monkeypatch.setenv("TRUTO_INTEGRATED_ACCOUNT_ID", "sandbox")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-a-real-secret-value")
    secrets = Settings(_env_file=None).secrets()  # type: ignore[call-arg]
    assert "sandbox" not in secrets and "sk-a-real-secret-value" in secrets
