"""The audit delivers: one message per clinic after each audit (complete, incomplete: exit 5, failed: exit 3), to a
real SMTP server and a webhook on loopback; the email's HTML is the To-do list, with the HTML report attached on a
channel allowed to carry patient data; a channel that is down never changes the audit's result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent.fleet import Clinic, run_fleet
from agent.runs import AuditArgs, AuditResult, run_audit
from agent.settings import Settings
from graphs.audit_store import SqliteAuditStore
from graphs.context import Services
from sandbox import Sandbox
from sandbox.config import FaultConfig
from tests.receivers import down_url, mailbox, webhook
from tools.clock import FakeClock
from tools.errors import RetriesExhaustedError

pytestmark = pytest.mark.profiles("default")


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings(COVIU_AGENT_STATE=str(tmp_path / "state.sqlite"), **env)  # type: ignore[arg-type]


async def audit(cfg: Settings, services: Services, tmp_path: Path, **args: object) -> AuditResult:
    store = SqliteAuditStore(str(tmp_path / "state.sqlite"))
    svc = dataclasses.replace(services, audit_store=store)
    try:
        return await run_audit(
            cfg, AuditArgs(out_dir=tmp_path / "reports", **args), services=svc, checkpointer=InMemorySaver()
        )
    finally:
        await store.aclose()


async def test_the_report_reaches_email_with_html_and_chat_without_names(services: Services, tmp_path: Path):
    with mailbox() as box, webhook() as hook:
        cfg = settings(tmp_path, COVIU_AGENT_NOTIFY=hook.url, COVIU_AGENT_NOTIFY_PATIENT_DATA=box.url())
        result = await audit(cfg, services, tmp_path)
        assert result.exit_code == 0
        sent_html = Path(result.paths["html"]).read_bytes()
        again = await audit(cfg, services, tmp_path, refresh=True)  # the same window again: not told twice
        assert again.exit_code == 0
    assert len(box.messages) == 1 and len(hook.posts) == 1
    report = result.report or {}
    named = [s for s in report["sessions"] if s.get("flags") and s.get("session_name")]
    assert named, "the demo day has flagged sessions with names"

    email = box.messages[0]
    assert "End-of-day audit" in str(email["Subject"])
    html = box.html()
    assert "<strong>To do</strong>" in html and "Chase intake forms" in html
    assert named[0]["session_name"] in html  # a patient-data channel gets the names
    attachments = box.attachments()
    assert list(attachments) == [Path(result.paths["html"]).name]
    assert attachments[Path(result.paths["html"]).name] == sent_html

    chat = hook.posts[0]
    assert "To do" in chat["message"] and "Chase intake forms" in chat["message"]
    assert chat["attachments"] == []  # chat gets the summary, not the file
    for session in named:
        assert session["session_name"] not in chat["message"]


async def test_an_incomplete_audit_says_what_failed_and_how_to_rerun(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
):
    from tests.conftest import make_services
    from tests.test_cli_incomplete import SummaryRefusal

    refusing = await make_services(SummaryRefusal(sandbox), clock, tmp_path / "reports")  # type: ignore[arg-type]
    try:
        with webhook() as hook:
            cfg = settings(tmp_path, COVIU_AGENT_NOTIFY=hook.url)
            result = await audit(cfg, refusing, tmp_path, day="2026-11-24")
    finally:
        await refusing.toolbox.aclose()
    assert result.exit_code == 5
    assert len(hook.posts) == 1
    post = hook.posts[0]
    assert post["title"].startswith("INCOMPLETE: ") and "End-of-day audit" in post["title"]
    assert "could not be checked" in post["message"]
    assert "`coviu-agent audit --date 2026-11-24`" in post["message"]


async def test_a_failed_audit_sends_what_failed_and_the_rerun_command(
    services: Services, sandbox: Sandbox, tmp_path: Path
):
    sandbox.set_faults(FaultConfig(server_errors=1.0, only_resources=["sessions"]))
    with webhook() as hook, pytest.raises(RetriesExhaustedError):  # the CLI's exit 3
        await audit(settings(tmp_path, COVIU_AGENT_NOTIFY=hook.url), services, tmp_path, day="2026-11-24")
    assert len(hook.posts) == 1
    assert hook.posts[0]["title"].startswith("FAILED end-of-day audit")
    assert "coviu-agent audit --date 2026-11-24" in hook.posts[0]["message"]


async def test_a_channel_that_is_down_leaves_the_audit_as_it_is(services: Services, tmp_path: Path):
    result = await audit(settings(tmp_path, COVIU_AGENT_NOTIFY=down_url()), services, tmp_path)
    assert result.exit_code == 0 and result.paths
    store = SqliteAuditStore(str(tmp_path / "state.sqlite"))
    rows = await store._query("SELECT kind, level, status FROM coviu_outbox", ())
    await store.aclose()
    assert rows == [("audit", "report", "pending")]  # kept for the next flush


async def test_a_fleet_sends_one_message_per_clinic_to_its_own_channel(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
):
    from sandbox import SandboxTransport

    with webhook() as one, webhook() as two:
        clinics = [
            Clinic(account="clinic-a", notify=one.url),  # type: ignore[arg-type]
            Clinic(account="clinic-b", notify=two.url),  # type: ignore[arg-type]
        ]
        for clinic in clinics:  # the sandbox serves each clinic's account
            if clinic.account not in sandbox.config.accounts:
                sandbox.config.accounts.append(clinic.account)
        runs = await run_fleet(
            settings(tmp_path, COVIU_AGENT_SANDBOX="1"),
            clinics,
            AuditArgs(out_dir=tmp_path / "fleet"),
            transport=SandboxTransport(sandbox),
            clock=clock,
        )
    assert [r.exit_code for r in runs] == [0, 0], [r.error for r in runs]
    assert len(one.posts) == 1 and len(two.posts) == 1
