"""The audit's window arithmetic, one module (graphs/audit_window.py): a clinic day and back, and the spans listed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from graphs.audit_window import day_of_window, resolve_window, sessions_span, submissions_span
from reporting.audit_flags import FLAG_ORDER, TOTALS_KEYS, Flag, count_totals

NOW = datetime(2026, 11, 25, 3, tzinfo=UTC)


@pytest.mark.parametrize("day", ["2026-04-05", "2026-10-04", "2026-11-24", "2026-02-28"])
@pytest.mark.parametrize("zone", ["Australia/Sydney", "America/New_York", "UTC"])
def test_a_clinic_day_and_its_window_are_one_another(day: str, zone: str) -> None:
    since, until, label = resolve_window(ZoneInfo(zone), NOW, day=day)
    assert label == day
    assert day_of_window(since, until, ZoneInfo(zone)) == date.fromisoformat(day)
    assert day_of_window(since, until + timedelta(hours=1), ZoneInfo(zone)) is None


def test_the_lists_span_the_window_with_their_slack() -> None:
    since, until, _ = resolve_window(ZoneInfo("UTC"), NOW, day="2026-11-20")
    assert sessions_span(since, until) == (since - timedelta(hours=24), until)
    # forms up to a week either side, never past now (unless the window itself ends later)
    assert submissions_span(since, until, NOW) == (since - timedelta(days=7), NOW)
    assert submissions_span(since, until, NOW + timedelta(days=30)) == (
        since - timedelta(days=7),
        until + timedelta(days=7),
    )


def test_the_totals_are_counted_by_flag_in_the_contracts_order() -> None:
    rows = [
        {"flags": [Flag.MISSING_FORM.value, Flag.OVERRUN.value], "billable_minutes": 31},
        {"flags": [Flag.SUMMARY_UNAVAILABLE.value], "billable_minutes": None},
        {"flags": [], "billable_minutes": 12},
    ]
    totals = count_totals(rows)
    assert tuple(totals) == TOTALS_KEYS
    assert totals == {
        "sessions": 3,
        "missing_forms": 1,
        "pending_forms": 0,
        "overruns": 1,
        "no_actual_end": 0,
        "billable_minutes": 43,
        "summary_unavailable": 1,
        "implausible_times": 0,
    }
    assert FLAG_ORDER[0] == "missing_form" and len(FLAG_ORDER) == len(Flag)


@pytest.mark.parametrize(
    ("day", "zone"),
    [("2026-09-06", "America/Santiago"), ("2026-03-08", "America/Havana"), ("2026-03-29", "Asia/Beirut")],
)
def test_a_day_whose_midnight_is_skipped_by_daylight_saving_is_still_that_day(day: str, zone: str) -> None:
    """Where the clocks spring forward at midnight (Chile, Cuba, Lebanon), the day starts at 01:00: its window was
    not recognised as a day, so the failure message told staff to rerun with --since/--until, not --date. The window
    read back in the clinic's zone (as agent.notify does) must be the day too."""
    tz = ZoneInfo(zone)
    since, until, _ = resolve_window(tz, NOW, day=day)
    assert day_of_window(since, until, tz) == date.fromisoformat(day)
    assert day_of_window(since.astimezone(tz), until.astimezone(tz), tz) == date.fromisoformat(day)
    assert day_of_window(since.astimezone(UTC), until.astimezone(UTC), tz) == date.fromisoformat(day)
    assert day_of_window(since, until - timedelta(hours=1), tz) is None
