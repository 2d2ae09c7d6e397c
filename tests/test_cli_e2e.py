"""The CLI as a subprocess against the sandbox served on loopback: contract shapes and exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sandbox import SandboxConfig, create_sandbox
from sandbox.profiles import Profile
from tests.e2e import CLI, FAKE_TRUTO_TOKEN, cli_env, free_port, run_cli, serve

pytestmark = pytest.mark.e2e


@pytest.fixture
def served():
    with serve(create_sandbox()) as s:
        yield s


def test_tools_json(served, tmp_path: Path):
    result = run_cli(["tools", "--json"], cli_env(tmp_path, served.url), tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["catalog"] == "tools" and payload["source"] == "sandbox"  # the served sandbox's account id
    names = {t["name"] for t in payload["tools"]}
    assert {"list_all_coviu_sessions", "create_a_coviu_participant", "delete_a_coviu_session_by_id"} <= names
    create = next(t for t in payload["tools"] if t["name"] == "create_a_coviu_session")
    assert create["resource"] == "sessions" and create["method"] == "create"
    assert set(create["required"]) == {"session_name", "start_time", "end_time"}
    assert FAKE_TRUTO_TOKEN not in result.stdout + result.stderr


def test_triage_json_matches_the_contract(served, tmp_path: Path):
    result = run_cli(
        ["triage", "A priority patient needs a duty nurse now", "--patient-name", "X", "--json"],
        cli_env(tmp_path, served.url),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    # the contract's keys, plus `figures`, `planner` and `source` (docs/contract.md)
    assert set(out) == {
        "source",
        "team_id",
        "queue_id",
        "queue",
        "alerts",
        "session",
        "participants",
        "reply",
        "figures",
        "planner",
    }
    assert out["planner"] == "rules"
    assert out["source"] == "sandbox"  # the served sandbox's account
    # the contract's three keys, plus `unknown_wait`: waiting calls whose join time could not be read (never "short")
    assert set(out["queue"]) == {"waiting", "longest_wait_minutes", "over_threshold", "unknown_wait"}
    assert out["queue"]["unknown_wait"] == []
    assert set(out["session"]) == {"session_id", "session_name", "start_time", "end_time"}
    assert sorted(p["role"] for p in out["participants"]) == ["guest", "host"]
    for p in out["participants"]:
        assert set(p) == {"role", "display_name", "participant_id", "entry_url"}
        assert p["entry_url"] in out["reply"]
    sb = served.sandbox
    assert sb.count(resource="waiting_queue_calls", truto_method="list") == 1
    assert sb.count(resource="sessions", truto_method="create") == 1
    assert sb.count(resource="participants", truto_method="create") == 2


def test_audit_writes_three_files_and_prints_the_report(served, tmp_path: Path):
    result = run_cli(["audit", "--out", str(tmp_path / "r"), "--json"], cli_env(tmp_path, served.url), tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"schema_version", "complete", "team_id", "collection_id", "window", "generated_at", "totals"} <= set(report)
    assert report["complete"] is True
    files = sorted(p.suffix for p in (tmp_path / "r").iterdir())
    assert files == [".html", ".json", ".md"]
    for p in (tmp_path / "r").iterdir():
        assert (p.stat().st_mode & 0o777) == 0o600
    figures = report.pop("figures")  # the run's figures are printed, not written
    assert set(figures["rate_limit_waits"]) == {"count", "seconds"}
    assert json.loads(next((tmp_path / "r").glob("*.json")).read_text()) == report


@pytest.mark.parametrize(
    "args",
    [
        ["triage", "--duration-minutes", "-5"],
        ["triage", "--wait-threshold-minutes", "-1"],
        ["triage", "--queue-id", "../../etc"],
        ["audit", "--date", "2026-02-30"],
        ["audit", "--since", "2026-11-25T00:00:00Z", "--until", "2026-11-24T00:00:00Z"],
        ["audit", "--since", "yesterday", "--until", "2026-11-24T00:00:00Z"],
        ["audit", "--date", ""],
        ["audit", "--out", ""],
        ["audit", "--date", "0001-01-01"],
        ["queue", "watch", "--interval", "0"],
    ],
)
def test_bad_flags_exit_2_before_any_request(served, tmp_path: Path, args: list[str]):
    before = len(served.sandbox.requests)
    result = run_cli([*args, "--json"], cli_env(tmp_path, served.url), tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2
    assert len(served.sandbox.requests) == before


def test_missing_account_id_is_a_clear_configuration_error(tmp_path: Path):
    env = cli_env(tmp_path, "http://127.0.0.1:9")
    del env["TRUTO_INTEGRATED_ACCOUNT_ID"]
    result = run_cli(["tools"], env, tmp_path)
    assert result.returncode == 2
    assert "TRUTO_API_KEY is set but TRUTO_INTEGRATED_ACCOUNT_ID is not" in result.stderr


def test_unreachable_truto_exits_3(tmp_path: Path):
    result = run_cli(["tools", "--json"], cli_env(tmp_path, f"http://127.0.0.1:{free_port()}"), tmp_path)
    assert result.returncode == 3
    assert "connect" in json.loads(result.stdout)["error"]


def test_queue_watch_once_alerts_on_the_embedded_sandbox(tmp_path: Path, sandbox_profile: Profile):
    env = cli_env(tmp_path, "http://unused")
    for key in ("TRUTO_BASE_URL", "TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID"):
        env.pop(key)
    # the embedded sandbox plays this run's profile (the product only sees how the account answers)
    env["COVIU_SANDBOX_PROFILE"] = sandbox_profile.name
    if sandbox_profile.seed is not None:
        env["COVIU_SANDBOX_SEED"] = str(sandbox_profile.seed)
    result = run_cli(["queue", "watch", "--once", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)
    assert check["queue"]["waiting"] == 5
    assert len(check["alerts"]) == 3  # 17, 26 and 40 minutes are over 15
    assert "embedded Coviu sandbox" in result.stderr


def test_killed_audit_resumes_without_refetching(tmp_path: Path):
    """SIGKILL an audit mid-run; the rerun finishes from the checkpoint with the same report."""
    config = SandboxConfig(rate_limit=500)
    sandbox = create_sandbox(config)
    day = sandbox.clock.now().date()
    from datetime import timedelta

    yesterday = day - timedelta(days=1)
    sandbox.store.generate_sessions(yesterday, 700, seed=3)
    with serve(sandbox) as s:
        env = cli_env(tmp_path, s.url, TRUTO_RATE_LIMIT_PER_10S="500")
        args = ["audit", "--date", yesterday.isoformat(), "--out", str(tmp_path / "r"), "--json"]
        proc = subprocess.Popen([*CLI, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while sandbox.count(resource="session_summaries") < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first_run = sandbox.count(resource="session_summaries")
        assert 250 < first_run < 690  # killed after the first batch was checkpointed, before the end
        resumed = run_cli(args, env, tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming audit thread" in resumed.stderr
        refetched = sandbox.count(resource="session_summaries") - first_run
        report = json.loads(resumed.stdout)
        total = report["totals"]["sessions"]
        assert refetched < total - 200  # finished batches were not fetched again
        # an uninterrupted run (fresh state) gives the identical report
        clean = run_cli(args, cli_env(tmp_path / "clean", s.url, TRUTO_RATE_LIMIT_PER_10S="500"), tmp_path)
        assert clean.returncode == 0, clean.stderr
        fresh = json.loads(clean.stdout)
        report.pop("generated_at")
        report.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
        fresh.pop("generated_at")
        fresh.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
        assert report == fresh
