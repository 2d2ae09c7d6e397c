"""A cached summary lives only while the session list agrees with it. A session whose actual end is
corrected upstream (the list and the summary both show the new end) is fetched again on the next run, and the report
says how many summaries came from the cache (in-process sandbox, fake clock, every profile with the end listed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from graphs.audit_store import SqliteAuditStore
from reporting.audit_report import render_html, render_markdown
from sandbox import Sandbox, SandboxConfig
from sandbox.profiles import Profile
from tests.conftest import make_services
from tests.test_audit_cache import run, summaries_fetched
from tools.clock import FakeClock


@pytest.fixture
def sandbox_config(sandbox_profile: Profile) -> SandboxConfig:
    """Every profile, with the session list showing each session's actual end (Coviu's OAS field) but no entry times:
    the summaries a list makes unnecessary are tests/test_audit_list_facts.py's; here the cache decides."""
    return sandbox_profile.config.model_copy(
        update={"session_actual_end_listed": True, "participant_entry_listed": False}
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteAuditStore]:
    opened = SqliteAuditStore(str(tmp_path / "state.sqlite"))
    yield opened
    await opened.aclose()


def billed(report: dict[str, Any], session_id: str) -> Any:
    return next(r["billable_minutes"] for r in report["sessions"] if r["session_id"] == session_id)


async def test_a_corrected_actual_end_is_fetched_again_and_billed_as_refresh_bills_it(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, store: SqliteAuditStore
) -> None:
    services = await make_services(sandbox, clock, tmp_path / "reports", audit_store=store)
    try:
        first = await run(services, "first", provenance=True)
        ended = [r for r in first["sessions"] if r["actual_end"] and not r["flags"] and r["billable_minutes"]]
        assert ended, "the day has billed sessions"
        target = ended[0]["session_id"]
        session = sandbox.store.sessions[target]
        assert session.actual_end_time is not None
        sandbox.store.complete_call(target, session.actual_end_time + timedelta(minutes=7))  # corrected upstream
        before = summaries_fetched(sandbox)
        again = await run(services, "again", provenance=True)
        refetched = summaries_fetched(sandbox) - before
        before = summaries_fetched(sandbox)
        refreshed = await run(services, "refresh", provenance=True, refresh=True)
        every = summaries_fetched(sandbox) - before  # refresh reads every summary the audit needs
    finally:
        await services.toolbox.aclose()
    assert billed(again, target) == billed(refreshed, target) == ended[0]["billable_minutes"] + 7
    assert refetched >= 1
    assert first["summaries_from_cache"] == 0
    assert again["summaries_from_cache"] == every - refetched >= 1  # the rest came from the cache
    assert refreshed["summaries_from_cache"] == 0
    text = render_markdown(again, narrative=None, zone=services.zone, overrun_threshold_minutes=10)
    assert f"Summaries from the cache: {again['summaries_from_cache']} (each unchanged" in text
    html = render_html(again, narrative=None, zone=services.zone, overrun_threshold_minutes=10)
    assert f"Summaries from the cache: {again['summaries_from_cache']} (each unchanged" in html


def test_the_listed_digest_sees_state_status_update_time_and_actual_end_but_not_names() -> None:
    from graphs.audit_reconcile import listed_digest

    base = {"session_id": "s", "session_name": "Ava", "start_time": "a", "end_time": "b", "participants": [{}]}
    digest = listed_digest(base)
    assert listed_digest({**base, "session_name": "Someone else", "participants": []}) == digest
    for key, value in (
        ("actual_end_time", "2026-11-24T10:34:00Z"),
        ("state", "ended"),
        ("status", "corrected"),
        ("updated_at", "2026-11-25T08:00:00Z"),
        ("end_time", "c"),
    ):
        assert listed_digest({**base, key: value}) != digest, key


def test_the_listed_digest_sees_every_fact_the_list_shows_whatever_its_name_or_depth() -> None:
    """`everything the list shows about that session`: an end under another name (`ended_at`), a duration, a fact
    nested in an object, a participant's state or removal: any change fetches the summary again. Names do not."""
    from graphs.audit_reconcile import listed_digest

    guest = {"participant_id": "p", "role": "guest", "display_name": "Ava", "state": "joined"}
    base = {"session_id": "s", "session_name": "Ava", "start_time": "a", "end_time": "b", "participants": [guest]}
    digest = listed_digest(base)
    renamed = {**base, "session_name": "Someone", "participants": [{**guest, "display_name": "Someone"}]}
    assert listed_digest(renamed) == digest
    for key, value in (
        ("ended_at", "2026-11-24T10:34:00Z"),
        ("duration_minutes", 34),
        ("timing", {"actual_end": "2026-11-24T10:34:00Z"}),
        ("participants", [{**guest, "state": "left"}]),
        ("participants", [{**guest, "deleted_at": "2026-11-24T10:40:00Z"}]),
        ("participants", [guest, {"participant_id": "q", "role": "host"}]),
    ):
        assert listed_digest({**base, key: value}) != digest, key
