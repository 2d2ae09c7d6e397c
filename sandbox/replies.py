"""What the sandbox answers with: a request's record, a reply about to be sent, and a Truto error as a reply.

Shared by the HTTP app (`sandbox.app`) and the MCP server (`sandbox.mcp`), which import it, never each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox.errors import TrutoError

if TYPE_CHECKING:
    from sandbox.config import SandboxConfig


@dataclass(slots=True)
class RequestRecord:
    """One request that reached the sandbox, and how it was answered."""

    method: str
    path: str
    resource: str | None
    truto_method: str | None
    status: int
    idempotency_key: str | None
    query: dict[str, Any]
    fault: str | None = None


@dataclass(slots=True)
class Reply:
    """A response about to be sent, with the faults that will shape its delivery."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    slow_seconds: float = 0.0
    drop: bool = False
    drip_seconds: float = 0.0  # bounds faults (sandbox/faults.py): one byte every drip_seconds
    pad_to: int = 0  # a JSON body padded to this many bytes, streamed without a Content-Length
    endless: bool = False  # a body that never ends, without a Content-Length

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status=status, body=body, headers=dict(headers or {}))


def error_reply(
    error: TrutoError, extra_headers: dict[str, str] | None = None, config: SandboxConfig | None = None
) -> Reply:
    headers = dict(extra_headers or {})
    headers.update(error.headers)
    body = error.body()
    if config is not None and config.remote_error_message == "raw_response" and error.remote:
        body["message"] = ""  # Truto may leave it empty for provider errors: the text is in raw_response
    return Reply.json(body, error.status, headers)
