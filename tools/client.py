"""The one Truto client: one httpx.AsyncClient, bearer auth, typed errors, rate-limit pacing.

Every request to Truto goes through `TrutoClient._send`; binary bodies are never read into memory here.
Every JSON request ends: a total deadline covers the send and the whole body (the read timeout alone resets
on every byte), and a JSON body over a cap is stopped while streaming. A 2xx is valid or an error
(`MalformedResponseError`): never `{}` for an empty body, a 204, `null`, HTML; a 3xx is never followed.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from tools import telemetry
from tools.clock import Clock, SystemClock
from tools.errors import (
    MalformedResponseError,
    ResponseTooLargeError,
    TransportError,
    error_from_httpx,
    error_from_payload,
)
from tools.ratelimit import RateLimitBudget, RateLimitGovernor, RateLimitInfo, Ticket, parse_rate_limit_headers

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Every JSON request ends within this many seconds (send + the whole body), whatever the server drips.
DEFAULT_REQUEST_DEADLINE = 60.0
# A JSON body longer than this is an upstream error, stopped while streaming (binaries are streamed to disk).
DEFAULT_MAX_JSON_BYTES = 32 * 1024 * 1024
JSON_TYPES = ("application/json", "application/problem+json", "text/json")
# What the binary guard answers with metadata: media and documents. Any other non-JSON type on a 2xx
# (text/html login pages, text/plain, XML) is a malformed response, not a binary.
BINARY_PREFIXES = ("audio/", "video/", "image/", "font/")
BINARY_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/msword",
        "application/rtf",
        "application/dicom",
    }
)

# Truto method name -> HTTP verb; anything else is a custom method (POST /proxy/{resource}/{method}).
HTTP_VERBS = {"list": "GET", "get": "GET", "create": "POST", "update": "PATCH", "delete": "DELETE"}
METHODS_WITH_ID = frozenset({"get", "update", "delete"})


@dataclass(frozen=True)
class BinaryBody:
    """What a binary response is, without its bytes: the binary guard's answer."""

    content_type: str
    size: int | None
    status_code: int

    def as_dict(self) -> dict[str, Any]:
        return {"binary": True, "content_type": self.content_type, "size_bytes": self.size}


def is_json_content_type(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return base in JSON_TYPES or base.endswith("+json")


def is_binary_content_type(content_type: str) -> bool:
    """Media and document types (the binary guard's business); text/* and the like are not binary."""
    base = content_type.split(";", 1)[0].strip().lower()
    return (
        base.startswith(BINARY_PREFIXES)
        or base in BINARY_TYPES
        or base.startswith("application/vnd.openxmlformats")
        or base.startswith("application/vnd.ms-")
    )


def encode_query(params: Mapping[str, Any]) -> list[tuple[str, str | int | float | bool | None]]:
    """Truto's query syntax: booleans as true/false, objects as foo[bar]=x, arrays as arr[]=1&arr[]=2."""
    pairs: list[tuple[str, str | int | float | bool | None]] = []

    def add(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                add(f"{key}[{k}]", v)
        elif isinstance(value, list | tuple):
            for v in value:
                add(f"{key}[]", v)
        else:
            pairs.append((key, str(value)))

    for k, v in params.items():
        add(k, v)
    return pairs


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context (the CA bundle loaded once) for every client of the process: loading it took about 16 ms of
    CPU a client, 1.6 s for a fleet of 100 clinics (each its own client)."""
    return httpx.create_ssl_context()


class TrutoClient:
    """Talks to Truto for one integrated account.

    One instance per process (it owns one `httpx.AsyncClient`); the transport is injected, so the
    embedded sandbox, a mock, or the real network are all the same code path. `budget` is the run's rate-limit
    wait budget, handed to the governor with every send; `for_run(budget)` is the same client (same connection
    pool and governor) for another run, with that run's budget.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        integrated_account_id: str,
        governor: RateLimitGovernor,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
        request_deadline: float = DEFAULT_REQUEST_DEADLINE,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
        budget: RateLimitBudget | None = None,
    ) -> None:
        if not request_deadline > 0 or max_json_bytes < 1:
            raise ValueError("request_deadline and max_json_bytes must be positive")
        self.request_deadline = float(request_deadline)
        self.max_json_bytes = int(max_json_bytes)
        self.integrated_account_id = integrated_account_id
        self.governor = governor
        self.budget: RateLimitBudget = budget if budget is not None else RateLimitBudget()
        self.clock: Clock = clock or governor.clock or SystemClock()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            # an injected transport (the embedded sandbox, a test's) brings its own: no TLS context to build
            verify=shared_ssl_context() if transport is None else True,
        )
        self.requests_sent = 0

    def for_run(self, budget: RateLimitBudget) -> TrutoClient:
        """This client for another run: the same connection pool, governor and clock, that run's `budget`."""
        run = copy.copy(self)
        run.budget = budget
        return run

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> TrutoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- paths -----------------------------------------------------------------------------------

    @staticmethod
    def proxy_path(resource: str, method: str, record_id: str | None) -> str:
        """URL path for a tool's resource + Truto method (README: "Tool sources")."""
        res = quote(resource, safe="")
        if method == "list" or method == "create":
            return f"/proxy/{res}"
        if method in METHODS_WITH_ID:
            if not record_id:
                raise ValueError(f"{method} on {resource} needs an id")
            return f"/proxy/{res}/{quote(str(record_id), safe='')}"
        return f"/proxy/{res}/{quote(method, safe='')}"

    # --- the one request path --------------------------------------------------------------------

    @asynccontextmanager
    async def _send(
        self,
        verb: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        proxy: bool = True,
        deadline: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Pace, send, map errors. Yields a streaming 2xx response (body not read yet).

        With `deadline`, everything after the pacing wait (send, headers, and whatever the caller reads
        inside the block) must finish within that many seconds, or a `TransportError` (timeout) is raised.
        """
        params = encode_query(
            {**(query or {}), **({"integrated_account_id": self.integrated_account_id} if proxy else {})}
        )
        ticket: Ticket | None = None
        if proxy:
            ticket = await self.governor.acquire(self.budget, self.clock.sleep, f"{verb} {path}")
            if ticket.waited > 0:
                log.debug("paced %.2fs before %s %s", ticket.waited, verb, path)
        request = self._http.build_request(
            verb, path, params=params, json=body if body is not None else None, headers=dict(headers or {})
        )
        self.requests_sent += 1
        with telemetry.http_request(verb, path, self.integrated_account_id):
            if deadline is None:
                async with self._exchange(request, verb, path, ticket) as response:
                    yield response
                return
            timer = asyncio.timeout(deadline)
            try:
                async with timer, self._exchange(request, verb, path, ticket) as response:
                    yield response
            except TimeoutError as exc:
                if not timer.expired():
                    raise
                raise TransportError(
                    "timeout", f"no complete answer within the {deadline:g} s request deadline", method=verb, path=path
                ) from exc

    @asynccontextmanager
    async def _exchange(
        self, request: httpx.Request, verb: str, path: str, ticket: Ticket | None
    ) -> AsyncIterator[httpx.Response]:
        """Send; tell the governor what the answer said (`ticket`: the paced send's slot, None when not paced)."""
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise error_from_httpx(exc, method=verb, path=path) from exc
        telemetry.http_status(response.status_code)
        try:
            if ticket is not None:
                info = parse_rate_limit_headers(response.headers, self.clock.now())
                hold = self.governor.observe(info, status_code=response.status_code, ticket=ticket)
            elif response.status_code == 429:
                # Not paced (the catalog is not the account's proxy), but a 429 is still the account's schedule:
                # its Retry-After (or the default back-off) holds the governor, so the retry waits and is budgeted.
                info = parse_rate_limit_headers(response.headers, self.clock.now())
                only_wait = RateLimitInfo(
                    reset_seconds=info.reset_seconds, retry_after_seconds=info.retry_after_seconds
                )
                hold = self.governor.observe(only_wait, status_code=429)
            else:
                hold = 0.0
            if response.status_code >= 400:
                await self._raise_for_error(response, verb, path, hold, self.clock.now())
            if 300 <= response.status_code < 400:
                # Never followed: the bearer token must not leave the configured host, and a redirect is not
                # what Truto's API answers. The Location is not repeated (it may carry anything).
                raise MalformedResponseError(
                    f"{response.status_code} redirect was not followed (redirects are never followed)",
                    method=verb,
                    path=path,
                )
            yield response
        finally:
            await response.aclose()

    async def _read_body(self, response: httpx.Response, verb: str, path: str) -> bytes:
        """The whole body, up to `max_json_bytes`: a longer one is stopped while streaming."""
        cap = self.max_json_bytes
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            raise ResponseTooLargeError(cap, method=verb, path=path, announced=int(length))
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise ResponseTooLargeError(cap, method=verb, path=path)
            return bytes(body)
        except httpx.TimeoutException as exc:
            raise TransportError("timeout", "while reading the body", method=verb, path=path) from exc
        except httpx.TransportError as exc:
            raise TransportError("connection dropped", type(exc).__name__, method=verb, path=path) from exc

    async def _raise_for_error(
        self, response: httpx.Response, verb: str, path: str, hold: float, received_at: datetime
    ) -> None:
        raw = await self._read_body(response, verb, path)
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"message": raw[:500].decode("utf-8", "replace")}
        if not isinstance(payload, dict):
            payload = {"raw_response": payload}
        raise error_from_payload(
            response.status_code,
            payload,
            reason=response.reason_phrase,
            headers=response.headers,
            method=verb,
            path=path,
            hold=hold,
            received_at=received_at,
        )

    async def request_json(
        self,
        verb: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        proxy: bool = True,
    ) -> Any | BinaryBody:
        """Send one request; return parsed JSON, or `BinaryBody` metadata for a media/document body.

        Valid or error: a 2xx with no body (204, empty), `null`, unparsable JSON or a text/HTML page raises
        `MalformedResponseError` (transient: retried), except that a DELETE may answer empty (`{}`).
        """
        async with self._send(
            verb, path, query=query, body=body, headers=headers, proxy=proxy, deadline=self.request_deadline
        ) as response:
            content_type = response.headers.get("content-type", "")
            status = response.status_code
            if status == 204:
                if verb == "DELETE":
                    return {}
                raise MalformedResponseError(
                    f"{status} No Content where a JSON body was expected", method=verb, path=path
                )
            if content_type and not is_json_content_type(content_type):
                base = content_type.split(";")[0].strip()
                if not is_binary_content_type(base):
                    raise MalformedResponseError(
                        f"{status} with a {base or 'typeless'} body where JSON was expected", method=verb, path=path
                    )
                length = response.headers.get("content-length", "")
                return BinaryBody(base, int(length) if length.isdigit() else None, status)
            raw = await self._read_body(response, verb, path)
            if not raw.strip():
                if verb == "DELETE":
                    return {}
                raise MalformedResponseError(
                    f"{status} with an empty body where JSON was expected", method=verb, path=path
                )
            try:
                payload = json.loads(raw)
            except ValueError as exc:
                raise MalformedResponseError(
                    f"{len(raw)} bytes could not be parsed as JSON", method=verb, path=path
                ) from exc
            if payload is None:
                raise MalformedResponseError(f"{status} with a JSON `null` body", method=verb, path=path)
            return payload

    async def proxy(
        self,
        resource: str,
        method: str,
        *,
        record_id: str | None = None,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any | BinaryBody:
        """Run one proxy call by Truto resource + method (list/get/create/update/delete/custom)."""
        verb = HTTP_VERBS.get(method, "POST")
        path = self.proxy_path(resource, method, record_id)
        headers: dict[str, str] = {}
        send_body: Any = None
        if verb in ("POST", "PATCH", "PUT"):
            send_body = dict(body or {})
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        return await self.request_json(verb, path, query=query, body=send_body, headers=headers)

    @asynccontextmanager
    async def stream_proxy(
        self,
        resource: str,
        method: str,
        *,
        record_id: str | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A streaming GET for binaries (recordings worker): the caller iterates `aiter_bytes()`."""
        path = self.proxy_path(resource, method, record_id)
        async with self._send("GET", path, query=query, headers=headers) as response:
            yield response

    async def list_tools(self, *, methods: list[str] | None = None, tags: list[str] | None = None) -> Any:
        """`GET /integrated-account/{id}/tools` (not proxied, not rate limited by the account)."""
        query: dict[str, Any] = {}
        if methods:
            query["methods"] = ",".join(methods)
        if tags:
            query["tags"] = ",".join(tags)
        path = f"/integrated-account/{quote(self.integrated_account_id, safe='')}/tools"
        return await self.request_json("GET", path, query=query, proxy=False)
