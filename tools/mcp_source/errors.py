"""The one error mapper of the MCP source: every MCP failure as the typed error the proxy path raises for the
same failure (tools/errors.py's `error_from_payload` and `TransportError`), so retries, waits and messages do not
know which source is in use.

What Truto's MCP server answers (the sandbox, sandbox/mcp.py, answers the same):
- a proxy error inside a `tools/call` (the provider's 4xx/5xx, Truto's own 429) is an `isError` tool result whose
  text is Truto's error body, `{"statusCode", "error", "message", "truto_is_remote_error"?, "raw_response"?}`, with
  the proxy's `ratelimit-*`/`retry-after` headers on the MCP HTTP response;
- a refused token, a deleted or expired server, or a limit on the MCP endpoint itself is an HTTP status on the MCP
  response, which `McpHttp` (http.py) turns into a JSON-RPC error carrying the status, reason, rate headers and body
  under `data["coviu_agent"]`, transport failures likewise as `{"transport", "detail", "sent"}`;
- protocol failures are JSON-RPC error codes (request timeout, connection closed, method not found).
So the status, and with it a 429, comes from those status fields only (`statusCode`, the HTTP status), never from
numbers in an error's text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from mcp import types
from mcp.shared.exceptions import McpError

from tools.errors import CoviuAgentError, MalformedResponseError, TransportError, TrutoError, error_from_payload
from tools.ratelimit import hold_for_429, parse_rate_limit_headers

SHIM_KEY = "coviu_agent"  # where `McpHttp` puts an HTTP failure's details in a JSON-RPC error's `data`
REFUSED_STATUSES = (401, 403, 404, 410)  # the token is unknown, expired or deleted
# (rate-limit headers, status) -> the seconds the governor holds the account (its `observe`)
Observe = Callable[[Mapping[str, str], int], float]


class McpUrlError(CoviuAgentError, ValueError):
    """TRUTO_MCP_URL is not a usable MCP URL (nothing was sent). The message never contains the URL."""


class McpRefusedError(CoviuAgentError):
    """The MCP server refused the URL's token (unknown, expired, deleted) or the session could not start."""


def transport_error(kind: str, detail: str, *, method: str, path: str, sent: bool) -> TransportError:
    """The typed transport error the proxy path would raise for the same failure."""
    if kind in ("malformed response", "malformed JSON"):
        return MalformedResponseError(detail, method=method, path=path, sent=sent)
    return TransportError(kind, detail, method=method, path=path, sent=sent)


def short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _shim_data(error: McpError) -> dict[str, Any] | None:
    data = error.error.data
    if isinstance(data, dict) and isinstance(data.get(SHIM_KEY), dict):
        return data[SHIM_KEY]
    return None


def _refused(status: int, host: str, during: str | None) -> McpRefusedError:
    when = f" during {during}" if during else ""
    return McpRefusedError(
        f"the MCP server at {host} refused the token in TRUTO_MCP_URL ({status}){when}: it is invalid, expired or "
        "deleted. Create a new one with `coviu-agent mcp create` and set TRUTO_MCP_URL to the URL it prints."
    )


def error_from_rpc(
    error: McpError,
    *,
    method: str,
    path: str,
    host: str,
    opening: bool,
    observe: Observe | None = None,
    received_at: datetime | None = None,
) -> Exception:
    """The typed error for a JSON-RPC error: while `opening` the session (initialize, tools/list), or answering a
    `tools/call` (whose rate-limit headers `observe` hands to the governor). Without a governor (`observe`: opening
    the session), a 429 waits what its own headers say (`hold_for_429`)."""
    data = _shim_data(error)
    if data and "transport" in data:
        sent = False if opening else bool(data.get("sent"))
        return transport_error(str(data["transport"]), str(data.get("detail", "")), method=method, path=path, sent=sent)
    if data and isinstance(data.get("status"), int):
        status = int(data["status"])
        headers = {str(k): str(v) for k, v in _dict(data.get("headers")).items()}
        if observe is not None:
            hold = observe(headers, status)
        else:
            hold = (
                hold_for_429(parse_rate_limit_headers(headers, received_at or datetime.now(UTC)))
                if status == 429
                else 0.0
            )
        if status in REFUSED_STATUSES:
            return _refused(status, host, None if opening else path)
        # opening: the MCP layer's own answer (its body is JSON-RPC, not Truto's error body)
        payload = {"message": error.error.message} if opening else _dict(data.get("body"))
        reason = str(data.get("reason") or "")
        return error_from_payload(
            status,
            payload,
            reason=reason,
            headers=headers,
            method=method,
            path=path,
            hold=hold,
            received_at=received_at,
        )
    if opening:
        return McpRefusedError(f"the MCP server at {host} refused to start a session: {error}")
    code = error.error.code
    if code == httpx.codes.REQUEST_TIMEOUT:
        return TransportError("timeout", "no answer from the MCP server", method=method, path=path)
    if code == types.CONNECTION_CLOSED:
        return TransportError("connection closed", error.error.message, method=method, path=path)
    status = 404 if code == types.METHOD_NOT_FOUND else 400
    return TrutoError(status, "MCP error", f"{error.error.message} (JSON-RPC {code})", method=method, path=path)


def error_opening(error: BaseException, *, host: str) -> BaseException:
    """The typed error for a session that could not start (initialize or tools/list)."""
    if isinstance(error, McpError):
        return error_from_rpc(error, method="POST", path="MCP initialize", host=host, opening=True)
    if isinstance(error, CoviuAgentError):
        return error
    return McpRefusedError(f"could not start an MCP session with {host}: {type(error).__name__}: {short(error)}")


def json_in(text: str) -> Any:
    """The JSON value in a tool's text (also after a prefix such as `Error: `); raises ValueError."""
    try:
        return json.loads(text)
    except ValueError:
        start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
        if start <= 0:
            raise
        return json.loads(text[start:])


def _status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        status = int(value)
    except (TypeError, ValueError):
        return None
    return status if 100 <= status <= 599 else None


def error_from_tool_result(
    text: str,
    *,
    http_status: int | None,
    headers: Mapping[str, str],
    observe: Observe,
    method: str,
    path: str,
    received_at: datetime | None = None,
) -> TrutoError:
    """The typed error for an `isError` tool result: Truto's error body in its text (its `statusCode`), else the
    MCP HTTP response's own error status, else a 400 (the tool refused the call)."""
    try:
        payload = json_in(text)
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {"raw_response": payload}
    status = _status(payload.get("statusCode")) or _status(payload.get("status"))
    if status is None:
        status = http_status if http_status is not None and http_status >= 400 else 400
    if not payload.get("message") and "statusCode" not in payload:
        # not Truto's error body: the text is the message (Truto's own body may leave `message` empty,
        # with the provider's text in raw_response: TrutoError.provider_message reads it there)
        payload = {**payload, "message": text[:500]}
    hold = observe(headers, status)
    return error_from_payload(
        status, payload, headers=headers, method=method, path=path, hold=hold, received_at=received_at
    )
