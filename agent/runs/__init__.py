"""One run of a graph from start to typed result: thread ids, resume-or-start, checkpoint clean-up, exit codes.

`run_triage`, `run_audit`, `run_ask` (the assistant), `run_recordings` (the download worker), `run_tools` (the
catalog) and `run_queue_watch`: each opens the services (`agent.services.open_services`) and the checkpointer it
needs, unless the caller passes its own, and returns a typed result. The CLI parses flags, calls one of these and
prints the result; tests call the same functions with injected services and an in-memory checkpointer. Nothing here
prints: status lines go to the caller's `on_event`. Heavy imports (LangGraph) happen inside functions.

One concern per module (each name is importable from here): `base` (services and checkpointer, resume-or-start,
declared inputs, `observed`: telemetry and the run log), `results` (the results `run_facts` reads: triage, audit,
recordings), then one module per run: `triage`, `audit` (+ the failure told for a fleet's clinic that never
started), `ask` (the assistant and its approvals), `queue_watch`, `recordings`, `catalog` (`run_tools`).

Two run families live beside this package, each one concern: agent/schedules.py (`run_schedule_audit`,
`run_schedule_list`, `run_schedule_delete`, `run_server_status`: crons on a LangGraph server) and
agent/mcp_servers.py (`run_mcp_create`, `run_mcp_list`, `run_mcp_delete`: the account's Truto MCP servers).
"""

from __future__ import annotations

from agent.runs.ask import (
    ASK_RECURSION_LIMIT,
    FAILED_STATUSES,
    MAX_APPROVAL_ROUNDS,
    MAX_NOTE_CHARS,
    NO_LLM,
    AskOutcome,
    Decide,
    pending_request,
    run_ask,
)
from agent.runs.audit import (
    AUDIT_CONCURRENCY,
    AUDIT_RECURSION_LIMIT,
    AuditArgs,
    audit_not_started,
    audit_thread,
    audit_window,
    check_resumable,
    run_audit,
    tell_audit_failed,
)
from agent.runs.base import (
    Event,
    Progress,
    declared_inputs,
    dry_run_meets_interrupted,
    log_run,
    observed,
    run_facts,
)
from agent.runs.catalog import ToolListing, run_tools
from agent.runs.queue_watch import (
    QUEUE_MEMORY_SECONDS,
    QUEUE_STATUS_KIND,
    QueueCheck,
    QueueWatchArgs,
    queue_status,
    queue_status_run,
    run_queue_watch,
)
from agent.runs.recordings import TRANSCRIPTION_OFF, run_recordings
from agent.runs.results import AuditResult, RecordingsRun, TriageResult
from agent.runs.triage import TRIAGE_RECURSION_LIMIT, TriageArgs, run_triage, triage_thread

__all__ = [
    "ASK_RECURSION_LIMIT",
    "AUDIT_CONCURRENCY",
    "AUDIT_RECURSION_LIMIT",
    "FAILED_STATUSES",
    "MAX_APPROVAL_ROUNDS",
    "MAX_NOTE_CHARS",
    "NO_LLM",
    "QUEUE_MEMORY_SECONDS",
    "QUEUE_STATUS_KIND",
    "TRANSCRIPTION_OFF",
    "TRIAGE_RECURSION_LIMIT",
    "AskOutcome",
    "AuditArgs",
    "AuditResult",
    "Decide",
    "Event",
    "Progress",
    "QueueCheck",
    "QueueWatchArgs",
    "RecordingsRun",
    "ToolListing",
    "TriageArgs",
    "TriageResult",
    "audit_not_started",
    "audit_thread",
    "audit_window",
    "check_resumable",
    "declared_inputs",
    "dry_run_meets_interrupted",
    "log_run",
    "observed",
    "pending_request",
    "queue_status",
    "queue_status_run",
    "run_ask",
    "run_audit",
    "run_facts",
    "run_queue_watch",
    "run_recordings",
    "run_tools",
    "run_triage",
    "tell_audit_failed",
    "triage_thread",
]
