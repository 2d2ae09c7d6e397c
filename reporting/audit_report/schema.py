"""The report as JSON: the contract's key order (README: "The audit report"), strict, redacted."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from reporting.audit_flags import TOTALS_KEYS
from tools.textsafety import redact_value

# Key order of the contract's JSON report (README: "The audit report"); keys it does not name follow, in input order.
REPORT_KEYS = (
    "schema_version",
    "complete",
    "source",
    "team_id",
    "collection_id",
    "window",
    "generated_at",
    "totals",
    "sessions",
)
WINDOW_KEYS = ("since", "until")
SESSION_KEYS = (
    "session_id",
    "session_name",
    "scheduled_start",
    "scheduled_end",
    "actual_start",
    "actual_end",
    "scheduled_minutes",
    "actual_minutes",
    "billable_minutes",
    "overrun_minutes",
    "submission_ids",
    "flags",
    "problem",
)


# --- JSON ----------------------------------------------------------------------------------------------


def _ordered(value: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    out = {key: value[key] for key in keys if key in value}
    out.update((key, item) for key, item in value.items() if key not in out)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable in a report: {type(value).__name__}")


def render_json(report: Mapping[str, Any]) -> str:
    """The report as JSON: indent 2, keys in the contract's order, strict (no NaN), trailing newline; redacted."""
    top = _ordered(report, REPORT_KEYS)
    if isinstance(top.get("window"), Mapping):
        top["window"] = _ordered(top["window"], WINDOW_KEYS)
    if isinstance(top.get("totals"), Mapping):
        top["totals"] = _ordered(top["totals"], TOTALS_KEYS)
    sessions = top.get("sessions")
    if isinstance(sessions, list | tuple):
        top["sessions"] = [_ordered(s, SESSION_KEYS) if isinstance(s, Mapping) else s for s in sessions]
    document = redact_value(_plain(top))
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
