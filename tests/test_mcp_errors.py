"""The MCP source's one error mapper: the status, and with it a 429, comes from status fields, never from text."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from mcp import types
from mcp.shared.exceptions import McpError

from tools.errors import RateLimitedError, TransportError, TrutoError
from tools.mcp_source.errors import McpRefusedError, error_from_rpc, error_from_tool_result

HEADERS = {"retry-after": "7"}


class Observed:
    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.seen: list[tuple[dict[str, str], int]] = []

    def __call__(self, headers: Mapping[str, str], status: int) -> float:
        self.seen.append((dict(headers), status))
        return self.hold


def tool_error(text: str, http_status: int | None = 200, observe: Observed | None = None) -> TrutoError:
    return error_from_tool_result(
        text, http_status=http_status, headers=HEADERS, observe=observe or Observed(), method="GET", path="mcp:x"
    )


def test_a_number_in_an_error_text_is_not_a_status() -> None:
    error = tool_error("Error: patient 429 has no intake form")
    assert type(error) is TrutoError and error.status_code == 400


def test_trutos_error_body_in_a_tool_result_gives_the_status_and_the_wait() -> None:
    observe = Observed(hold=7.0)
    error = tool_error('{"statusCode": 429, "error": "Too Many Requests", "message": "slow down"}', observe=observe)
    assert isinstance(error, RateLimitedError) and error.retry_after == 7.0
    assert observe.seen == [(HEADERS, 429)]


def test_without_a_body_status_the_mcp_responses_own_error_status_counts() -> None:
    assert tool_error("upstream unavailable", http_status=503).status_code == 503
    assert tool_error("the tool refused", http_status=200).status_code == 400
    assert tool_error('Error: {"status": "429"}').status_code == 429


def rpc_error(data: dict[str, object] | None, code: int = -32050, message: str = "failed") -> McpError:
    return McpError(types.ErrorData(code=code, message=message, data=data))


@pytest.mark.parametrize("opening", [True, False])
def test_a_refused_token_names_the_host_and_the_way_out(opening: bool) -> None:
    error = error_from_rpc(
        rpc_error({"coviu_agent": {"status": 401, "reason": "Unauthorized", "headers": {}, "body": None}}),
        method="POST",
        path="mcp:list_all_coviu_sessions",
        host="api.truto.one",
        opening=opening,
    )
    assert isinstance(error, McpRefusedError)
    assert "api.truto.one refused the token" in str(error) and "coviu-agent mcp create" in str(error)


def test_an_http_429_on_the_mcp_endpoint_is_rate_limited_by_its_status() -> None:
    observe = Observed(hold=3.0)
    data = {"coviu_agent": {"status": 429, "reason": "Too Many Requests", "headers": HEADERS, "body": {}}}
    error = error_from_rpc(rpc_error(data), method="POST", path="mcp:x", host="h", opening=False, observe=observe)
    assert isinstance(error, RateLimitedError) and error.retry_after == 3.0


def test_protocol_codes_map_like_the_proxy_path() -> None:
    timeout = error_from_rpc(rpc_error(None, code=408), method="GET", path="mcp:x", host="h", opening=False)
    assert isinstance(timeout, TransportError) and timeout.kind == "timeout"
    missing = error_from_rpc(
        rpc_error(None, code=types.METHOD_NOT_FOUND), method="GET", path="mcp:x", host="h", opening=False
    )
    assert isinstance(missing, TrutoError) and missing.status_code == 404
    at_start = error_from_rpc(rpc_error(None, code=408), method="POST", path="MCP initialize", host="h", opening=True)
    assert isinstance(at_start, McpRefusedError)
