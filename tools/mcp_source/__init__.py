"""The MCP tool source: Truto's per-account MCP server (`tools/list`, `tools/call`) instead of `/tools` + proxy.

Selected by `TRUTO_MCP_URL` (agent/services.py). It produces the same `ToolCatalog`/`ToolSpec` objects as
`/tools`, and plugs into `ToolExecutor.run` as its `dispatch`, so validation, id filling, the binary guard,
the approval gate, the governor and the graphs' retry path do not know which source is in use.

- One `mcp.ClientSession` per process, over the `mcp` package's streamable HTTP client. A background task owns
  it (anyio scopes must be exited by the task that entered them); callers in any task share it. If it dies,
  the next call reopens it.
- The URL is a secret (its token is the auth). The `mcp` client and httpx only ever see an alias with the
  token replaced (`…/mcp/token-redacted`), so their logs and exceptions cannot leak it; `McpHttp` (http.py), the httpx
  transport underneath, swaps in the real URL per request.
- `McpHttp` (http.py) also turns what would kill the session (HTTP 4xx/5xx, connect errors, timeouts, a cut or malformed
  body) into a JSON-RPC error for that one request, with the details in `error.data`, and records each
  `tools/call`'s HTTP status and headers (found by a marker in the call's `_meta`), so `McpDispatch` can map
  them onto `TrutoError`/`RateLimitedError`/`TransportError` and feed the governor's `observe`.
- Binary results (embedded blobs, images, audio, resource links) become `BinaryBody` metadata: the executor's
  binary guard then answers with metadata only, never bytes.

Resource and method come from each tool's `_meta` (`truto.resource`/`truto.method`, or flat `resource`/`method`)
when the server sends them. Otherwise they are inferred from Truto's naming convention (README, "Tool sources":
`list_all_{integration}_{resource}`, `get_single_{integration}_{singular}_by_id`, `create_a_…`, `update_a_…_by_id`,
`delete_a_…_by_id`), the singular mapped to a list tool's resource when one exists; any other name becomes a
`custom` method (never read-only). Dispatch itself is by tool name.

The package: http.py (the transport and the URL), session.py (the shared session), catalog.py (tools/list to a
`ToolCatalog`), dispatch.py (tools/call), errors.py (the one error mapper: what Truto's MCP answers, and why a 429
is decided by status fields only).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from tools.client import DEFAULT_TIMEOUT
from tools.clock import Clock, SystemClock
from tools.mcp_source.catalog import DISCOVERY_TOOLS, catalog_from_mcp, check_exposure, infer_resource_and_method
from tools.mcp_source.dispatch import McpDispatch
from tools.mcp_source.errors import McpRefusedError, McpUrlError, transport_error
from tools.mcp_source.http import ALIAS_PATH, CALL_MARKER, check_mcp_url, redacted_mcp_url
from tools.mcp_source.session import McpSource
from tools.retry import call_with_retries
from tools.toolbox import Toolbox, open_toolbox

__all__ = [
    "ALIAS_PATH",
    "CALL_MARKER",
    "DISCOVERY_TOOLS",
    "McpDispatch",
    "McpRefusedError",
    "McpSource",
    "McpUrlError",
    "catalog_from_mcp",
    "check_exposure",
    "check_mcp_url",
    "infer_resource_and_method",
    "open_mcp_toolbox",
    "redacted_mcp_url",
    "transport_error",
]

log = logging.getLogger(__name__)


async def open_mcp_toolbox(
    *,
    mcp_url: str,
    base_url: str,
    api_key: str,
    integrated_account_id: str,
    transport: httpx.AsyncBaseTransport | None = None,
    mcp_transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    integration: str | None = "coviu",
    **toolbox_options: Any,
) -> Toolbox:
    """A `Toolbox` whose catalog comes from MCP `tools/list` and whose executor dispatches by `tools/call`.

    The toolbox keeps its `TrutoClient` (same account governor; binary downloads and admin calls still use the
    proxy). `mcp_transport` defaults to `transport`, so an in-process sandbox serves both. The API token is sent
    to the MCP server only when it is on the same host as `base_url`.
    """
    clock = clock or SystemClock()
    # The API token goes along only to Truto's own host (for servers made with `require_api_token_auth`).
    same_host = check_mcp_url(mcp_url).host == httpx.URL(base_url).host
    headers = {"Authorization": f"Bearer {api_key}"} if same_host else None
    source = McpSource(mcp_url, transport=mcp_transport or transport, timeout=timeout, headers=headers)
    try:
        await call_with_retries("opening the MCP session", source.start, clock=clock)
        tools = await call_with_retries("listing the MCP tools", source.list_tools, clock=clock)
        catalog = catalog_from_mcp(tools, integration=integration)
        check_exposure(catalog)
        toolbox = await open_toolbox(
            base_url=base_url,
            api_key=api_key,
            integrated_account_id=integrated_account_id,
            transport=transport,
            clock=clock,
            timeout=timeout,
            catalog=catalog,
            dispatch=lambda client: McpDispatch(source, client),
            **toolbox_options,
        )
    except BaseException:
        await source.aclose()
        raise
    toolbox.resources.append(source)
    log.info("MCP session open (%s): %d tools", source.server_name or "server", len(catalog))
    return toolbox
