"""Builds the process's services from settings: the one Truto client (real or embedded sandbox),
the tool catalog, the model, the clock. This is the only place that chooses the transport and the tool
source (`/tools` + proxy, or Truto's MCP server when TRUTO_MCP_URL is set).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import httpx

from agent.model import make_model
from agent.settings import SANDBOX_ACCOUNT_ID, SANDBOX_BASE_URL, Settings
from graphs.audit_store import open_audit_store
from graphs.context import Services
from tools.clock import Clock, SystemClock
from tools.toolbox import Toolbox, open_toolbox

log = logging.getLogger(__name__)


async def build_services(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    model: object | None = None,
    report_dir: Path | None = None,
    announce_sandbox: bool = True,
) -> Services:
    """Open the tool layer for this settings object. With no Truto key, the sandbox answers in-process."""
    clock = clock or SystemClock()
    team_id, queue_id, collection_id = clinic_ids(settings)
    if settings.uses_sandbox:
        from sandbox import DEMO_ACCOUNT_ID, SandboxConfig, SandboxTransport, create_sandbox

        if announce_sandbox:
            sys.stderr.write("coviu-agent: TRUTO_API_KEY is not set; using the embedded Coviu sandbox (demo data).\n")
        if transport is None:
            transport = SandboxTransport(create_sandbox(SandboxConfig.from_env()))
        base_url, api_key, account_id = SANDBOX_BASE_URL, "sandbox", DEMO_ACCOUNT_ID
    else:
        assert settings.truto_api_key is not None and settings.truto_integrated_account_id is not None
        base_url = settings.truto_base_url
        api_key = settings.truto_api_key.get_secret_value()
        account_id = settings.truto_integrated_account_id
    if settings.truto_mcp_url is not None:
        toolbox = await _open_mcp_toolbox(settings, base_url, api_key, account_id, transport, clock)
    else:
        toolbox = await open_toolbox(
            base_url=base_url,
            api_key=api_key,
            integrated_account_id=account_id,
            transport=transport,
            clock=clock,
            rate_limit=settings.truto_rate_limit,
            bounds=settings.bounds(),
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
        planner=settings.effective_planner if chat_model is not None else "rules",
        report_dir=report_dir or Path("reports"),
        audit_store=open_audit_store(settings.state),  # side rows and summary cache, next to the checkpoints
    )


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


async def _open_mcp_toolbox(
    settings: Settings,
    base_url: str,
    api_key: str,
    account_id: str,
    transport: httpx.AsyncBaseTransport | None,
    clock: Clock,
) -> Toolbox:
    """TRUTO_MCP_URL is set: the catalog and every tool call go through Truto's MCP server (tools/mcp_source.py)."""
    from agent.errors import BadInput
    from tools.mcp_source import McpUrlError, check_mcp_url, open_mcp_toolbox

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
    return await open_mcp_toolbox(
        mcp_url=url,
        base_url=base_url,
        api_key=api_key,
        integrated_account_id=account_id,
        transport=transport,
        clock=clock,
        rate_limit=settings.truto_rate_limit,
        bounds=settings.bounds(),
    )
