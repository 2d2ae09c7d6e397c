"""Builds the process's services from settings: the one Truto client (real or embedded sandbox),
the tool catalog, the model, the clock. This is the only place that chooses the transport and the tool
source (`/tools` + proxy, or Truto's MCP server when TRUTO_MCP_URL is set).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from agent.errors import BadInput, ConfigError
from agent.local_inputs import check_state
from agent.model import make_model
from agent.settings import NO_TRUTO_ACCOUNT, SANDBOX_ACCOUNT_ID, SANDBOX_API_KEY, SANDBOX_BASE_URL, Settings
from graphs.audit_store import open_audit_store
from graphs.context import Services
from tools.clock import Clock, SystemClock
from tools.ratestore import RateStore, shared_rate_store
from tools.toolbox import Toolbox, open_toolbox

if TYPE_CHECKING:
    from tools.executor import BinaryLocator

log = logging.getLogger(__name__)


async def build_services(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    model: object | None = None,
    report_dir: Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    recordings_dir: Path | None = None,
    announce_sandbox: bool = True,
) -> Services:
    """Open the tool layer for this settings object. With no Truto key, the sandbox answers in-process.

    `report_dir`: where the audit writes; `on_progress`: the audit's progress callback; `recordings_dir`: where
    `coviu-agent recordings` downloads (binary tools then report local paths). The caller closes
    `services.toolbox` (or uses `open_services`, which does)."""
    clock = clock or SystemClock()
    # the state store (checkpoints, summary cache, side rows, rate store beside it) before the first request
    await asyncio.to_thread(check_state, settings.state)
    binary_locator = _download_index(recordings_dir)
    team_id, queue_id, collection_id = clinic_ids(settings)
    account = truto_account(settings, transport)
    if account.embedded and announce_sandbox:
        sys.stderr.write("coviu-agent: using the embedded Coviu sandbox (demo data, as asked for).\n")
    # /tools + proxy, or (TRUTO_MCP_URL) Truto's MCP server for the catalog and every call: one set of options
    opener: Callable[..., Awaitable[Toolbox]] = open_toolbox
    if settings.truto_mcp_url is not None:
        from tools.mcp_source import open_mcp_toolbox

        opener = functools.partial(open_mcp_toolbox, mcp_url=_mcp_url(settings))
    toolbox = await opener(
        base_url=account.base_url,
        api_key=account.api_key,
        integrated_account_id=account.account_id,
        transport=account.transport,
        clock=clock,
        rate_limit=settings.truto_rate_limit,
        bounds=settings.bounds(),
        binary_locator=binary_locator,
        rate_store=_rate_store(settings, account, clock),
    )
    log.info("tool catalog: %d tools from %s", len(toolbox.catalog), toolbox.catalog.source)
    chat_model = model if model is not None else make_model(settings)
    return Services(
        toolbox=toolbox,
        model=chat_model,  # type: ignore[arg-type]
        zone=settings.zone,
        team_id=team_id,
        waiting_queue_id=queue_id,
        collection_id=collection_id,
        clinic_name=settings.coviu_clinic_name,
        source="sandbox" if account.embedded else account.account_id,
        planner=settings.effective_planner if chat_model is not None else "rules",
        fallback_to_rules=settings.planner == "auto",
        report_dir=report_dir or Path("reports"),
        on_progress=on_progress,
        audit_store=open_audit_store(settings.state),  # side rows and summary cache, next to the checkpoints
    )


@dataclass(frozen=True)
class TrutoAccount:
    """Where Truto answers for a settings object, and as which integrated account."""

    base_url: str
    api_key: str = field(repr=False)
    account_id: str
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)
    embedded: bool = False  # the in-process sandbox (no TRUTO_API_KEY)


def _rate_store(settings: Settings, account: TrutoAccount, clock: Clock) -> RateStore | None:
    """Where the account's rate-limit state lives: beside the checkpoints (SQLite file or PostgreSQL), so every
    process of the deployment (CLI runs, cron jobs, server workers) spends one budget. The embedded sandbox's limit
    is its own process's, and an injected clock (tests) is not one that other processes share: in memory then; and
    so with COVIU_AGENT_RATE_STORE=process (a worker that alone paces its accounts)."""
    if account.embedded or not isinstance(clock, SystemClock) or settings.rate_store == "process":
        return None
    return shared_rate_store(settings.state)


def truto_account(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> TrutoAccount:
    """The one place that picks the embedded sandbox (asked for, no TRUTO_API_KEY) or the real Truto account;
    neither: ConfigError (exit 2), before anything is sent."""
    if settings.uses_sandbox:
        from sandbox import DEMO_ACCOUNT_ID, SandboxTransport, config_from_env, create_sandbox

        # TRUTO_INTEGRATED_ACCOUNT_ID without a key names one of the sandbox's clinics (a fleet shares one sandbox)
        account_id = settings.truto_integrated_account_id or DEMO_ACCOUNT_ID
        if transport is None:
            config = config_from_env()
            if account_id != config.integrated_account_id and account_id not in config.accounts:
                config.accounts = [*config.accounts, account_id]
            transport = SandboxTransport(create_sandbox(config))
        return TrutoAccount(SANDBOX_BASE_URL, SANDBOX_API_KEY, account_id, transport, embedded=True)
    if settings.truto_api_key is None:
        raise ConfigError(NO_TRUTO_ACCOUNT)
    if settings.truto_integrated_account_id is None:
        raise ConfigError("TRUTO_API_KEY is set but TRUTO_INTEGRATED_ACCOUNT_ID is not")
    return TrutoAccount(
        settings.truto_base_url,
        settings.truto_api_key.get_secret_value(),
        settings.truto_integrated_account_id,
        transport,
    )


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    report_dir: Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    recordings_dir: Path | None = None,
    announce_sandbox: bool = True,
) -> AsyncIterator[Services]:
    """The process's services (`build_services`) for the length of a block; the tool layer and the audit store
    are closed after it."""
    services = await build_services(
        settings,
        transport=transport,
        clock=clock,
        report_dir=report_dir,
        on_progress=on_progress,
        recordings_dir=recordings_dir,
        announce_sandbox=announce_sandbox,
    )
    try:
        yield services
    finally:
        try:
            await services.toolbox.aclose()
        finally:
            if services.audit_store is not None:
                await services.audit_store.aclose()


def clinic_ids(settings: Settings) -> tuple[str | None, str | None, str | None]:
    """The team, waiting queue and intake collection the graphs default to (COVIU_TEAM_ID, ...).

    On a sandbox, whatever a setting leaves unset is the sandbox's demo id: the embedded sandbox (no TRUTO_API_KEY),
    and a served sandbox's demo account (`coviu-agent sandbox serve`, TRUTO_INTEGRATED_ACCOUNT_ID=sandbox; no real
    Truto account has that id). Any other account has no defaults.
    """
    ids = (settings.coviu_team_id, settings.coviu_waiting_queue_id, settings.coviu_intake_collection_id)
    if not (settings.uses_sandbox or settings.truto_integrated_account_id == SANDBOX_ACCOUNT_ID):
        return ids
    from sandbox import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID

    team, queue, collection = ids
    return team or DEMO_TEAM_ID, queue or DEMO_WAITING_QUEUE_ID, collection or DEMO_INTAKE_COLLECTION_ID


def _mcp_url(settings: Settings) -> str:
    """TRUTO_MCP_URL, checked (a bad one, or one that is not the embedded sandbox's without TRUTO_API_KEY: BadInput)."""
    from tools.mcp_source import McpUrlError, check_mcp_url

    assert settings.truto_mcp_url is not None
    url = settings.truto_mcp_url.get_secret_value()
    try:
        parsed = check_mcp_url(url)
    except McpUrlError as exc:
        raise BadInput(str(exc)) from None
    if settings.uses_sandbox and parsed.host != httpx.URL(SANDBOX_BASE_URL).host:
        raise BadInput(
            "TRUTO_MCP_URL is set but TRUTO_API_KEY is not: set TRUTO_API_KEY and TRUTO_INTEGRATED_ACCOUNT_ID for "
            "the same account (or use the embedded sandbox's http://sandbox.local/mcp/sandbox-mcp-demo)"
        )
    return url


def _download_index(recordings_dir: Path | None) -> BinaryLocator | None:
    """Binary tools report where `coviu-agent recordings` put a file, when given its directory."""
    if recordings_dir is None:
        return None
    from workers.recordings import DownloadIndex

    return DownloadIndex(recordings_dir)
