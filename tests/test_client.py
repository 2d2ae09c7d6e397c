"""TrutoClient against httpx.MockTransport: URLs, auth, query encoding, typed errors, the binary guard."""

from __future__ import annotations

import uuid
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from helpers_mock import (
    ACCOUNT_ID,
    API_KEY,
    ChunkStream,
    ExplodingStream,
    MockTruto,
    body_json,
    json_response,
    make_client,
    params,
    truto_error,
)

from tools.client import BinaryBody, TrutoClient, encode_query, is_json_content_type
from tools.clock import FakeClock
from tools.errors import RateLimitedError, TransportError, TrutoError, is_transient
from tools.ratelimit import RateLimitGovernor


async def call(
    mock: MockTruto, resource: str = "sessions", method: str = "list", **kwargs: Any
) -> tuple[Any, TrutoClient]:
    async with make_client(mock) as client:
        return await client.proxy(resource, method, **kwargs), client


async def error_from(response: httpx.Response, method: str = "get", **kwargs: Any) -> TrutoError:
    mock = MockTruto(responses=[response])
    kwargs.setdefault("record_id", "s-1" if method in ("get", "update", "delete") else None)
    with pytest.raises(TrutoError) as info:
        await call(mock, "sessions", method, **kwargs)
    return info.value


# --- auth, account, URL patterns --------------------------------------------------------------------


async def test_bearer_auth_and_accept_json_on_every_request() -> None:
    mock = MockTruto(responses=[json_response({"result": []})])
    await call(mock)
    request = mock.last
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("method", "record_id", "verb", "path"),
    [
        ("list", None, "GET", "/proxy/sessions"),
        ("get", "s-1", "GET", "/proxy/sessions/s-1"),
        ("create", None, "POST", "/proxy/sessions"),
        ("update", "s-1", "PATCH", "/proxy/sessions/s-1"),
        ("delete", "s-1", "DELETE", "/proxy/sessions/s-1"),
        ("end", None, "POST", "/proxy/sessions/end"),
    ],
)
async def test_url_pattern_and_account_on_every_proxy_call(
    method: str, record_id: str | None, verb: str, path: str
) -> None:
    mock = MockTruto(responses=[json_response({"ok": True})])
    result, client = await call(mock, "sessions", method, record_id=record_id, query={"expand": "host"})
    assert result == {"ok": True}
    request = mock.last
    assert request.method == verb
    assert request.url.host == "api.truto.test"
    assert request.url.path == path
    assert params(request) == [("expand", "host"), ("integrated_account_id", ACCOUNT_ID)]
    assert client.requests_sent == 1
    assert client.governor.requests_reserved == 1


@pytest.mark.parametrize("method", ["get", "update", "delete"])
def test_methods_with_an_id_refuse_to_build_a_path_without_one(method: str) -> None:
    with pytest.raises(ValueError, match="needs an id"):
        TrutoClient.proxy_path("sessions", method, None)


def test_id_and_resource_are_url_encoded() -> None:
    assert TrutoClient.proxy_path("sessions", "get", "a/b c?d#e") == "/proxy/sessions/a%2Fb%20c%3Fd%23e"
    assert TrutoClient.proxy_path("video rooms", "list", None) == "/proxy/video%20rooms"


async def test_encoded_id_reaches_the_wire_as_one_path_segment() -> None:
    mock = MockTruto(responses=[json_response({})])
    await call(mock, "sessions", "get", record_id="a/b c?d")
    assert mock.last.url.raw_path.startswith(b"/proxy/sessions/a%2Fb%20c%3Fd?")
    assert params(mock.last) == [("integrated_account_id", ACCOUNT_ID)]


async def test_account_id_is_overridden_by_the_clients_own() -> None:
    mock = MockTruto(responses=[json_response({})])
    await call(mock, query={"integrated_account_id": "someone-else"})
    assert params(mock.last) == [("integrated_account_id", ACCOUNT_ID)]


def test_encode_query_brackets_objects_and_arrays_and_spells_booleans() -> None:
    pairs = encode_query(
        {
            "filter": {"status": "active", "ids": [1, 2], "deep": {"on": True}},
            "tags": ["a", "b"],
            "archived": False,
            "include": True,
            "limit": 25,
            "skip": None,
        }
    )
    assert pairs == [
        ("filter[status]", "active"),
        ("filter[ids][]", "1"),
        ("filter[ids][]", "2"),
        ("filter[deep][on]", "true"),
        ("tags[]", "a"),
        ("tags[]", "b"),
        ("archived", "false"),
        ("include", "true"),
        ("limit", "25"),
    ]


async def test_bracket_query_on_the_wire() -> None:
    mock = MockTruto(responses=[json_response({"result": []})])
    await call(mock, query={"filter": {"status": "active"}, "ids": [3, 4], "archived": False})
    request = mock.last
    assert params(request) == [
        ("filter[status]", "active"),
        ("ids[]", "3"),
        ("ids[]", "4"),
        ("archived", "false"),
        ("integrated_account_id", ACCOUNT_ID),
    ]
    assert b"filter%5Bstatus%5D=active" in request.url.query
    assert b"ids%5B%5D=3&ids%5B%5D=4" in request.url.query


# --- bodies and Idempotency-Key -----------------------------------------------------------------------


async def test_create_sends_json_body_and_the_given_idempotency_key() -> None:
    mock = MockTruto(responses=[json_response({"session_id": "s-9"}, status=201)])
    result, _ = await call(mock, "sessions", "create", body={"session_name": "Ava"}, idempotency_key="key-1")
    assert result == {"session_id": "s-9"}
    request = mock.last
    assert request.headers["idempotency-key"] == "key-1"
    assert request.headers["content-type"] == "application/json"
    assert body_json(request) == {"session_name": "Ava"}


async def test_create_without_a_key_gets_a_fresh_uuid_each_time() -> None:
    mock = MockTruto(responses=[json_response({})])
    async with make_client(mock) as client:
        await client.proxy("sessions", "create", body={"a": 1})
        await client.proxy("sessions", "create", body={"a": 1})
    keys = [r.headers["idempotency-key"] for r in mock.requests]
    assert all(uuid.UUID(k) for k in keys)
    assert keys[0] != keys[1]


@pytest.mark.parametrize(("method", "verb"), [("update", "PATCH"), ("end", "POST")])
async def test_other_writes_carry_an_idempotency_key_and_a_body(method: str, verb: str) -> None:
    mock = MockTruto(responses=[json_response({})])
    await call(mock, "sessions", method, record_id="s-1", body={"x": 1})
    assert mock.last.method == verb
    assert "idempotency-key" in mock.last.headers
    assert body_json(mock.last) == {"x": 1}


@pytest.mark.parametrize("method", ["list", "get", "delete"])
async def test_reads_and_deletes_carry_no_key_and_no_body(method: str) -> None:
    mock = MockTruto(responses=[json_response({})])
    await call(mock, "sessions", method, record_id="s-1")
    assert "idempotency-key" not in mock.last.headers
    assert mock.last.content == b""


@pytest.mark.parametrize(
    "response",
    [httpx.Response(204), httpx.Response(200, content=b"", headers={"content-type": "application/json"})],
)
async def test_empty_success_is_an_empty_object(response: httpx.Response) -> None:
    result, _ = await call(MockTruto(responses=[response]), "sessions", "delete", record_id="s-1")
    assert result == {}


@pytest.mark.parametrize(
    ("content_type", "is_json"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/problem+json", True),
        ("application/vnd.api+json", True),
        ("video/webm", False),
        ("text/html", False),
        ("application/octet-stream", False),
    ],
)
def test_json_content_types(content_type: str, is_json: bool) -> None:
    assert is_json_content_type(content_type) is is_json


# --- typed errors -------------------------------------------------------------------------------------


async def test_truto_error_carries_every_field() -> None:
    raw = {"error": {"code": "conflict", "message": "session overlaps another"}}
    err = await error_from(
        truto_error(409, "", remote=True, raw=raw, headers={"X-Request-Id": "req-42"}),
        method="create",
        body={"session_name": "x"},
    )
    assert type(err) is TrutoError
    assert err.status_code == 409
    assert err.error == "Conflict"
    assert err.message == ""
    assert err.truto_is_remote_error is True
    assert err.raw_response == raw
    assert err.headers["x-request-id"] == "req-42"
    assert err.method == "POST"
    assert err.path == "/proxy/sessions"
    # An empty Truto message falls back to the provider's own.
    assert err.provider_message == "session overlaps another"
    assert str(err) == "409 from Coviu (POST /proxy/sessions): session overlaps another"
    assert not err.retryable


async def test_429_is_rate_limited_with_retry_after_from_the_headers() -> None:
    err = await error_from(truto_error(429, "slow down", remote=False, headers={"Retry-After": "7"}))
    assert isinstance(err, RateLimitedError)
    assert err.status_code == 429
    assert err.retry_after == pytest.approx(7.0)
    assert err.headers["retry-after"] == "7"
    assert err.retryable
    assert "429" in str(err)
    assert "rate limited" in str(err)


async def test_429_retry_after_as_an_http_date() -> None:
    when = format_datetime(FakeClock().now() + timedelta(seconds=30), usegmt=True)
    err = await error_from(truto_error(429, remote=True, headers={"retry-after": when}))
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == pytest.approx(30.0)


async def test_429_prefers_the_later_reset() -> None:
    err = await error_from(truto_error(429, headers={"Retry-After": "10", "RateLimit-Reset": "25"}))
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == pytest.approx(25.0)


async def test_429_without_headers_waits_the_default_ten_seconds() -> None:
    err = await error_from(truto_error(429))
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == pytest.approx(10.0)


async def test_401_remote_means_reconnect_the_account() -> None:
    err = await error_from(truto_error(401, "", remote=True, raw={"error": "invalid_grant"}))
    text = str(err)
    assert err.truto_is_remote_error
    assert "from Coviu" in text
    assert "re-authentication" in text
    assert "invalid_grant" in text
    assert not err.retryable


async def test_401_not_remote_means_the_truto_token_is_wrong() -> None:
    err = await error_from(truto_error(401, "Invalid API token"))
    text = str(err)
    assert not err.truto_is_remote_error
    assert "TRUTO_API_KEY" in text
    assert "re-authentication" not in text
    assert "Invalid API token" in text


async def test_403_names_the_missing_scopes() -> None:
    insight = {"forbidden_error": {"value": {"missing_scopes": ["sessions:write", "participants:write"]}}}
    err = await error_from(truto_error(403, "Forbidden", remote=True, insight=insight), method="delete")
    assert err.insight == insight
    assert "missing scopes: sessions:write, participants:write." in str(err)
    assert "DELETE /proxy/sessions/s-1" in str(err)


async def test_403_without_an_insight_still_explains() -> None:
    err = await error_from(truto_error(403, "nope"))
    assert "lacks permission" in str(err)
    assert "missing scopes" not in str(err)


@pytest.mark.parametrize(
    ("status", "phrase", "retryable"),
    [
        (404, "not found", False),
        (405, "read-only (sandbox) integrated account; writes are refused", False),
        (503, "blocked in Truto; unblock it there", False),
        (400, "400 from Coviu", False),
        (422, "422 from Coviu", False),
        (502, "502 Bad Gateway", True),
        (504, "504 Gateway Timeout", True),
        (500, "500 Internal Server Error", True),
    ],
)
async def test_status_messages_and_retryability(status: int, phrase: str, retryable: bool) -> None:
    err = await error_from(truto_error(status, "detail"), method="update", body={"x": 1})
    assert err.status_code == status
    assert phrase in str(err)
    assert "detail" in str(err)
    assert err.retryable is retryable
    assert is_transient(err) is retryable


@pytest.mark.parametrize(("status", "remote", "may_have"), [(502, True, True), (504, False, True), (500, True, False)])
async def test_may_have_written(status: int, remote: bool, may_have: bool) -> None:
    err = await error_from(truto_error(status, remote=remote), method="create", body={})
    assert err.may_have_written is may_have


async def test_error_body_that_is_not_json_keeps_its_text() -> None:
    page = httpx.Response(502, content=b"<html>upstream went away</html>", headers={"content-type": "text/html"})
    err = await error_from(page)
    assert err.status_code == 502
    assert err.error == "Bad Gateway"
    assert "upstream went away" in err.message


# --- transport failures -------------------------------------------------------------------------------


def raising(exc_type: type[httpx.TransportError], text: str = "boom") -> MockTruto:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(text, request=request)

    return MockTruto(handler)


@pytest.mark.parametrize(
    ("exc_type", "kind", "sent"),
    [
        (httpx.ConnectError, "connect error", False),
        (httpx.ConnectTimeout, "timeout", False),
        (httpx.ReadTimeout, "timeout", True),
        (httpx.RemoteProtocolError, "connection dropped", True),
        (httpx.ReadError, "connection dropped", True),
    ],
)
async def test_transport_failures_become_transport_errors(
    exc_type: type[httpx.TransportError], kind: str, sent: bool
) -> None:
    mock = raising(exc_type)
    with pytest.raises(TransportError) as info:
        await call(mock, "sessions", "create", body={"a": 1})
    err = info.value
    assert err.kind == kind
    assert err.sent is sent
    assert err.method == "POST"
    assert err.path == "/proxy/sessions"
    assert err.may_have_written is sent
    assert err.retryable
    assert is_transient(err)
    assert isinstance(err.__cause__, exc_type)
    assert mock.count == 1


async def test_a_read_that_fails_is_never_a_possible_write() -> None:
    with pytest.raises(TransportError) as info:
        await call(raising(httpx.ReadTimeout), "sessions", "get", record_id="s-1")
    assert info.value.sent
    assert not info.value.may_have_written


async def test_malformed_json_is_a_transport_error() -> None:
    bad = httpx.Response(200, content=b'{"result": [', headers={"content-type": "application/json"})
    with pytest.raises(TransportError) as info:
        await call(MockTruto(responses=[bad]))
    assert info.value.kind == "malformed response"
    assert "12 bytes" in info.value.detail
    assert "/proxy/sessions" in str(info.value)


async def test_a_body_that_times_out_midway_is_a_transport_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        stream = ChunkStream([b'{"result": ', b"[]}"], error=httpx.ReadTimeout("stalled", request=request))
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=stream)

    with pytest.raises(TransportError) as info:
        await call(MockTruto(handler))
    assert info.value.kind == "timeout"
    assert "while reading the body" in info.value.detail


# --- the binary guard ---------------------------------------------------------------------------------


async def test_binary_response_returns_metadata_and_never_reads_the_body() -> None:
    stream = ExplodingStream()
    response = httpx.Response(
        200, headers={"content-type": "video/webm; codecs=vp9", "content-length": "734003200"}, stream=stream
    )
    result, _ = await call(MockTruto(responses=[response]), "recordings", "get", record_id="r-1")
    assert result == BinaryBody(content_type="video/webm", size=734003200, status_code=200)
    assert result.as_dict() == {"binary": True, "content_type": "video/webm", "size_bytes": 734003200}
    assert stream.reads == 0
    assert stream.closed


async def test_binary_response_without_a_length_has_unknown_size() -> None:
    stream = ExplodingStream()
    response = httpx.Response(200, headers={"content-type": "audio/ogg"}, stream=stream)
    result, _ = await call(MockTruto(responses=[response]), "recordings", "get", record_id="r-1")
    assert isinstance(result, BinaryBody)
    assert result.size is None
    assert stream.reads == 0


async def test_stream_proxy_hands_the_bytes_to_the_caller() -> None:
    chunks = [b"\x1a\x45\xdf\xa3", b"more-bytes"]
    mock = MockTruto(lambda r: httpx.Response(200, headers={"content-type": "video/webm"}, stream=ChunkStream(chunks)))
    async with make_client(mock) as client, client.stream_proxy("recordings", "get", record_id="r-1") as response:
        got = [chunk async for chunk in response.aiter_bytes()]
    assert b"".join(got) == b"".join(chunks)
    assert mock.last.url.path == "/proxy/recordings/r-1"
    assert ("integrated_account_id", ACCOUNT_ID) in params(mock.last)


async def test_stream_proxy_raises_typed_errors_before_yielding() -> None:
    mock = MockTruto(responses=[truto_error(404, "no such recording")])
    async with make_client(mock) as client:
        with pytest.raises(TrutoError) as info:
            async with client.stream_proxy("recordings", "get", record_id="r-x"):
                raise AssertionError("should not be reached")  # pragma: no cover
    assert info.value.status_code == 404


# --- the /tools call and pacing through the client -----------------------------------------------------


async def test_list_tools_is_not_proxied_and_not_paced() -> None:
    mock = MockTruto(responses=[json_response({"result": []})])
    async with make_client(mock) as client:
        assert await client.list_tools(methods=["list", "get"], tags=["sessions", "video"]) == {"result": []}
        assert client.governor.requests_reserved == 0
    request = mock.last
    assert request.method == "GET"
    assert request.url.path == f"/integrated-account/{ACCOUNT_ID}/tools"
    assert params(request) == [("methods", "list,get"), ("tags", "sessions,video")]
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_server_remaining_zero_makes_the_next_call_wait_for_the_reset() -> None:
    clock = FakeClock()
    mock = MockTruto(
        responses=[
            json_response({}, headers={"ratelimit-limit": "50", "ratelimit-remaining": "0", "ratelimit-reset": "6"}),
            json_response({}, headers={"ratelimit-limit": "50", "ratelimit-remaining": "49", "ratelimit-reset": "10"}),
        ]
    )
    async with make_client(mock, clock=clock) as client:
        await client.proxy("sessions", "list")
        assert clock.sleeps == []
        await client.proxy("sessions", "list")
    assert clock.sleeps == [pytest.approx(6.0)]
    assert mock.count == 2


async def test_a_429_holds_the_next_call_until_the_reset() -> None:
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    mock = MockTruto(responses=[truto_error(429, headers={"Retry-After": "9"}), json_response({"result": []})])
    async with make_client(mock, clock=clock, governor=governor) as client:
        with pytest.raises(RateLimitedError):
            await client.proxy("sessions", "list")
        assert governor.wait_seconds() == pytest.approx(9.0)
        assert governor.rate_limited_count == 1
        assert await client.proxy("sessions", "list") == {"result": []}
    assert clock.sleeps == [pytest.approx(9.0)]


async def test_the_limit_header_reaches_the_governor() -> None:
    clock = FakeClock()
    mock = MockTruto(responses=[json_response({}, headers={"RateLimit-Limit": "20"})])
    async with make_client(mock, clock=clock) as client:
        await client.proxy("sessions", "list")
        assert client.governor.limit == 20
