"""Operations from the command line: `--log-format json` (one redacted JSON object a line on stderr) and
`COVIU_AGENT_METRICS_FILE` (the Prometheus textfile a cron run leaves behind), on the embedded sandbox."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agent.logging import configure_logging
from tools.promfile import read as read_textfile

SANDBOX_TEAM = "7d1c4b2e-5a3f-4e8b-9c61-2f0a8d3e4b57"


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "COVIU_AGENT_SANDBOX": "1",
        "COVIU_AGENT_STATE": str(tmp_path / "state.db"),
    }
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env={**base, **env},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_audit_with_json_logs_and_a_metrics_file(tmp_path: Path):
    metrics = tmp_path / "textfile" / "coviu_agent.prom"
    done = cli(
        tmp_path,
        "--log-format",
        "json",
        "audit",
        "--out",
        str(tmp_path / "reports"),
        COVIU_AGENT_METRICS_FILE=str(metrics),
    )
    assert done.returncode == 0, done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert logged and all(set(entry) >= {"time", "level", "logger", "message"} for entry in logged)
    assert any(entry["logger"] == "graphs.audit" for entry in logged)
    samples = read_textfile(metrics)
    labels = (("clinic", SANDBOX_TEAM), ("graph", "audit"), ("team", SANDBOX_TEAM))  # no account: its team
    assert samples[("coviu_agent_last_run_exit_code", labels)] == 0
    runs = (
        ("clinic", SANDBOX_TEAM),
        ("exit_code", "0"),
        ("graph", "audit"),
        ("outcome", "done"),
        ("team", SANDBOX_TEAM),
    )
    assert samples[("coviu_agent_runs_total", runs)] == 1
    assert any(name == "coviu_agent_http_requests_total" for name, _ in samples)


def test_a_wrong_log_format_or_exporter_is_bad_input(tmp_path: Path):
    wrong = cli(tmp_path, "--log-format", "xml", "tools")
    assert wrong.returncode == 2 and "--log-format" in wrong.stderr
    wrong_env = cli(tmp_path, "tools", COVIU_AGENT_LOG_FORMAT="yaml")
    assert wrong_env.returncode == 2 and "COVIU_AGENT_LOG_FORMAT='yaml'" in wrong_env.stderr
    exporter = cli(tmp_path, "tools", OTEL_TRACES_EXPORTER="zipkin")
    assert exporter.returncode == 2 and "OTEL_TRACES_EXPORTER='zipkin'" in exporter.stderr


def test_json_log_lines_are_redacted(capsys: pytest.CaptureFixture[str]):
    secret = "sk-live-0123456789abcdefSECRET"
    configure_logging("INFO", [secret], json_lines=True)
    try:
        logging.getLogger("agent.test").info("token %s\nforged line", secret)
    finally:
        configure_logging("INFO")
    line = capsys.readouterr().err.strip()
    entry = json.loads(line)
    assert secret not in line and "[redacted]" in entry["message"] and "\n" not in line


def test_a_json_log_lines_traceback_is_redacted_before_it_is_escaped(capsys: pytest.CaptureFixture[str]):
    # a password with a quote or a backslash (a PostgreSQL URL's, unquoted) is escaped by JSON (\" and \\): redacting
    # the JSON text after that no longer finds it; the traceback must be redacted first
    secret = 'pa"ss\\word-0123456789'
    configure_logging("INFO", [secret], json_lines=True)
    try:
        try:
            raise ConnectionError(f"could not connect with password {secret}")
        except ConnectionError:
            logging.getLogger("agent.test").exception("the state store failed")
    finally:
        configure_logging("INFO")
    line = capsys.readouterr().err.strip()
    entry = json.loads(line)
    assert secret not in entry["exception"] and "[redacted]" in entry["exception"]
