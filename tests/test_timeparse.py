"""The one time reader: every form an upstream may send, never an exception, naive read as UTC (said once)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools import timeparse
from tools.timeparse import is_plausible, parse_time

MOMENT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25T10:00:00Z",
        "2026-11-25T21:00:00+11:00",
        "Wed, 25 Nov 2026 10:00:00 GMT",
        1795600800,
        1795600800000,
        "1795600800",
        "1795600800000",
        1795600800.0,
    ],
)
def test_every_form_reads_the_same_instant(value: object) -> None:
    assert parse_time(value) == MOMENT


def test_a_time_without_a_zone_is_utc_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    timeparse.reset_warnings()
    with caplog.at_level(logging.WARNING, logger="tools.timeparse"):
        assert parse_time("2026-11-25T10:00:00") == MOMENT
        assert parse_time("2026-11-25 10:00:00") == MOMENT
    assert sum("without a time zone" in r.getMessage() for r in caplog.records) == 1
    assert parse_time("2026-11-25T10:00:00", allow_naive=False) is None


@pytest.mark.parametrize(
    "value", [None, "", "soon", "0001-01-01T00:00:00+14:00", float("inf"), float("nan"), 1e400, "1e400", [], {}, True]
)
def test_unreadable_values_are_none_not_an_exception(value: object) -> None:
    assert parse_time(value) is None


def test_plausibility_is_by_year() -> None:
    assert is_plausible(MOMENT)
    assert not is_plausible(datetime(9999, 12, 31, tzinfo=UTC))
    assert not is_plausible(datetime(1, 1, 1, tzinfo=UTC))


@given(st.one_of(st.text(max_size=80), st.integers(), st.floats(allow_nan=True, allow_infinity=True)))
def test_never_raises(value: object) -> None:
    result = parse_time(value)
    assert result is None or result.tzinfo is not None


def test_times_are_written_and_shown_one_way() -> None:
    from zoneinfo import ZoneInfo

    from tools.timeparse import clinic_time, iso_z, known_zone

    sydney = known_zone("Australia/Sydney")
    assert sydney == ZoneInfo("Australia/Sydney")
    assert known_zone("Mars/Olympus") is None and known_zone("../etc/passwd") is None and known_zone("") is None
    assert iso_z(MOMENT) == "2026-11-25T10:00:00Z"
    assert iso_z(MOMENT.astimezone(sydney)) == "2026-11-25T21:00:00+11:00"
    assert clinic_time(MOMENT, sydney) == "2026-11-25 21:00 AEDT"


def test_a_typed_iso_time_is_read_as_written_and_nothing_else_is() -> None:
    from datetime import timedelta, timezone

    from tools.timeparse import parse_iso

    assert parse_iso(" 2026-11-25T10:00:00Z ") == MOMENT
    assert parse_iso("2026-11-25T21:00:00+11:00") == MOMENT
    assert parse_iso("2026-11-25T21:00:00+11:00").utcoffset() == timedelta(hours=11)  # type: ignore[union-attr]
    naive = parse_iso("2026-11-25T10:00")
    assert naive == datetime(2026, 11, 25, 10, 0) and naive.tzinfo is None  # the caller decides what it means
    assert parse_iso("2026-11-25").date().isoformat() == "2026-11-25"  # type: ignore[union-attr]
    for text in ("", "tomorrow", "1795600800", "Wed, 25 Nov 2026 10:00:00 GMT", "2026-02-30T00:00Z"):
        assert parse_iso(text) is None, text
    assert parse_iso("2026-11-25T10:00:00-05:00") == datetime(2026, 11, 25, 10, tzinfo=timezone(timedelta(hours=-5)))


def test_state_times_are_utc_z_and_an_unmovable_one_keeps_its_offset() -> None:
    from datetime import timedelta, timezone

    from tools.timeparse import utc_z_or_own

    assert utc_z_or_own(None) is None
    assert utc_z_or_own(MOMENT.astimezone(timezone(timedelta(hours=11)))) == "2026-11-25T10:00:00Z"
    far = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # before year 1 in UTC
    assert utc_z_or_own(far) == "0001-01-01T00:30:00+01:00"
