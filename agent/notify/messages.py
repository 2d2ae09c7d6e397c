"""The messages staff get: a queue event's alert, the audit's report (totals and To-do list) and its failure,
the hooks that put them in the outbox (`Services.on_report`, `Services.on_audit_failed`), and the command that
runs an audit of the same window again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent.notify.outbox import Outbox, deliver
from agent.notify.sending import Message
from tools.textsafety import redact

log = logging.getLogger(__name__)


# --- queue alerts --------------------------------------------------------------------------------


def queue_message(
    event: Mapping[str, Any],
    *,
    clinic: str,
    label: str,
    team_id: str,
    queue_id: str,
    threshold_minutes: float,
    escalate_minutes: float,
) -> Message:
    """The message for one queue event (graphs.queue.QueueEvent): the queue, how long, and where to act; the
    patient's display name only in `patient_body`."""
    call_id = str(event["call_id"])
    level = str(event["level"])
    minutes = event.get("waited_minutes")
    waited = f"{minutes:.0f} min" if isinstance(minutes, int | float) else "an unknown time"
    where = f"Waiting queue `{queue_id}` of team `{team_id}`, call `{call_id}`."
    act = "Act: open the waiting queue in Coviu and answer the call (or triage it: `coviu-agent triage`)."
    if level == "escalation":
        title = f"ESCALATION, {label}: a caller has waited {waited}"
        lead = f"A caller has waited **{waited}** (over {escalate_minutes:g} min, the escalation threshold)."
        kind = "failure"
    elif level == "alert":
        title = f"Queue alert, {label}: a caller has waited {waited}"
        lead = f"A caller has waited **{waited}** (over {threshold_minutes:g} min)."
        kind = "warning"
    elif level == "unknown":
        title = f"Queue alert, {label}: a caller's wait cannot be read"
        lead = "A caller is waiting, but the time they joined the queue cannot be read: check the queue."
        kind = "warning"
    else:
        title = f"Seen, {label}: a caller alerted on is no longer waiting"
        lead = f"The caller alerted on earlier is no longer waiting ({event.get('outcome') or 'left'})."
        act = "Nothing to do."
        kind = "success"
    body = f"{lead}\n\n{where}\n\n{act}"
    name = event.get("name")
    patient_body = f"{lead}\n\nPatient: **{name}**. {where}\n\n{act}" if name else None
    return Message(clinic, "queue", call_id, level, title, body, patient_body, notify_type=kind)


# --- the audit's messages ------------------------------------------------------------------------


def audit_message(
    report: Mapping[str, Any],
    paths: Mapping[str, str],
    *,
    clinic: str,
    zone: Any,
    overrun_threshold_minutes: float,
    rerun: str,
) -> Message:
    """The audit's report for staff: totals and the To-do list (names only for patient-data channels), with the HTML
    report attached for patient-data email channels. Level `report`, or `incomplete` (exit 5)."""
    from reporting.audit_report import render_message

    window = report.get("window") or {}
    complete = bool(report.get("complete", True))
    common: dict[str, Any] = {
        "zone": zone,
        "overrun_threshold_minutes": overrun_threshold_minutes,
        "rerun": rerun,
        "report_path": paths.get("html") or paths.get("md"),
    }
    title, body = render_message(report, names=False, **common)
    _, patient_body = render_message(report, names=True, **common)
    return Message(
        clinic=clinic,
        kind="audit",
        subject=f"{window.get('since')}|{window.get('until')}",
        level="report" if complete else "incomplete",
        title=title,
        body=body,
        patient_body=patient_body,
        attach=paths.get("html"),
        notify_type="info" if complete else "warning",
    )


def audit_failure_message(
    *, clinic: str, label: str, subject: str, what: str, rerun: str, resumes: bool = True
) -> Message:
    """An audit that produced no report (exit 3): what failed and the command to run it again; `resumes` False for
    bad input (exit 2: an unknown account or team), which fails the same way until it is fixed."""
    again = (
        f"It resumes where it stopped when run again: `{rerun}`"
        if resumes
        else f"It fails the same way until this is fixed (an id or a setting); then run: `{rerun}`"
    )
    return Message(
        clinic=clinic,
        kind="audit",
        subject=subject,
        level="failed",
        title=f"FAILED end-of-day audit: {label}",
        body=(f"The end-of-day audit of **{label}** did not produce a report: {redact(what)[:500]}\n\n{again}"),
        notify_type="failure",
    )


def audit_notifier(outbox: Outbox, *, clinic: str, zone: Any, rerun: Callable[[Mapping[str, Any]], str]) -> Any:
    """`Services.on_report` for the audit: the report's message written to the outbox and sent. Never raises: a
    store or channel that fails leaves the audit's result as it is (logged; the next flush sends what was written)."""

    async def on_report(report: Mapping[str, Any], paths: Mapping[str, str], threshold: float) -> None:
        try:
            message = audit_message(
                report, paths, clinic=clinic, zone=zone, overrun_threshold_minutes=threshold, rerun=rerun(report)
            )
            await deliver(outbox, [message])
        except Exception as exc:
            log.warning("the audit's message could not be written (%s)", redact(f"{type(exc).__name__}: {exc}")[:200])

    return on_report


def audit_failure_notifier(
    outbox: Outbox, *, clinic: str, label: str, zone: Any, rerun: str = "coviu-agent audit"
) -> Callable[[Mapping[str, Any], str, bool], Awaitable[None]]:
    """`Services.on_audit_failed`: an audit that produced no report (window, what failed) told to staff through the
    outbox, with the command to rerun it (`rerun` plus the window's flags). One message per clinic and window (its
    stable id): a rerun or retry that fails again writes no second one. `resumes`: False for bad input (an unknown
    account or team: a rerun fails the same way until it is fixed). Never raises (logged)."""

    async def on_audit_failed(window: Mapping[str, Any], what: str, resumes: bool = True) -> None:
        try:
            since, until = window.get("since"), window.get("until")
            message = audit_failure_message(
                clinic=clinic,
                label=label,
                subject=f"{since}|{until}" if since and until else json.dumps(dict(window), sort_keys=True),
                what=what,
                rerun=rerun_for_window({"window": window}, zone, rerun) if since and until else rerun,
                resumes=resumes,
            )
            await deliver(outbox, [message])
        except Exception as exc:  # telling staff never changes the audit's own outcome
            log.warning("the audit's failure could not be told (%s)", type(exc).__name__)

    return on_audit_failed


def rerun_for_window(report: Mapping[str, Any], zone: Any, prefix: str = "coviu-agent audit") -> str:
    """`coviu-agent audit --date D` for a report's window (one day), else `--since ... --until ...`."""
    from graphs.audit_window import day_of_window
    from tools.timeparse import parse_time

    window = report.get("window") or {}
    since_read, until_read = parse_time(window.get("since")), parse_time(window.get("until"))
    if since_read is None or until_read is None:
        return prefix
    since, until = since_read.astimezone(zone), until_read.astimezone(zone)
    day = day_of_window(since, until, zone)
    if day is not None:
        return f"{prefix} --date {day.isoformat()}"
    return f"{prefix} --since {since.isoformat()} --until {until.isoformat()}"
