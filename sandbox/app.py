"""The simulator as an ASGI app: Truto's `/tools` and `/proxy` routes in front of the simulated Coviu account,
plus its MCP servers (`/integrated-account/{id}/mcp` admin routes and the `/mcp/{token}` endpoint, sandbox/mcp.py).

Auth, the integrated account's status, rate limits, idempotency keys, faults and a record of every request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from sandbox import demo as demo_data
from sandbox.catalog import select_tools
from sandbox.clock import Clock, SystemClock
from sandbox.config import FaultConfig, SandboxConfig
from sandbox.coviu import (
    SUMMARY_CUSTOM_METHOD,
    BinaryReply,
    CoviuApi,
    JsonReply,
    PageReply,
    ProviderCall,
    ProviderReply,
    media_etag,
    media_last_modified,
)
from sandbox.errors import CoviuError, TrutoError
from sandbox.faults import ConnectionDropped, FaultEngine, stream_faulty_body
from sandbox.ids import DEMO_CLIENT_ID
from sandbox.media import webm_bytes
from sandbox.querystring import parse_query
from sandbox.ratelimit import RateDecision, RateLimiter
from sandbox.replies import Reply, RequestRecord, error_reply
from sandbox.store import CoviuStore
from sandbox.timefmt import http_date

if TYPE_CHECKING:
    from sandbox.mcp import SandboxMcp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WRITE_METHODS = ("create", "update", "delete", "custom")
WRITE_SCOPES = {"sessions": "sessions:write", "participants": "sessions:write"}


@dataclass(frozen=True, slots=True)
class _IdempotentResult:
    fingerprint: str
    reply: Reply


class Sandbox:
    """The Truto + Coviu simulator: an ASGI callable with its store, config and request log."""

    def __init__(self, config: SandboxConfig, clock: Clock, store: CoviuStore, *, seed_demo: bool = True) -> None:
        self.config = config
        self.store = store
        self.api = CoviuApi(store, lambda: self.config)
        self._seed_demo = seed_demo
        self._other_apis: dict[str, CoviuApi] = {}  # config.accounts, each its own clinic (made on first use)
        self.requests: list[RequestRecord] = []
        self.limiter = RateLimiter(clock)
        self.faults = FaultEngine()
        self._idempotent: dict[tuple[str, str], _IdempotentResult] = {}
        self._clock = clock
        self.clock = clock

    @cached_property
    def mcp(self) -> SandboxMcp:
        """Its MCP servers, made on first use: the `mcp` package is heavy, and most runs never speak MCP."""
        from sandbox.mcp import SandboxMcp  # here: sandbox.mcp imports this module

        return SandboxMcp(self)

    @property
    def clock(self) -> Clock:
        """The only source of "now" for the sandbox; assigning a new clock re-points the store and limiter too."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        self.store.clock = clock
        for api in getattr(self, "_other_apis", {}).values():
            api.store.clock = clock
        self.limiter.clock = clock

    # ------------------------------------------------------------------ accounts

    def serves(self, account_id: str) -> bool:
        return account_id == self.config.integrated_account_id or account_id in self.config.accounts

    def api_for(self, account_id: str) -> CoviuApi:
        """The simulated Coviu account behind this integrated account (404 when the sandbox does not serve it)."""
        if account_id == self.config.integrated_account_id:
            return self.api
        if account_id not in self.config.accounts:
            raise TrutoError(404, f"integrated account not found: {account_id}")
        api = self._other_apis.get(account_id)
        if api is None:
            store = CoviuStore(self.clock, client_id=DEMO_CLIENT_ID)
            demo_data.seed_structure(store)
            if self._seed_demo:
                demo_data.seed_demo(store)
            api = self._other_apis[account_id] = CoviuApi(store, lambda: self.config)
        return api

    def store_for(self, account_id: str) -> CoviuStore:
        """The store of one served account (`config.integrated_account_id` or one of `config.accounts`)."""
        return self.api_for(account_id).store

    # ------------------------------------------------------------------ helpers for tests

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the faults at run time (re-seeds the fault decisions)."""
        self.config.faults = faults
        self.faults.sync(self.config.faults)

    def count(self, resource: str | None = None, truto_method: str | None = None, status: int | None = None) -> int:
        """How many recorded requests match every given field."""
        return sum(
            1
            for r in self.requests
            if (resource is None or r.resource == resource)
            and (truto_method is None or r.truto_method == truto_method)
            and (status is None or r.status == status)
        )

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        record = RequestRecord(
            method=request.method,
            path=request.url.path,
            resource=None,
            truto_method=None,
            status=0,
            idempotency_key=request.headers.get("idempotency-key"),
            query=parse_query(request.url.query),
        )
        self.requests.append(record)
        try:
            reply = await self._route(request, record)
        except TrutoError as error:
            reply = error_reply(error, config=self.config)
        record.status = reply.status
        await self._deliver(reply, send, record)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _deliver(self, reply: Reply, send: Send, record: RequestRecord) -> None:
        headers = {"date": http_date(self.clock.now()), "content-type": reply.content_type, **reply.headers}
        if not (reply.pad_to or reply.endless):
            headers["content-length"] = str(len(reply.body))
        raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if reply.slow_seconds > 0:
            await asyncio.sleep(reply.slow_seconds)
        await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
        if reply.drip_seconds or reply.pad_to or reply.endless:
            drip, pad_to, endless = reply.drip_seconds, reply.pad_to, reply.endless
            await stream_faulty_body(reply.body, send, drip=drip, pad_to=pad_to, endless=endless)
            return
        if reply.drop:
            partial = reply.body[: max(1, len(reply.body) // 2)] if reply.body else b""
            await send({"type": "http.response.body", "body": partial, "more_body": True})
            raise ConnectionDropped(f"sandbox dropped the connection mid-response ({record.method} {record.path})")
        await send({"type": "http.response.body", "body": reply.body})

    # ------------------------------------------------------------------ routing

    async def _route(self, request: Request, record: RequestRecord) -> Reply:
        segments = [part for part in request.url.path.split("/") if part]
        if len(segments) == 3 and segments[0] == "integrated-account" and segments[2] == "tools":
            if request.method != "GET":
                raise TrutoError(405, f"{request.method} is not allowed on /integrated-account/{{id}}/tools")
            self._authenticate(request)
            return self._tools(segments[1], record.query)
        if segments and segments[0] == "proxy":
            self._authenticate(request)
            return await self._proxy(request, record, segments[1:])
        if len(segments) in (3, 4) and segments[0] == "integrated-account" and segments[2] == "mcp":
            self._authenticate(request)
            return await self.mcp.admin(request, segments[1], segments[3] if len(segments) == 4 else None)
        if segments and segments[0] == "mcp" and len(segments) <= 2:
            return await self.mcp.serve(request, segments[1] if len(segments) == 2 else "")
        raise TrutoError(404, f"route not found: {request.method} {request.url.path}")

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TrutoError(401, "missing API token: send `Authorization: Bearer <TRUTO_API_TOKEN>`")
        if self.config.api_token is not None and token != self.config.api_token:
            raise TrutoError(401, "invalid API token")

    def _tools(self, account_id: str, query: dict[str, Any]) -> Reply:
        if not self.serves(account_id):
            raise TrutoError(404, f"integrated account not found: {account_id}")
        tools = self.tools(_as_list(query.get("methods")), _as_list(query.get("tags")))
        return Reply.json({self.config.tools_envelope: tools})

    def tools(self, methods: list[str], tags: list[str]) -> list[dict[str, Any]]:
        """The tools this account publishes (`/tools` and its MCP servers), as its settings shape them."""
        custom = {("session_summaries", "get"): SUMMARY_CUSTOM_METHOD} if self.config.summary_method == "custom" else {}
        return select_tools(self.config.id_location, methods, tags, custom_methods=custom)

    # ------------------------------------------------------------------ the proxy

    async def _proxy(self, request: Request, record: RequestRecord, rest: list[str]) -> Reply:
        query = record.query
        account_id = query.get("integrated_account_id")
        if account_id is None or account_id == "":
            raise TrutoError(400, "`integrated_account_id` is a required query parameter")
        if not self.serves(account_id):
            raise TrutoError(404, f"integrated account not found: {account_id}")
        resource, record_id, truto_method = _proxy_route(request.method, rest)
        record.resource, record.truto_method = resource, truto_method

        decision = self.limiter.check(account_id, self.config.rate_limit, self.config.rate_window_seconds)
        rate_headers = self._rate_headers(decision)
        if not decision.allowed:
            raise TrutoError(
                429,
                f"rate limit exceeded: {decision.limit} requests per {self.config.rate_window_seconds:g} s "
                "for this integrated account",
                headers={**rate_headers, "retry-after": self._retry_after(decision.reset_after)},
            )
        try:
            reply = await self._proxy_call(request, record, resource, record_id, truto_method, rate_headers)
        except TrutoError as error:
            reply = error_reply(error, rate_headers, self.config)
        return reply

    async def _proxy_call(
        self,
        request: Request,
        record: RequestRecord,
        resource: str,
        record_id: str | None,
        truto_method: str,
        rate_headers: dict[str, str],
    ) -> Reply:
        self._check_account(resource, truto_method)
        body = await _json_body(request) if request.method in ("POST", "PATCH", "PUT") else None
        faults = self.faults.sync(self.config.faults)
        faulty = self.faults.applies(faults, resource)

        idempotency = None
        if truto_method == "create" and record.idempotency_key and self.config.honour_idempotency_keys:
            idempotency = (str(record.query["integrated_account_id"]), record.idempotency_key)
            fingerprint = _fingerprint(resource, record.query, body)
            previous = self._idempotent.get(idempotency)
            if previous is not None:
                if previous.fingerprint != fingerprint:
                    raise TrutoError(
                        422,
                        f"Idempotency-Key {record.idempotency_key!r} was already used for a different request",
                    )
                record.fault = "idempotent_replay"
                replay = previous.reply
                reply = Reply(
                    replay.status,
                    replay.body,
                    replay.content_type,
                    {**replay.headers, **rate_headers, "idempotent-replayed": "true"},
                )
                return self._after_faults(reply, faults, faulty, request.method, record)

        if faulty:
            storm_reset = self.faults.storm(faults)
            if storm_reset is not None:
                record.fault = "rate_limit_storm"
                raise TrutoError(
                    429,
                    "Too many requests to Coviu, please slow down",
                    remote=True,
                    raw_response={"error": {"message": "Too many requests, please slow down"}},
                    headers={
                        "ratelimit-limit": "100",
                        "ratelimit-remaining": "0",
                        "ratelimit-reset": faults.retry_after_value or self._reset_value(storm_reset),
                        "retry-after": faults.retry_after_value or self._retry_after(storm_reset),
                    },
                )
            status = self.faults.server_error(faults)
            if status is not None:
                record.fault = "server_error"
                raise TrutoError(
                    status,
                    "bad gateway: Coviu closed the connection without a response"
                    if status == 502
                    else "gateway timeout: Coviu did not respond in time",
                )

        call = ProviderCall(
            resource=resource,
            method=truto_method,
            record_id=record_id,
            query=record.query,
            body=body,
            range_header=request.headers.get("range"),
            if_range=request.headers.get("if-range"),
        )
        try:
            provider_reply = self.api_for(str(record.query["integrated_account_id"])).handle(call)
        except CoviuError as error:
            raise TrutoError.from_coviu(error) from error
        reply = self._render(provider_reply)
        reply.headers.update(rate_headers)

        if truto_method == "create" and 200 <= reply.status < 300:
            if idempotency is not None:
                first = Reply(reply.status, reply.body, reply.content_type, dict(reply.headers))
                self._idempotent[idempotency] = _IdempotentResult(_fingerprint(resource, record.query, body), first)
            if faulty and self.faults.lose_create(faults):
                record.fault = "lost_response"
                raise TrutoError(504, "gateway timeout: Coviu did not respond in time")
        return self._after_faults(reply, faults, faulty, request.method, record)

    def _after_faults(
        self, reply: Reply, faults: FaultConfig, faulty: bool, method: str, record: RequestRecord
    ) -> Reply:
        if not faulty:
            return reply
        reads = method == "GET" or record.truto_method == SUMMARY_CUSTOM_METHOD  # a read served as a custom POST
        json_get = reads and reply.status == 200 and reply.content_type == "application/json"
        is_json = reply.content_type == "application/json"
        after = self.faults.after(faults, json_get=json_get, json=is_json, binary=not is_json and reply.status < 300)
        if after.exhausted_reset is not None:
            reply.headers.update({"ratelimit-remaining": "0", "ratelimit-reset": after.exhausted_reset})
        if after.drip_seconds > 0:
            record.fault, reply.drip_seconds = "drip", after.drip_seconds
        if after.pad_to > len(reply.body):
            record.fault, reply.pad_to = "oversized", after.pad_to
        if after.endless:
            record.fault, reply.endless = "endless", True
        if after.malformed_json:
            record.fault = "malformed_json"
            reply = Reply(reply.status, reply.body[: max(1, len(reply.body) // 2)], reply.content_type, reply.headers)
        if after.drop:
            record.fault = "drop"
            reply.drop = True
        if after.slow_seconds > 0:
            record.fault = record.fault or "slow"
            reply.slow_seconds = after.slow_seconds
        return reply

    def _check_account(self, resource: str, truto_method: str) -> None:
        status = self.config.account_status
        writing = truto_method in WRITE_METHODS
        if status == "needs_reauth":
            message = "invalid_token: the Coviu access token has expired or was revoked; reconnect the account"
            raise TrutoError(401, message, remote=True, raw_response={"error": {"message": message}})
        if status == "blocked":
            raise TrutoError(503, "integrated account is blocked")
        if status == "read_only" and writing:
            raise TrutoError(405, f"integrated account is read-only: `{truto_method}` on `{resource}` is not allowed")
        if status == "missing_scopes" and writing:
            scope = WRITE_SCOPES.get(resource, f"{resource}:write")
            message = f"insufficient_scope: the access token is missing the scope {scope}"
            raise TrutoError(
                403,
                message,
                remote=True,
                raw_response={"error": {"message": message}},
                insight={"forbidden_error": {"value": {"missing_scopes": [scope]}}},
            )

    def _render(self, provider_reply: ProviderReply) -> Reply:
        if isinstance(provider_reply, JsonReply):
            return Reply.json(provider_reply.payload)
        if isinstance(provider_reply, PageReply):
            return Reply.json(
                {
                    self.config.list_envelope: provider_reply.items,
                    "next_cursor": provider_reply.next_cursor,
                    "prev_cursor": None,
                    "result_count": len(provider_reply.items),
                    "is_partial_response": False,
                }
            )
        assert isinstance(provider_reply, BinaryReply)
        media = provider_reply.media
        data = webm_bytes(media.seed, media.size)
        headers = {
            "accept-ranges": "bytes",
            "content-disposition": f'attachment; filename="{media.filename}"',
            # validators a resume sends back in If-Range, and the whole file's digest (RFC 9530), on 200 and 206
            "etag": media_etag(media),
            "last-modified": media_last_modified(media),
            "repr-digest": f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:",
        }
        byte_range = provider_reply.byte_range
        if byte_range is None:
            return Reply(200, data, media.content_type, headers)
        headers["content-range"] = byte_range.content_range()
        return Reply(206, data[byte_range.first : byte_range.last + 1], media.content_type, headers)

    # ------------------------------------------------------------------ rate-limit headers

    def _rate_headers(self, decision: RateDecision) -> dict[str, str]:
        return {
            "ratelimit-limit": str(decision.limit),
            "ratelimit-remaining": str(decision.remaining),
            "ratelimit-reset": self._reset_value(decision.reset_after),
        }

    def _reset_value(self, seconds: float) -> str:
        whole = max(1, math.ceil(seconds))
        if self.config.ratelimit_reset_format == "unix":
            return str(math.ceil(self.clock.now().timestamp()) + whole)
        return str(whole)

    def _retry_after(self, seconds: float) -> str:
        whole = max(1, math.ceil(seconds))
        if self.config.retry_after_format == "http-date":
            moment = self.clock.now() + timedelta(seconds=whole)
            if moment.microsecond:
                moment += timedelta(seconds=1)  # HTTP dates drop fractions: round up, never early
            return http_date(moment)
        return str(whole)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    if isinstance(value, dict):
        return [str(v) for v in value.values()]
    return [str(value)]


def _proxy_route(method: str, rest: list[str]) -> tuple[str, str | None, str]:
    """(resource, id, Truto method) for a `/proxy/...` path."""
    if not rest:
        raise TrutoError(404, "missing resource: use /proxy/{resource}")
    if len(rest) > 2:
        raise TrutoError(404, f"route not found: /proxy/{'/'.join(rest)}")
    resource = rest[0]
    second = rest[1] if len(rest) == 2 else None
    if method == "GET":
        return resource, second, "get" if second else "list"
    if method == "POST":
        # POST /proxy/{resource}/{method} runs a custom method (the provider says 404 if it has no such method)
        return resource, None, second or "create"
    if method == "PATCH" and second is not None:
        return resource, second, "update"
    if method == "DELETE" and second is not None:
        return resource, second, "delete"
    raise TrutoError(405, f"{method} is not a proxy method here; use GET, POST, PATCH (update) or DELETE")


async def _json_body(request: Request) -> dict[str, Any] | None:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise TrutoError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise TrutoError.from_coviu(CoviuError(400, "Invalid `body`: expected a JSON object"))
    return body


def _fingerprint(resource: str, query: dict[str, Any], body: dict[str, Any] | None) -> str:
    relevant = {k: v for k, v in query.items() if k != "integrated_account_id"}
    text = json.dumps([resource, relevant, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def create_sandbox(
    config: SandboxConfig | None = None,
    clock: Clock | None = None,
    seed_demo: bool = True,
) -> Sandbox:
    """A fresh sandbox: the demo clinic's structure, plus (by default) its seeded demo day."""
    config = config or SandboxConfig()
    clock = clock or SystemClock()
    store = CoviuStore(clock, client_id=DEMO_CLIENT_ID)
    demo_data.seed_structure(store)
    if seed_demo:
        demo_data.seed_demo(store)
    return Sandbox(config, clock, store, seed_demo=seed_demo)
