"""Graphs for LangGraph Server / Studio (`langgraph.json`): compiled without a checkpointer.

Importing this module registers how graphs get their services (settings → sandbox or Truto), once per process.
The server runs each graph with `ServerContext`: the editable ids of `Context` (Studio shows them as fields)
plus the clinic's integrated account and time zone, so one server can serve many clinics (one assistant per
integrated account). The injected `services` stay out of the JSON schema and cannot be set by an API caller.
Services are built once per integrated account (`agent.services.build_services`, as the CLI's runs do) and shared
by its runs; each run has a whole rate-limit wait budget of its own. The server cannot call `agent.runs`: LangGraph
invokes the graphs itself (its own checkpointer, threads, resume and interrupts), so thread ids, resume-or-start and
exit codes are the server's; what both share is the graphs, the services and the tool layer.
`COVIU_AGENT_REPORT_DIR` (server only, default `./reports`) is where the audit graph writes its report files.
Each run is observed by its graph's callbacks (`ServerRuns`): a row in the run log of COVIU_AGENT_STATE (what
`coviu-agent status` shows) and, when `OTEL_*` or COVIU_AGENT_METRICS_FILE ask, the CLI's spans and metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID
from zoneinfo import ZoneInfo

from langchain_core.callbacks import AsyncCallbackHandler
from langgraph.errors import GraphInterrupt, NodeError
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from pydantic.json_schema import SkipJsonSchema

from agent.errors import EXIT_APPROVAL, EXIT_UPSTREAM, BadInput, exit_code_for
from agent.settings import LONG_RUN_MAX_WAIT, Settings
from graphs.assistant import build_assistant_graph
from graphs.audit import build_audit_graph
from graphs.context import Context, Services, resolve_services, set_services_provider
from graphs.triage import build_triage_graph
from tools.ratelimit import DEFAULT_MAX_WAIT, RateLimitBudget
from tools.timeparse import known_zone

if TYPE_CHECKING:
    from agent.notify import Channel

_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_settings: Settings | None = None
_by_account: dict[str, Services] = {}
_channels: dict[str, list[Channel]] = {}  # each account's staff channels (COVIU_AGENT_NOTIFY...)
# each thread's run's clinic (its account, else its team) and team, as `_provide` resolved them from the run's
# context, for `ServerRuns` (a callback does not see the run's context)
_run_clinic: dict[str, tuple[str, str]] = {}
_lock = asyncio.Lock()


@dataclass(kw_only=True)
class ServerContext(Context):
    """Per-run settings of the clinic; leave a field empty to use the server's (COVIU_TEAM_ID, ...)."""

    integrated_account_id: str | None = field(
        default=None,
        metadata={"description": "Truto integrated account of the clinic (default: TRUTO_INTEGRATED_ACCOUNT_ID)."},
    )
    timezone: str | None = field(
        default=None, metadata={"description": "Clinic time zone, IANA (default: COVIU_AGENT_TIMEZONE)."}
    )
    services: SkipJsonSchema[Any] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.services, Services):
            self.services = None  # never from a request body
        if self.integrated_account_id is not None and not _ACCOUNT_ID.match(self.integrated_account_id):
            raise ValueError(f"integrated_account_id: expected an id, got {self.integrated_account_id!r}")
        if self.timezone and known_zone(self.timezone) is None:
            raise ValueError(f"timezone: {self.timezone!r} is not an IANA time zone")


def _run_setting(name: str) -> str | None:
    """A field of the calling run's context (None outside a run). Read by name: the server may load this
    file once per graph, each time with its own `ServerContext` class."""
    from langgraph.runtime import get_runtime

    try:
        context = get_runtime().context
    except (RuntimeError, KeyError, AttributeError):
        return None
    value = getattr(context, name, None) if isinstance(context, Context) else None
    return value if isinstance(value, str) and value else None


def _run_thread() -> str | None:
    """The calling run's thread id, or None."""
    from langgraph.config import get_config

    try:
        thread = get_config().get("configurable", {}).get("thread_id")
    except RuntimeError:  # outside a run
        return None
    return str(thread) if thread else None


def _run_graph() -> str | None:
    """The graph the calling run belongs to (the server puts `graph_id` in every run's configurable), or None."""
    from langgraph.config import get_config

    try:
        graph = get_config().get("configurable", {}).get("graph_id")
    except RuntimeError:  # outside a run
        return None
    return graph if isinstance(graph, str) else None


def _run_wait_budget(settings: Settings, zone: ZoneInfo) -> RateLimitBudget:
    """A run's rate-limit wait budget, sized as the CLI sizes it: COVIU_AGENT_MAX_WAIT, else the graph's own default
    (the audit 1800 s, as `coviu-agent audit` and its crons; triage and the assistant 120 s)."""
    if settings.max_wait is not None:
        seconds = settings.max_wait
    else:
        seconds = LONG_RUN_MAX_WAIT if _run_graph() == "audit" else DEFAULT_MAX_WAIT
    return RateLimitBudget(seconds, zone=zone)


def _read_settings() -> Settings:
    """The server's settings, and its telemetry as they and the standard `OTEL_*` variables ask (as the CLI's: off,
    nothing of OpenTelemetry imported, unless configured). A wrong variable is said once, and telemetry stays off."""
    settings = Settings()
    from tools import telemetry

    if telemetry.current() is None:
        try:
            telemetry.setup(metrics_file=settings.metrics_file)
        except ValueError as exc:
            logging.getLogger(__name__).error("telemetry is off: %s", exc)
    return settings


async def _server_settings() -> Settings:
    """The settings, read once (under `_lock`; `.env` and the telemetry's imports stay off the event loop)."""
    global _settings
    if _settings is None:
        _settings = await asyncio.to_thread(_read_settings)
    return _settings


async def _provide() -> Services:
    """Services for the calling run's integrated account (built on first use), in the run's time zone."""
    account, zone = _run_setting("integrated_account_id"), _run_setting("timezone")
    async with _lock:
        settings = await _server_settings()
        account = account or settings.truto_integrated_account_id
        key = "sandbox" if settings.uses_sandbox else str(account)
        services = _by_account.get(key)
        if services is None:
            from agent.services import build_services

            if not settings.uses_sandbox and account != settings.truto_integrated_account_id:
                settings = settings.model_copy(update={"truto_integrated_account_id": account})
            report_dir = Path(os.environ.get("COVIU_AGENT_REPORT_DIR") or "reports")
            services = await build_services(settings, report_dir=report_dir)
            # Apprise loads its plugins from disk: off the server's event loop
            _channels[key] = await asyncio.to_thread(settings.channels)
            _by_account[key] = services
        # the clinic staff messages name: the run's account (the settings' in the sandbox, which serves them)
        clinic_account = (settings.truto_integrated_account_id if settings.uses_sandbox else account) or "sandbox"
    channels = _channels.get(key, [])
    # The run starts here (LangGraph calls this once per run; the run's context then holds the services): it gets
    # a whole rate-limit wait budget of its own, as a CLI run does. Runs of one account share the toolbox's connection
    # pool and governor (its pacing), never a budget: the run's toolbox (`Toolbox.for_run`) carries its own.
    run_zone = ZoneInfo(zone) if zone and zone != services.zone.key else services.zone
    toolbox = services.toolbox.for_run(_run_wait_budget(settings, run_zone))
    services = dataclasses.replace(services, zone=run_zone, toolbox=toolbox)
    # staff messages name the run's own clinic: its account and the team its context asks for
    team = _run_setting("team_id") or services.team_id or ""
    thread = _run_thread()
    if thread is not None:
        real = settings.truto_integrated_account_id if settings.uses_sandbox else account
        _run_clinic[thread] = (str(real or team), team)
    return _with_delivery(str(clinic_account), team, services, channels)


def _with_delivery(account: str, team: str, services: Services, channels: list[Channel]) -> Services:
    """The audit's report goes to the account's staff channels (COVIU_AGENT_NOTIFY...), through the outbox in the
    state store, as the CLI's does; its messages name the run's clinic (`account`, and the run's `team`)."""
    if not channels:
        return services
    from agent.notify import Outbox, audit_failure_notifier, audit_notifier, rerun_for_window
    from graphs.audit_store import memory_store

    outbox = Outbox(services.audit_store or memory_store(), channels, services.clock)
    clinic = f"{account}:{team}"
    named = services.clinic_name if team == services.team_id else None  # the settings' name is their team's
    return dataclasses.replace(
        services,
        on_report=audit_notifier(
            outbox,
            clinic=clinic,
            zone=services.zone,
            rerun=lambda report: rerun_for_window(report, services.zone, "coviu-agent audit"),
        ),
        on_audit_failed=audit_failure_notifier(
            outbox, clinic=clinic, label=named or f"team {team}", zone=services.zone
        ),
    )


async def _audit_failed(state: dict[str, Any], error: NodeError, runtime: Runtime[Context]) -> None:
    """The audit's error handler on the server (every node's, LangGraph's `error_handler`): a node that raised ends
    the run with no report, so staff get the "FAILED" message (`Services.on_audit_failed`, as the CLI's exit 3),
    then the node's error fails the run as before. Bad input (a setting the server lacks) is the API caller's
    error, as on the CLI. A rerun that fails again finds the message's id in the outbox: told once per window."""
    failure = error.error
    if not isinstance(failure, BadInput):
        try:
            services = await resolve_services(runtime.context)
        except Exception as exc:  # services that cannot be had: the run fails with its own error, logged
            logging.getLogger(__name__).warning("the audit's failure could not be told (%s)", type(exc).__name__)
        else:
            if services.on_audit_failed is not None:  # never raises
                window = state.get("window") or {k: state[k] for k in ("date", "since", "until") if state.get(k)}
                resumes = exit_code_for(failure) == EXIT_UPSTREAM
                await services.on_audit_failed(window, f"{type(failure).__name__}: {failure}", resumes)
    raise failure


@dataclass
class _ServerResult:
    """A run of a graph without a result type of its own (the assistant), as `agent.runs.run_facts` reads one."""

    thread_id: str | None
    state: dict[str, Any]
    exit_code: int = 0


class ServerRuns(AsyncCallbackHandler):
    """Each server run of a graph, seen by its callbacks (LangGraph's server invokes the graphs itself, each step of
    a run in a task of its own, so nothing can wrap a run as `agent.runs.observed` wraps a CLI run): the same root
    span, node spans and run metrics (`tools.telemetry.begin_run` / `end_run`) when telemetry is configured, and a
    row in the run log of COVIU_AGENT_STATE, which `coviu-agent status` reads."""

    run_inline = True

    def __init__(self, graph: str) -> None:
        self.graph = graph
        self.runs: dict[UUID, tuple[Any, Settings, str | None]] = {}
        self.root_of: dict[UUID, UUID] = {}  # each runnable of a run (a node, a model call, ...) -> the run
        self.stopped: set[UUID] = set()  # runs a node of which stopped for approval (an interrupt)

    async def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from tools import telemetry

        if parent_run_id is not None:  # a node (or a runnable inside one): its span, when traced
            self.root_of[run_id] = self.root_of.get(parent_run_id, parent_run_id)
            nodes = telemetry.node_spans()
            if nodes is not None:
                await nodes.on_chain_start(
                    serialized, inputs, run_id=run_id, parent_run_id=parent_run_id, metadata=metadata, **kwargs
                )
            return
        async with _lock:
            settings = await _server_settings()
        # the settings' clinic until the run's result names its team (`run_facts`): a run's own account, from its
        # context, is not seen by the callbacks
        team = settings.coviu_team_id or ""
        run = telemetry.begin_run(self.graph, settings.truto_integrated_account_id or team, team)
        nodes = telemetry.node_spans()
        root = getattr(run.handle, "span", None)
        if nodes is not None and root is not None:
            nodes.add_run(run_id, root)
        thread = (metadata or {}).get("thread_id")
        self.runs[run_id] = (run, settings, str(thread) if thread else None)

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        entry = self.runs.pop(run_id, None)
        if entry is None:
            await self._node_ended(run_id, None)
            return
        from agent.runs import AuditResult, TriageResult, log_run, run_facts

        run, settings, thread = entry
        state = dict(outputs) if isinstance(outputs, Mapping) else {}
        result: Any
        if run_id in self.stopped:  # waiting for approval (exit 4): `status` lists the thread until it is answered
            result = _ServerResult(thread, state, EXIT_APPROVAL)
        elif self.graph == "audit":
            result = AuditResult(thread or "", False, state)
        elif self.graph == "triage":
            result = TriageResult(thread or "", False, state)
        else:
            result = _ServerResult(thread, state)
        run.finish(**run_facts(result))
        _own_clinic(run, thread)
        self._ended(run_id, run, None)
        await asyncio.to_thread(log_run, (settings,), {}, run.record, result, None, runner="server")

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        entry = self.runs.pop(run_id, None)
        if entry is None:
            if isinstance(error, GraphInterrupt) and run_id in self.root_of:
                self.stopped.add(self.root_of[run_id])
            await self._node_ended(run_id, error)
            return
        from agent.runs import log_run

        run, settings, thread = entry
        _own_clinic(run, thread)
        self._ended(run_id, run, error)
        await asyncio.to_thread(log_run, (settings,), {}, run.record, None, error, runner="server")

    def _ended(self, run_id: UUID, run: Any, error: BaseException | None) -> None:
        from tools import telemetry

        self.stopped.discard(run_id)
        for child in [child for child, root in self.root_of.items() if root == run_id]:
            del self.root_of[child]

        telemetry.end_run(run, error)
        nodes = telemetry.node_spans()
        if nodes is not None:
            nodes.drop_run(run_id)

    async def _node_ended(self, run_id: UUID, error: BaseException | None) -> None:
        from tools import telemetry

        nodes = telemetry.node_spans()
        if nodes is None:
            return
        if error is None:
            await nodes.on_chain_end(None, run_id=run_id)
        else:
            await nodes.on_chain_error(error, run_id=run_id)


def _own_clinic(run: Any, thread: str | None) -> None:
    """The run's own clinic (its context's account and team, as `_provide` resolved them) on its record and span."""
    clinic, team = _run_clinic.pop(thread, ("", "")) if thread else ("", "")
    if clinic:
        run.record.clinic, run.record.team = clinic, team
        run.handle.set(**{"coviu.clinic": clinic, "coviu.team": team})


def for_server(builder: StateGraph[Any, Any, Any, Any], name: str) -> Any:
    """Compile a graph builder for the server: no checkpointer (the server brings its own), `ServerContext`, and
    each run observed (`ServerRuns`: telemetry and the run log)."""
    builder.context_schema = ServerContext
    return builder.compile(name=name).with_config({"callbacks": [ServerRuns(name)]})


def _warm_prompts() -> None:
    """Read every prompt once now (they are cached): no file reads later on the server's event loop."""
    from importlib import resources

    from prompts import load_prompt

    for entry in resources.files("prompts").iterdir():
        if entry.name.endswith(".md"):
            load_prompt(entry.name.removesuffix(".md"))


set_services_provider(_provide)
_warm_prompts()

triage = for_server(build_triage_graph(), "triage")
# a node that raises tells staff the audit failed (`_audit_failed`), then fails the run; LangGraph injects the
# handler's `error: NodeError`, a parameter its node protocols do not list
_audit_builder = build_audit_graph().set_node_defaults(error_handler=cast(Any, _audit_failed))
audit = for_server(_audit_builder, "audit").with_config({"max_concurrency": 4})
assistant = for_server(build_assistant_graph(), "assistant")
