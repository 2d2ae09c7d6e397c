"""Many clinics: the sandbox serves several integrated accounts (own data, own rate window) and the fleet audit
runs every clinic's audit at once, one report each plus a fleet summary (in-process sandbox, fake clock)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from agent.errors import BadInput
from agent.fleet import Clinic, load_fleet, parse_accounts, run_fleet, write_fleet_summary
from agent.runs import AuditArgs
from agent.settings import Settings
from sandbox import SandboxConfig, SandboxTransport, create_sandbox, generate_sessions
from sandbox.testing import sandbox_client
from tools.clock import FakeClock

DAY = date(2026, 11, 24)
ACCOUNTS = ["clinic-a", "clinic-b", "clinic-c"]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "COVIU_TEAM_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COVIU_AGENT_STATE", str(tmp_path / "state" / "checkpoints.sqlite"))
    monkeypatch.setenv("COVIU_AGENT_TIMEZONE", "UTC")
    monkeypatch.setenv("COVIU_AGENT_PLANNER", "rules")
    return Settings()


async def test_each_account_has_its_own_data_and_rate_window() -> None:
    clock = FakeClock()
    sandbox = create_sandbox(SandboxConfig(accounts=["clinic-b"], rate_limit=2), clock=clock)
    generate_sessions(sandbox.store_for("clinic-b"), DAY, 5, seed=1)
    async with sandbox_client(sandbox) as client:
        sessions = "/proxy/sessions?integrated_account_id={}&limit=500"
        a = await client.get(sessions.format("sandbox"))
        b = await client.get(sessions.format("clinic-b"))
        assert len(b.json()["result"]) == len(a.json()["result"]) + 5
        assert (await client.get(sessions.format("sandbox"))).status_code == 200
        assert (await client.get(sessions.format("sandbox"))).status_code == 429  # its own window is full
        assert (await client.get(sessions.format("clinic-b"))).status_code == 200  # the other's is not
        assert (await client.get(sessions.format("clinic-x"))).status_code == 404


async def test_a_fleet_audit_gives_each_clinic_its_own_report_and_a_summary(settings: Settings, tmp_path: Path) -> None:
    clock = FakeClock()
    sandbox = create_sandbox(SandboxConfig(accounts=ACCOUNTS), clock=clock)
    for n, account in enumerate(ACCOUNTS):
        generate_sessions(sandbox.store_for(account), DAY, 20 * (n + 1), seed=n)
    transport = SandboxTransport(sandbox)
    clinics = parse_accounts(",".join(ACCOUNTS))
    args = AuditArgs(day=DAY.isoformat(), out_dir=tmp_path / "reports")
    runs = await run_fleet(settings, clinics, args, transport=transport, clock=clock)
    paths = write_fleet_summary(runs, args.out_dir)
    sessions = {r.clinic.account: r.result.report["totals"]["sessions"] for r in runs if r.result and r.result.report}
    assert [r.exit_code for r in runs] == [0, 0, 0], [r.error for r in runs]
    assert sessions["clinic-a"] < sessions["clinic-b"] < sessions["clinic-c"]  # each its own data
    for account in ACCOUNTS:
        asked = [r for r in sandbox.requests if r.query.get("integrated_account_id") == account]
        summaries = sum(1 for r in asked if r.resource == "session_summaries")
        assert summaries == sessions[account]  # each clinic's summaries from its own account
        assert (tmp_path / "reports" / account).is_dir()
    summary = json.loads(paths["json"].read_text())
    assert summary["totals"]["sessions"] == sum(sessions.values()) and summary["exit_code"] == 0
    assert "clinic-c" in paths["md"].read_text()

    # the next run of the same day: every clinic's cache is its own, so almost nothing is fetched again
    before = sandbox.count(resource="session_summaries")
    again = await run_fleet(settings, clinics, args, transport=transport, clock=clock)
    refetched = sandbox.count(resource="session_summaries") - before
    assert [r.exit_code for r in again] == [0, 0, 0]
    assert refetched < sum(sessions.values()) / 10


def test_fleet_files_are_read_and_bad_entries_named(tmp_path: Path) -> None:
    toml = tmp_path / "fleet.toml"
    toml.write_text('[[clinics]]\naccount = "a"\ntimezone = "Australia/Sydney"\n[[clinics]]\naccount = "b"\n')
    assert load_fleet(toml) == [Clinic(account="a", timezone="Australia/Sydney"), Clinic(account="b")]
    bad = tmp_path / "fleet.json"
    bad.write_text(json.dumps({"clinics": [{"account": "a"}, {"account": "b", "timezone": "Mars/Base"}]}))
    with pytest.raises(BadInput, match=r"clinics\[1\]: timezone: unknown time zone"):
        load_fleet(bad)
    with pytest.raises(BadInput, match="listed twice"):
        parse_accounts("a,b,a")
    with pytest.raises(BadInput, match=r"accounts: .*expected an id"):
        parse_accounts("a,b c")
