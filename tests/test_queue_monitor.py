"""`queue watch` as the clinic's monitor: alert, escalation and "seen" once per call and level, remembered across
restarts in the state store, names only on channels allowed to carry patient data, quiet hours; delivered to a
real webhook receiver on loopback."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.runs import QueueCheck, QueueWatchArgs, run_queue_watch
from agent.settings import Settings
from graphs.audit_store import SqliteAuditStore
from graphs.context import Services
from graphs.queue import queue_events
from sandbox import DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID, Sandbox
from tests.receivers import down_url, webhook
from tools.clock import FakeClock

pytestmark = pytest.mark.profiles("default")


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings(COVIU_AGENT_STATE=str(tmp_path / "state.sqlite"), **env)  # type: ignore[arg-type]


async def watch(cfg: Settings, services: Services, tmp_path: Path, **args: Any) -> QueueCheck:
    """One check by a fresh watcher (a restart) on the same state store."""
    checks: list[QueueCheck] = []
    store = SqliteAuditStore(str(tmp_path / "state.sqlite"))
    svc = dataclasses.replace(services, audit_store=store)
    await run_queue_watch(cfg, QueueWatchArgs(max_checks=1, **args), checks.append, services=svc)
    await store.aclose()
    return checks[0]


def levels(posts: list[dict[str, Any]]) -> list[str]:
    return sorted(p["title"].split(",")[0] for p in posts)


async def test_alert_escalation_and_seen_once_each_across_restarts(
    services: Services, sandbox: Sandbox, clock: FakeClock, tmp_path: Path
):
    with webhook() as hook:
        cfg = settings(tmp_path, COVIU_AGENT_NOTIFY=hook.url)
        first = await watch(cfg, services, tmp_path)
        # the demo queue: 17, 26 and 40 minutes are over 15; 40 is over the escalation threshold (30)
        assert levels(hook.posts) == ["ESCALATION", "Queue alert", "Queue alert"]
        assert sorted(e["level"] for e in first.events or []) == ["alert", "alert", "escalation"]
        assert first.delivery and first.delivery["sent"] == 3

        again = await watch(cfg, services, tmp_path)  # a restarted watcher remembers what it raised
        assert again.events == [] and len(hook.posts) == 3

        clock.advance(5 * 60)  # 26 -> 31: escalates; 17 -> 22: already alerted
        await watch(cfg, services, tmp_path)
        assert levels(hook.posts[3:]) == ["ESCALATION"]

        longest = max(
            sandbox.store.queue_calls(DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID),
            key=lambda c: (clock.now() - c.joined_at) if sandbox.store.is_waiting(c) else timedelta(0),
        )
        longest.answered_at = clock.now()
        check = await watch(cfg, services, tmp_path)
        assert [(e["level"], e["outcome"]) for e in check.events or []] == [("seen", "answered")]
        assert levels(hook.posts[4:]) == ["Seen"]
        await watch(cfg, services, tmp_path)
    assert len(hook.posts) == 5
    for post in hook.posts:  # a channel not marked for patient data never gets a name
        assert "Patient:" not in post["message"]
        assert DEMO_WAITING_QUEUE_ID in post["message"]


async def test_the_patient_name_goes_only_to_a_patient_data_channel(services: Services, tmp_path: Path):
    with webhook() as plain, webhook() as allowed:
        cfg = settings(tmp_path, COVIU_AGENT_NOTIFY=plain.url, COVIU_AGENT_NOTIFY_PATIENT_DATA=allowed.url)
        check = await watch(cfg, services, tmp_path)
    assert len(plain.posts) == len(allowed.posts) == 3
    assert all("Patient: **" in p["message"] for p in allowed.posts)
    assert not any("Patient" in p["message"] for p in plain.posts)
    assert "name" not in json.dumps(check.as_dict())  # the JSON line (and logs) carry ids, not names


async def test_quiet_hours_drop_alerts_and_remember_them(services: Services, clock: FakeClock, tmp_path: Path):
    with webhook() as hook:
        quiet = settings(tmp_path, COVIU_AGENT_NOTIFY=hook.url, COVIU_AGENT_QUIET_HOURS="08:30-09:30")
        check = await watch(quiet, services, tmp_path)  # START is 09:00 UTC
        assert check.quiet and len(check.events or []) == 3
        assert hook.posts == []
        clock.advance(45 * 60)  # 09:45: quiet hours are over; the calls alerted on in quiet hours stay dropped
        await watch(quiet, services, tmp_path)
    # only new levels are sent: four calls now over 30 min escalate; the one that escalated in quiet hours does not
    assert len(hook.posts) == 4 and all("ESCALATION" in p["title"] for p in hook.posts)
    assert not any("85 min" in p["title"] for p in hook.posts)


async def test_a_channel_that_is_down_never_stops_the_watcher(services: Services, tmp_path: Path):
    cfg = settings(tmp_path, COVIU_AGENT_NOTIFY=down_url())
    check = await watch(cfg, services, tmp_path)
    assert check.summary["waiting"] == 5
    assert check.delivery and check.delivery["failed"] == 1 and check.delivery["sent"] == 0
    again = await watch(cfg, services, tmp_path)  # the next check goes on; the failed send waits for its retry
    assert again.summary["waiting"] == 5 and again.events == []


async def test_without_a_channel_the_check_is_as_before(services: Services, tmp_path: Path):
    check = await watch(settings(tmp_path), services, tmp_path)
    assert set(check.as_dict()) == {"team_id", "queue_id", "queue", "alerts"}
    assert len(check.alerts) == 3 and check.alerts[0].startswith("Call ")


def test_queue_events_first_seen_over_the_escalation_is_one_event():
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    calls = [{"callId": "c1", "joinedAt": (now - timedelta(minutes=50)).isoformat(), "details": '{"firstName":"Ava"}'}]
    events = queue_events(calls, now, 15, 30, {})
    assert [(e["level"], e["name"]) for e in events] == [("escalation", "Ava")]
    assert queue_events(calls, now, 15, 30, {"c1": {"escalation"}}) == []
    assert [e["level"] for e in queue_events([], now, 15, 30, {"c1": {"escalation"}})] == ["seen"]


def test_queue_watch_once_json_and_queue_status_on_the_embedded_sandbox(tmp_path: Path):
    from agent.cli import app

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTO_", "COVIU_", "OPENAI_"))}
    env.update(COVIU_AGENT_STATE=str(tmp_path / "state.sqlite"), COVIU_AGENT_SANDBOX="1", HOME=str(tmp_path))
    runner = CliRunner()
    before = runner.invoke(app, ["queue", "status", "--json", "--stale-after", "120"], env=env)
    assert before.exit_code == 3 and json.loads(before.stdout)["last_ok"] is None
    with webhook() as hook:
        env["COVIU_AGENT_NOTIFY"] = hook.url
        result = runner.invoke(app, ["queue", "watch", "--once", "--json"], env=env)
        assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["delivery"]["sent"] == len(hook.posts) == 3
    assert "checked_at" in line
    status = runner.invoke(app, ["queue", "status", "--json", "--stale-after", "120"], env=env)
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert data["last_ok"]["waiting"] == 5 and data["outbox"] == {"sent": 3}
    assert str(hook.port) not in result.stdout + status.stdout


def test_escalate_minutes_below_the_threshold_is_bad_input(tmp_path: Path):
    from agent.cli import app

    result = CliRunner().invoke(
        app,
        ["queue", "watch", "--threshold-minutes", "15", "--escalate-minutes", "10"],
        env={"HOME": str(tmp_path), "COVIU_AGENT_SANDBOX": "1"},
    )
    assert result.exit_code == 2 and "--escalate-minutes" in result.output
