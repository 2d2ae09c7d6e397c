"""Bounds through the CLI: a Retry-After past the budget ends the audit at once with exit 3 naming the clinic
time; `--max-wait` is checked before anything is sent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sandbox import FaultConfig, SandboxConfig, create_sandbox
from tests.e2e import cli_env, run_cli, serve

pytestmark = pytest.mark.e2e


def test_retry_after_an_hour_ends_the_audit_within_seconds_naming_the_clinic_time(tmp_path: Path) -> None:
    sandbox = create_sandbox(SandboxConfig(faults=FaultConfig(rate_limit_storm_next=100, retry_after_value="3600")))
    with serve(sandbox) as served:
        env = cli_env(tmp_path, served.url, COVIU_AGENT_TIMEZONE="Australia/Sydney")
        started = time.monotonic()
        result = run_cli(["audit", "--json", "--out", str(tmp_path / "reports")], env, tmp_path, timeout=90)
        elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert elapsed < 30
    assert "rate limited until" in result.stderr and "(clinic time)" in result.stderr
    assert "AEDT" in result.stderr or "AEST" in result.stderr
    assert "rate limited until" in json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())
    assert sandbox.count(status=429) == 1, "the wait was not started and nothing was retried"


def test_max_wait_within_the_budget_waits_the_storm_out(tmp_path: Path) -> None:
    sandbox = create_sandbox(SandboxConfig(faults=FaultConfig(rate_limit_storm_next=1, retry_after_value="2")))
    with serve(sandbox) as served:
        env = cli_env(tmp_path, served.url)
        result = run_cli(["audit", "--json", "--max-wait", "5", "--out", str(tmp_path / "r")], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert sandbox.count(status=429) == 1


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_max_wait_is_bad_input(value: str, tmp_path: Path) -> None:
    result = run_cli(["audit", "--max-wait", value], cli_env(tmp_path, "http://127.0.0.1:9"), tmp_path)
    assert result.returncode == 2
    assert "--max-wait" in result.stderr
