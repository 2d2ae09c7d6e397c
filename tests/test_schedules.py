"""The schedule runs (agent/schedules.py) return typed results and typed failures; the CLI only prints them."""

from __future__ import annotations

import pytest

from agent.errors import exit_code_for
from agent.schedules import ScheduleServerError, run_schedule_list, scheduled_cron

CRON = {
    "cron_id": "c1",
    "assistant_id": "audit",
    "schedule": "0 6 * * *",
    "timezone": "Australia/Sydney",
    "next_run_date": "2026-12-07T19:00:00+00:00",
    "payload": {"context": {"team_id": "team-1"}},
    "on_run_completed": "delete",
}


def test_a_cron_is_read_in_the_clinics_zone_and_says_whose_it_is() -> None:
    cron = scheduled_cron(CRON, "http://127.0.0.1:2024")
    assert cron.next_run_local == "2026-12-08 06:00 AEDT" and cron.clinic == "team_id team-1"
    assert "replaced" not in cron.as_dict()
    made = scheduled_cron(CRON, "http://127.0.0.1:2024", replaced=["c0"])
    assert made.as_dict()["replaced"] == ["c0"] and list(made.as_dict())[-1] == "replaced"


async def test_an_unreachable_server_is_an_upstream_failure_naming_it() -> None:
    server = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(ScheduleServerError, match=f"cannot reach the LangGraph server at {server}") as caught:
        await run_schedule_list(server)
    assert exit_code_for(caught.value) == 3
