"""The account's Truto MCP servers (`/integrated-account/{id}/mcp`): create, list, delete.

An MCP server's URL carries its token, so it is a secret: `run_mcp_create` returns it once (Truto shows it only at
creation) and nothing logs it; a listed server never has it. These functions do the I/O and return typed results;
the CLI (agent/cli/mcp.py) checks the flags and prints. Truto refusing a request is `BadInput` (exit 2); Truto
unreachable or failing is the client's typed error (exit 3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agent.errors import BadInput

if TYPE_CHECKING:
    from agent.services import TrutoAccount
    from agent.settings import Settings
    from tools.client import TrutoClient

Event = Callable[[str], None]
_REFUSED = {400, 409, 422}  # Truto understood the request and said no: bad input


@dataclass(frozen=True)
class McpServerMade:
    """A new MCP server. `url` is a secret, shown once."""

    id: Any
    name: str
    url: str


@dataclass(frozen=True)
class McpServerListed:
    """A listed MCP server, without anything secret."""

    id: Any
    name: Any
    methods: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    expires_at: Any = None
    created_at: Any = None


@asynccontextmanager
async def admin_client(
    settings: Settings, on_event: Event | None = None
) -> AsyncIterator[tuple[TrutoClient, TrutoAccount]]:
    """A Truto client for admin routes (API token; no proxy, no governor pacing) and the account it is for
    (`agent.services.truto_account`: the embedded sandbox when asked for, else the real account)."""
    from agent.services import truto_account
    from tools.client import TrutoClient
    from tools.ratelimit import RateLimitGovernor

    account = truto_account(settings)
    if account.embedded and on_event is not None:
        from sandbox.mcp import DEMO_MCP_TOKEN

        on_event(
            "coviu-agent: using the embedded sandbox (as asked for), which forgets its MCP servers when "
            f"this command ends (its demo server is always there: {account.base_url}/mcp/{DEMO_MCP_TOKEN}). "
            "For lasting ones, run `coviu-agent sandbox serve` and point TRUTO_BASE_URL at it."
        )
    client = TrutoClient(
        base_url=account.base_url,
        api_key=account.api_key,
        integrated_account_id=account.account_id,
        governor=RateLimitGovernor(),
        transport=account.transport,
    )
    try:
        yield client, account
    finally:
        await client.aclose()


async def _admin(
    settings: Settings, verb: str, suffix: str = "", body: Any = None, on_event: Event | None = None
) -> tuple[Any, TrutoAccount]:
    """One admin call on the account's MCP servers: Truto's answer, and the account it was for."""
    from tools.errors import TrutoError

    async with admin_client(settings, on_event) as (client, account):
        path = f"/integrated-account/{quote(account.account_id, safe='')}/mcp{suffix}"
        try:
            return await client.request_json(verb, path, body=body, proxy=False), account
        except TrutoError as exc:
            if exc.status_code in _REFUSED:
                raise BadInput(f"Truto refused it: {exc.describe()}") from None
            raise


def listed(server: Any) -> McpServerListed:
    """A listed server without anything secret (defensive: Truto's list has no token or URL anyway)."""
    if not isinstance(server, dict):
        return McpServerListed(id=None, name=str(server))
    config: dict[str, Any] = server["config"] if isinstance(server.get("config"), dict) else {}
    return McpServerListed(
        id=server.get("id"),
        name=server.get("name"),
        methods=list(config.get("methods") or []),
        tags=list(config.get("tags") or []),
        expires_at=server.get("expires_at"),
        created_at=server.get("created_at"),
    )


async def run_mcp_create(
    settings: Settings, *, name: str, config: dict[str, Any], expires_at: str | None, on_event: Event | None = None
) -> McpServerMade:
    """Create an MCP server for the account; its URL (a secret) is in the result, and only there."""
    payload = {"name": name, "config": config, "expires_at": expires_at}
    created, account = await _admin(settings, "POST", body=payload, on_event=on_event)
    if not isinstance(created, dict):
        raise BadInput("Truto's answer has no MCP server in it")
    url = created.get("url")
    if not url and created.get("token"):
        url = f"{account.base_url}/mcp/{created['token']}"
    if not url:
        raise BadInput("Truto's answer has no URL or token for the new MCP server")
    return McpServerMade(id=created.get("id"), name=str(created.get("name", name)), url=str(url))


async def run_mcp_list(settings: Settings, *, on_event: Event | None = None) -> list[McpServerListed]:
    """The account's MCP servers (never their URLs)."""
    payload, _ = await _admin(settings, "GET", on_event=on_event)
    items = payload
    if isinstance(payload, dict):
        items = payload.get("result")
        if items is None:
            items = payload.get("results", [])
    if not isinstance(items, list):
        raise BadInput("Truto's answer has no list of MCP servers")
    return [listed(s) for s in items]


async def run_mcp_delete(settings: Settings, mcp_id: str, *, on_event: Event | None = None) -> None:
    """Delete an MCP server: its URL stops working at once."""
    await _admin(settings, "DELETE", f"/{quote(mcp_id, safe='')}", on_event=on_event)
