"""Summaries the session list makes unnecessary: an account whose session list carries the actual end and
every participant's entry time (the `variant` profile) is audited without fetching those summaries, and the report is
the one a full fetch (`refresh`) gives, on every profile. A list that lacks any of it is never guessed from."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from graphs.audit import build_audit_graph
from graphs.audit_reconcile import summary_facts_from_list
from graphs.audit_store import SqliteAuditStore
from graphs.context import Context, Services
from sandbox import Sandbox, generate_sessions
from tests.conftest import make_services
from tools.clock import FakeClock

YESTERDAY = date(2026, 11, 24)


async def audit(services: Services, thread: str, **inputs: Any) -> dict[str, Any]:
    graph = build_audit_graph().compile()
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 2000, "max_concurrency": 4}
    payload: Any = inputs
    out = await graph.ainvoke(payload, config, context=Context(services=services))
    report = dict(out["report"])
    report.pop("generated_at")
    return report


async def fresh_audit(sandbox: Sandbox, clock: FakeClock, tmp_path: Path, name: str, **inputs: Any) -> tuple[Any, int]:
    """One audit on an empty summary cache of its own: the report and the summaries it fetched."""
    store = SqliteAuditStore(str(tmp_path / name / "state.sqlite"))
    services = await make_services(sandbox, clock, tmp_path / name / "reports", audit_store=store)
    before = sandbox.count(resource="session_summaries")
    try:
        report = await audit(services, name, **inputs)
    finally:
        await services.toolbox.aclose()
        await store.aclose()
    return report, sandbox.count(resource="session_summaries") - before


async def test_the_report_equals_a_full_fetch_and_the_list_saves_summaries_where_it_tells_everything(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    ids = generate_sessions(sandbox.store, YESTERDAY, 80, seed=5)
    # A participant who entered first and was canceled afterwards: the summary counts their entry, so the list must
    # show canceled participants too (the audit asks for them) or its actual start would be later than the summary's.
    ended = [sandbox.store.sessions[sid] for sid in ids if sandbox.store.sessions[sid].actual_end_time is not None]
    target = ended[0]
    people = [p for p in sandbox.store.session_participants(target, True) if p.entry_time is not None]
    first = min(people, key=lambda p: p.entry_time or target.start_time)
    assert first.entry_time is not None
    first.entry_time -= timedelta(minutes=3)
    first.deleted_at = first.entry_time + timedelta(minutes=1)

    listed, fetched = await fresh_audit(sandbox, clock, tmp_path, "listed")
    full, fetched_all = await fresh_audit(sandbox, clock, tmp_path, "full", refresh=True)

    sessions = full["totals"]["sessions"]
    assert fetched_all == sessions > 80 and full["summaries_from_list"] == 0
    saved = listed.pop("summaries_from_list")
    full.pop("summaries_from_list")
    assert listed == full
    assert fetched == sessions - saved
    row = next(r for r in listed["sessions"] if r["session_id"] == target.session_id)
    assert row["actual_start"] is not None and row["actual_start"].startswith(first.entry_time.strftime("%Y-%m-%dT%H"))
    config = sandbox.config
    if config.session_actual_end_listed and config.participant_entry_listed:
        # every session with a recorded end is told by the list; no-shows and calls with no end are fetched
        with_end = sum(1 for r in full["sessions"] if r["actual_end"] is not None)
        assert saved == with_end > sessions / 2
        assert fetched < sessions / 2
    else:
        assert saved == 0 and fetched == sessions


@pytest.mark.profiles("variant")
async def test_the_markdown_report_says_how_many_summaries_were_not_needed(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    generate_sessions(sandbox.store, YESTERDAY, 30, seed=5)
    report, _ = await fresh_audit(sandbox, clock, tmp_path, "md")
    markdown = next((tmp_path / "md" / "reports").glob("*.md")).read_text()
    assert report["summaries_from_list"] > 0
    assert f"Summaries not needed: {report['summaries_from_list']} " in markdown


@pytest.mark.parametrize(
    "session",
    [
        {"actual_end_time": "2026-11-24T10:30:00Z", "participants": [{"role": "host"}]},  # no entry_time field
        {"actual_end_time": "2026-11-24T10:30:00Z"},  # no participants
        {"actual_end_time": "2026-11-24T10:30:00Z", "participants": "nobody"},
        {"actual_end_time": None, "participants": [{"entry_time": "2026-11-24T10:00:00Z"}]},  # no end
        {"participants": [{"entry_time": "2026-11-24T10:00:00Z"}]},
        {"actual_end_time": "not a time", "participants": [{"entry_time": "2026-11-24T10:00:00Z"}]},
        {"actual_end_time": "2026-11-24T10:30:00Z", "participants": [{"entry_time": "soon"}]},
        {"actual_end_time": "2026-11-24T10:30:00Z", "participants": [{"entry_time": None}, "a name"]},
    ],
)
def test_a_list_that_lacks_anything_the_summary_tells_is_not_guessed_from(session: dict[str, Any]) -> None:
    assert summary_facts_from_list(session) is None


def test_a_list_that_tells_everything_gives_the_summarys_facts() -> None:
    session = {
        "actual_end_time": "2026-11-24T10:30:00Z",
        "participants": [
            {"entry_time": None},
            {"entry_time": "2026-11-24T10:02:00Z"},
            {"entry_time": "2026-11-24T10:01:00Z"},
        ],
    }
    expected = {"actual_start": "2026-11-24T10:01:00Z", "actual_end": "2026-11-24T10:30:00Z"}
    assert summary_facts_from_list(session) == expected
