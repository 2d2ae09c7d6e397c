"""The audit's flags and counts, one definition for the reconciliation that sets them (graphs/audit_reconcile.py)
and the report that shows them (reporting/audit_report/).

A session row's `flags` are `Flag` values (their JSON is the plain code, e.g. "missing_form"); the report's `totals`
are counted once, by `count_totals`, when the audit reconciles: the report reads them, it never counts again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any


class Flag(StrEnum):
    """What a session of the audit needs, in the order a manager works through them (the report's "To do")."""

    MISSING_FORM = "missing_form"
    PENDING_FORM = "pending_form"
    OVERRUN = "overrun"
    NO_ACTUAL_END = "no_actual_end"
    SUMMARY_UNAVAILABLE = "summary_unavailable"
    IMPLAUSIBLE_TIMES = "implausible_times"


FLAG_ORDER: tuple[str, ...] = tuple(flag.value for flag in Flag)

# The report's totals, in the contract's order: the sessions, each flag's count (under its totals key), the minutes.
TOTAL_OF_FLAG: dict[Flag, str] = {
    Flag.MISSING_FORM: "missing_forms",
    Flag.PENDING_FORM: "pending_forms",
    Flag.OVERRUN: "overruns",
    Flag.NO_ACTUAL_END: "no_actual_end",
    Flag.SUMMARY_UNAVAILABLE: "summary_unavailable",
    Flag.IMPLAUSIBLE_TIMES: "implausible_times",
}
TOTALS_KEYS = (
    "sessions",
    "missing_forms",
    "pending_forms",
    "overruns",
    "no_actual_end",
    "billable_minutes",
    "summary_unavailable",
    "implausible_times",
)


def count_totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The report's totals from its session rows: how many sessions, how many carry each flag, billable minutes."""
    listed = list(rows)
    flag_lists = [_flags(r.get("flags")) for r in listed]
    counts: dict[str, Any] = {TOTAL_OF_FLAG[flag]: sum(flag in flags for flags in flag_lists) for flag in Flag}
    counts["sessions"] = len(listed)
    counts["billable_minutes"] = sum(_minutes(r.get("billable_minutes")) for r in listed)
    return {key: counts[key] for key in TOTALS_KEYS}


def _flags(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else ()


def _minutes(value: Any) -> int | float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0
