"""Every wait, request and download ends; a 429 storm is waited out by time, not by count.

Tool-layer tests on `httpx.MockTransport` and a `FakeClock` (nothing really sleeps), except the per-request
deadline, which is real time by nature (tiny settings keep it under a second).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from helpers_mock import MockTruto, json_response, list_page, make_client, truto_error

from tools.client import BinaryBody, TrutoClient
from tools.clock import FakeClock
from tools.errors import (
    CoviuAgentError,
    MalformedResponseError,
    RetriesExhaustedError,
    TransportError,
    is_transient,
)
from tools.ratelimit import RateLimitGovernor, RateLimitInfo, parse_rate_limit_headers, parse_reset, parse_retry_after
from tools.retry import call_with_retries

NOW = FakeClock().now()


class EndlessStream(httpx.AsyncByteStream):
    """A body that never ends: `chunk` bytes every `every` seconds (0: as fast as it can), counting what was read."""

    def __init__(self, chunk: bytes, every: float = 0.0, first: bytes = b"") -> None:
        self.chunk = chunk
        self.every = every
        self.first = first
        self.yielded = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.first:
            self.yielded += len(self.first)
            yield self.first
        while True:
            if self.every:
                await asyncio.sleep(self.every)
            self.yielded += len(self.chunk)
            yield self.chunk

    async def aclose(self) -> None:
        pass


# --- 2. header values are checked ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "nan", "NaN", "-5", "garbage", "1e9999", "\x00"])
def test_unusable_retry_after_values_are_ignored(value: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tools.ratelimit")
    assert parse_retry_after(value, NOW) is None
    assert any("Retry-After" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "junk", str(40 * 86_400)])
def test_unusable_reset_values_are_ignored(value: str) -> None:
    assert parse_reset(value, NOW) is None


def test_an_absurd_retry_after_beyond_the_cap_is_ignored_but_an_hour_is_kept() -> None:
    assert parse_retry_after("3600", NOW) == 3600.0
    assert parse_retry_after(str(40 * 86_400), NOW) is None
    far = format_datetime(NOW + timedelta(days=400), usegmt=True)
    assert parse_retry_after(far, NOW) is None


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-3", "x"])
def test_unusable_limit_and_remaining_never_raise(value: str) -> None:
    info = parse_rate_limit_headers({"ratelimit-limit": value, "ratelimit-remaining": value}, NOW)
    assert info == RateLimitInfo()


def test_a_429_with_an_infinite_retry_after_holds_the_default_back_off() -> None:
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    info = parse_rate_limit_headers({"retry-after": "inf", "ratelimit-reset": "1e400"}, clock.now())
    hold = governor.observe(info, status_code=429)
    assert hold == pytest.approx(10.0)
    assert math.isfinite(governor.wait_seconds())


# --- 1. time budgets, not attempt counts ---------------------------------------------------------


def storm(n: int, retry_after: str | None = None, *, dates: bool = False, clock: FakeClock | None = None) -> MockTruto:
    """`n` 429s (Retry-After alternating 1 and 2 s, as seconds or HTTP dates), then a page."""
    count = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        count["n"] += 1
        if count["n"] <= n:
            seconds = 1 + count["n"] % 2
            value = retry_after or str(seconds)
            if dates and clock is not None:
                value = format_datetime(clock.now() + timedelta(seconds=seconds), usegmt=True)
            return truto_error(429, headers={"Retry-After": value})
        return list_page(["ok"])

    return MockTruto(handler)


@pytest.mark.parametrize("dates", [False, True], ids=["seconds", "http-date"])
async def test_a_storm_of_twenty_429s_is_waited_out(dates: bool) -> None:
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    mock = storm(20, dates=dates, clock=clock)
    async with make_client(mock, clock=clock, governor=governor) as client:
        result = await call_with_retries(
            "listing", lambda: client.proxy("sessions", "list"), clock=clock, governor=governor
        )
    assert isinstance(result, dict) and result["result"] == ["ok"]
    assert mock.count == 21
    waited = governor.budget.as_dict()
    assert waited["count"] == 20
    assert 20 <= waited["seconds"] <= 45


async def test_other_transient_failures_still_count_attempts() -> None:
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    mock = MockTruto(responses=[truto_error(502)])
    async with make_client(mock, clock=clock, governor=governor) as client:
        with pytest.raises(RetriesExhaustedError, match="5 attempts"):
            await call_with_retries("listing", lambda: client.proxy("sessions", "list"), clock=clock, governor=governor)
    assert mock.count == 5


async def test_a_wait_longer_than_the_budget_is_not_started_and_names_the_time() -> None:
    from tools.errors import RateLimitBudgetError
    from tools.ratelimit import RateLimitBudget

    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    governor.budget = RateLimitBudget(1800, zone=ZoneInfo("Australia/Sydney"))
    mock = MockTruto(responses=[truto_error(429, headers={"Retry-After": "3600"}), list_page([])])
    async with make_client(mock, clock=clock, governor=governor) as client:
        with pytest.raises(RateLimitBudgetError) as info:
            await call_with_retries("listing", lambda: client.proxy("sessions", "list"), clock=clock, governor=governor)
    error = info.value
    assert isinstance(error, CoviuAgentError) and not is_transient(error)
    assert error.until == clock.now() + timedelta(seconds=3600)
    assert error.until.tzinfo is not None
    # 2026-11-25 10:00 UTC is 21:00 in Sydney (AEDT)
    assert "2026-11-25 21:00" in str(error) and "AEDT" in str(error)
    assert sum(clock.sleeps) < 1.0, "nothing was slept"
    assert mock.count == 1


async def test_the_budget_is_spent_across_waits_then_ends_the_run() -> None:
    from tools.errors import RateLimitBudgetError
    from tools.ratelimit import RateLimitBudget

    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    governor.budget = RateLimitBudget(30)
    mock = storm(1000)
    async with make_client(mock, clock=clock, governor=governor) as client:
        with pytest.raises(RateLimitBudgetError):
            await call_with_retries("listing", lambda: client.proxy("sessions", "list"), clock=clock, governor=governor)
    assert 25 <= sum(clock.sleeps) <= 31
    assert governor.budget.as_dict()["seconds"] <= 30


async def test_the_governors_remaining_zero_pacing_obeys_the_budget() -> None:
    from tools.errors import RateLimitBudgetError

    clock = FakeClock()
    headers = {"ratelimit-limit": "50", "ratelimit-remaining": "0", "ratelimit-reset": "86400"}
    mock = MockTruto(responses=[json_response({"result": []}, headers=headers), list_page([])])
    async with make_client(mock, clock=clock) as client:
        await client.proxy("sessions", "list")
        with pytest.raises(RateLimitBudgetError) as info:
            await client.proxy("sessions", "list")
    assert clock.sleeps == []
    assert info.value.until == clock.now() + timedelta(seconds=86400)
    assert mock.count == 1


async def test_a_long_wait_is_said_at_info_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    mock = MockTruto(responses=[truto_error(429, headers={"Retry-After": "12"}), list_page([])])
    async with make_client(mock, clock=clock, governor=governor) as client:
        await call_with_retries("listing", lambda: client.proxy("sessions", "list"), clock=clock, governor=governor)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "12" in r.getMessage()]
    assert said and "rate" in said[0].lower()
    assert governor.budget.as_dict() == {"count": 1, "seconds": pytest.approx(12.0, abs=0.5)}


# --- 5. valid or error at the transport --------------------------------------------------------------


async def proxy(response: httpx.Response, method: str = "list", **kwargs: Any) -> Any:
    async with make_client(MockTruto(responses=[response])) as client:
        return await client.proxy("sessions", method, record_id="s-1" if method != "list" else None, **kwargs)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(204),
        httpx.Response(200, content=b"", headers={"content-type": "application/json"}),
        httpx.Response(200, content=b"  \n", headers={"content-type": "application/json"}),
        httpx.Response(200, content=b"null", headers={"content-type": "application/json"}),
        httpx.Response(200, content=b"<html>login</html>", headers={"content-type": "text/html; charset=utf-8"}),
        httpx.Response(200, content=b"ok", headers={"content-type": "text/plain"}),
        httpx.Response(200, content=b'{"result": [', headers={"content-type": "application/json"}),
    ],
    ids=["204", "empty", "blank", "null", "html", "text", "bad-json"],
)
@pytest.mark.parametrize("method", ["list", "get", "create"])
async def test_a_2xx_without_a_usable_body_is_malformed(response: httpx.Response, method: str) -> None:
    with pytest.raises(MalformedResponseError) as info:
        await proxy(response, method)
    assert is_transient(info.value)
    assert info.value.may_have_written is (method == "create")


@pytest.mark.parametrize("response", [httpx.Response(204), httpx.Response(200, content=b"")])
async def test_a_delete_may_answer_empty(response: httpx.Response) -> None:
    assert await proxy(response, "delete") == {}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed_and_is_malformed(status: int) -> None:
    mock = MockTruto(responses=[httpx.Response(status, headers={"location": "https://evil.example/steal"})])
    async with make_client(mock) as client:
        with pytest.raises(MalformedResponseError) as info:
            await client.proxy("sessions", "list")
    assert str(status) in str(info.value) and "not followed" in str(info.value)
    assert "evil.example" not in str(info.value)
    assert [r.url.host for r in mock.requests] == ["api.truto.test"]


@pytest.mark.parametrize("content_type", ["video/webm", "audio/ogg", "image/png", "application/pdf"])
async def test_media_types_are_still_binary(content_type: str) -> None:
    result = await proxy(httpx.Response(200, content=b"\x00\x01", headers={"content-type": content_type}), "get")
    assert isinstance(result, BinaryBody)


# --- 4. every request ends -----------------------------------------------------------------------------


def bounded_client(mock: MockTruto, **kwargs: Any) -> TrutoClient:
    clock = FakeClock()
    return TrutoClient(
        base_url="https://api.truto.test",
        api_key="k",
        integrated_account_id="ia",
        governor=RateLimitGovernor(clock=clock),
        transport=httpx.MockTransport(mock),
        clock=clock,
        **kwargs,
    )


async def test_an_oversized_json_body_is_stopped_while_streaming() -> None:
    from tools.errors import ResponseTooLargeError

    stream = EndlessStream(b"x" * 65536, first=b'{"result": ["')
    mock = MockTruto(lambda r: httpx.Response(200, headers={"content-type": "application/json"}, stream=stream))
    async with bounded_client(mock, max_json_bytes=1_000_000) as client:
        with pytest.raises(ResponseTooLargeError) as info:
            await client.proxy("sessions", "list")
    assert isinstance(info.value, MalformedResponseError)
    assert stream.yielded < 1_200_000


async def test_an_announced_oversized_body_is_refused_before_reading() -> None:
    from tools.errors import ResponseTooLargeError

    stream = EndlessStream(b"x")
    headers = {"content-type": "application/json", "content-length": str(3 * 1024**3)}
    mock = MockTruto(lambda r: httpx.Response(200, headers=headers, stream=stream))
    async with bounded_client(mock, max_json_bytes=1_000_000) as client:
        with pytest.raises(ResponseTooLargeError):
            await client.proxy("sessions", "list")
    assert stream.yielded == 0


async def test_a_dripped_body_ends_at_the_request_deadline() -> None:
    stream = EndlessStream(b" ", every=0.05, first=b'{"result": [')
    mock = MockTruto(lambda r: httpx.Response(200, headers={"content-type": "application/json"}, stream=stream))
    started = time.monotonic()
    async with bounded_client(mock, request_deadline=0.5) as client:
        with pytest.raises(TransportError) as info:
            await client.proxy("sessions", "list")
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 2.0
    assert info.value.kind == "timeout" and "deadline" in info.value.detail
    assert is_transient(info.value)
