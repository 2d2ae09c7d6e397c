"""The runtime context every graph receives: editable ids (Studio fields) plus injected services.

Services (tool layer, model, clock, time zone) are injected by the CLI or tests; on a LangGraph
server they come from the provider that `agent.server` registers.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from graphs.audit_store import AuditStore
from tools.clock import Clock
from tools.ratelimit import RateLimitBudget
from tools.toolbox import Toolbox

if TYPE_CHECKING:  # langchain_core is heavy: `coviu-agent tools` builds services without touching it
    from langchain_core.language_models import BaseChatModel


OnReport = Callable[[Mapping[str, Any], Mapping[str, str], float], Awaitable[None]]
OnAuditFailed = Callable[[Mapping[str, Any], str, bool], Awaitable[None]]  # window, what failed, a rerun resumes


@dataclass
class Services:
    """Everything slow or external a graph uses, built once per process."""

    toolbox: Toolbox
    model: BaseChatModel | None = None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    team_id: str | None = None
    waiting_queue_id: str | None = None
    collection_id: str | None = None
    clinic_name: str | None = None
    # where the data comes from, named in every report: "sandbox" (the embedded sandbox) or the integrated account
    source: str | None = None
    planner: Literal["llm", "rules"] = "rules"
    # COVIU_AGENT_PLANNER=auto: when the model fails, a triage may be planned by the rules instead (said in its output)
    fallback_to_rules: bool = False
    report_dir: Path = Path("reports")
    max_model_calls: int = 8
    # Which tools `ask` binds: "request", those its request needs (tools/binding.py: compact schemas, `more_tools`
    # for the rest); "all", every catalog tool as written (what the token bench compares against).
    tool_selection: Literal["request", "all"] = "request"
    on_progress: Callable[[str, int, int], None] | None = field(default=None, repr=False)
    # The audit's side rows and summary cache (graphs/audit_store.py); None: a private in-memory store.
    audit_store: AuditStore | None = field(default=None, repr=False)
    # Called once the audit's report files are written (report, file paths, overrun threshold): the agent layer's
    # delivery to staff (agent/notify/, through the outbox); None: nobody is told (no channel configured).
    on_report: OnReport | None = field(default=None, repr=False)
    # Called when an audit ends with no report (its window, what failed; the run still fails): the same delivery's
    # "FAILED" message with the command to rerun. None: nobody is told.
    on_audit_failed: OnAuditFailed | None = field(default=None, repr=False)

    @property
    def clock(self) -> Clock:
        return self.toolbox.clock

    @property
    def budget(self) -> RateLimitBudget:
        """This run's rate-limit wait budget: its toolbox's (a CLI run's own; on the server, `Toolbox.for_run`)."""
        return self.toolbox.budget


ServicesProvider = Callable[[], Awaitable[Services]]
_provider: ServicesProvider | None = None


def set_services_provider(provider: ServicesProvider) -> None:
    """Register how graphs get their services when the caller passed none (LangGraph server)."""
    global _provider
    _provider = provider


@dataclass(kw_only=True)
class Context:
    """Per-run context. The id fields show up in LangGraph Studio; `services` is injected."""

    team_id: str | None = field(default=None, metadata={"description": "Coviu team id (default: settings)."})
    waiting_queue_id: str | None = field(
        default=None, metadata={"description": "Waiting queue id for triage (default: settings)."}
    )
    collection_id: str | None = field(
        default=None, metadata={"description": "Intake collection id for the audit (default: settings)."}
    )
    planner: Literal["llm", "rules"] | None = field(
        default=None, metadata={"description": "llm or rules (default: settings)."}
    )
    services: Services | None = field(default=None, repr=False, compare=False)
    # One per run: a resumed thread (after a crash, or after retries were spent) starts its retry count afresh.
    run_token: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False, compare=False)


async def resolve_services(context: Context | None) -> Services:
    """The services for this run: the injected ones, or the registered provider's (kept in the run's context)."""
    if context is not None and context.services is not None:
        services = context.services
    else:
        if _provider is None:
            raise RuntimeError("no services injected and no provider registered (import agent.server)")
        services = await _provider()
        if context is not None:
            context.services = services
    return services


@dataclass(frozen=True)
class RunIds:
    """The clinic ids a run works on: the run's context, each unset one taken from the settings (`Services`).

    The one home of a run's ids: a graph's `prepare` resolves them here, once per run, and records them in its
    state for the nodes after it and the output. State never feeds them back: a reused thread (a chat thread, a
    server thread) runs on the ids of the run's context, not on the ones an earlier run left in its state.
    """

    team_id: str | None
    waiting_queue_id: str | None
    collection_id: str | None


def run_ids(context: Context | None, services: Services) -> RunIds:
    """The run's ids: the context's, the settings' where the context leaves one unset."""
    return RunIds(
        team_id=(context.team_id if context else None) or services.team_id,
        waiting_queue_id=(context.waiting_queue_id if context else None) or services.waiting_queue_id,
        collection_id=(context.collection_id if context else None) or services.collection_id,
    )


def planner(context: Context | None, services: Services) -> Literal["llm", "rules"]:
    chosen = (context.planner if context else None) or services.planner
    if chosen == "llm" and services.model is None:
        return "rules"
    return chosen
