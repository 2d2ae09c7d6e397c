"""Tests of the sandbox's injected faults: provider 429 storms, 502/504, slow, dropped, malformed and lost responses.

In-process, through `SandboxTransport`, which must fail the way a real HTTP connection would.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sandbox import FaultConfig, Sandbox, SandboxConfig, create_sandbox
from sandbox.testing import sandbox_client
from tools.clock import FakeClock

IA = {"integrated_account_id": "sandbox"}
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
NAME = "Fault test - Evie Green"


def booking() -> dict[str, str]:
    start = NOW + timedelta(hours=2)
    return {
        "session_name": NAME,
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(minutes=30)).isoformat(),
    }


def sandbox_with(faults: FaultConfig, **config: object) -> Sandbox:
    return create_sandbox(SandboxConfig(faults=faults, rate_limit=10_000, **config), clock=FakeClock(NOW))  # type: ignore[arg-type]


def booked(sb: Sandbox) -> int:
    return sum(1 for s in sb.store.sessions.values() if s.session_name == NAME)


async def test_rate_limit_storm_is_a_remote_429() -> None:
    sb = sandbox_with(FaultConfig(rate_limit_storm=1.0))
    async with sandbox_client(sb) as client:
        response = await client.post("/proxy/sessions", params=IA, json=booking())
    assert response.status_code == 429
    body = response.json()
    assert body["truto_is_remote_error"] is True
    assert isinstance(body["raw_response"], dict)
    assert response.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(response.headers["ratelimit-reset"]) <= 3
    assert response.headers["retry-after"] == response.headers["ratelimit-reset"]
    assert booked(sb) == 0
    assert sb.requests[-1].fault == "rate_limit_storm"


async def test_storm_fraction_is_deterministic_per_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        sb = sandbox_with(FaultConfig(seed=seed, rate_limit_storm=0.5))
        async with sandbox_client(sb) as client:
            return [(await client.get("/proxy/sessions", params=IA)).status_code for _ in range(40)]

    first, again, other = await statuses(1), await statuses(1), await statuses(2)
    assert first == again
    assert first != other
    assert 10 <= first.count(429) <= 30
    assert set(first) == {200, 429}


async def test_server_errors_are_truto_502_or_504_and_write_nothing() -> None:
    sb = sandbox_with(FaultConfig(server_errors=1.0, seed=5))
    async with sandbox_client(sb) as client:
        codes = set()
        for _ in range(20):
            response = await client.post("/proxy/sessions", params=IA, json=booking())
            codes.add(response.status_code)
            assert "truto_is_remote_error" not in response.json()
    assert codes == {502, 504}
    assert booked(sb) == 0


async def test_slow_response_times_out_after_the_work_is_done() -> None:
    sb = sandbox_with(FaultConfig(slow=1.0, slow_seconds=0.3))
    async with sandbox_client(sb, timeout=httpx.Timeout(5.0, read=0.05)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/proxy/sessions", params=IA, json=booking())
    assert booked(sb) == 1
    async with sandbox_client(sb, timeout=httpx.Timeout(5.0)) as patient:
        response = await patient.get("/proxy/sessions", params=IA)
    assert response.status_code == 200


async def test_drop_is_a_remote_protocol_error_after_the_write() -> None:
    sb = sandbox_with(FaultConfig(drop=1.0))
    async with sandbox_client(sb) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/proxy/sessions", params=IA, json=booking())
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/proxy/sessions", params=IA)
    assert booked(sb) == 1
    assert [r.fault for r in sb.requests] == ["drop", "drop"]


async def test_malformed_json_only_on_gets() -> None:
    sb = sandbox_with(FaultConfig(malformed_json=1.0))
    async with sandbox_client(sb) as client:
        response = await client.get("/proxy/sessions", params=IA)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)
        created = await client.post("/proxy/sessions", params=IA, json=booking())
        assert created.json()["session_name"] == NAME


async def test_lost_response_next_writes_exactly_once_with_a_retry() -> None:
    sb = sandbox_with(FaultConfig(lost_response_next=1))
    async with sandbox_client(sb) as client:
        key = {"Idempotency-Key": "triage-ava-session"}
        lost = await client.post("/proxy/sessions", params=IA, json=booking(), headers=key)
        assert lost.status_code == 504
        assert "truto_is_remote_error" not in lost.json()
        assert booked(sb) == 1  # the write happened
        retry = await client.post("/proxy/sessions", params=IA, json=booking(), headers=key)
        assert retry.status_code == 200
        assert booked(sb) == 1  # and happened only once
        assert retry.json()["session_id"] in sb.store.sessions
        fresh = await client.post("/proxy/sessions", params=IA, json=booking())
        assert fresh.status_code == 200
    assert booked(sb) == 2
    assert [r.fault for r in sb.requests] == ["lost_response", "idempotent_replay", None]


async def test_lost_response_without_a_key_writes_twice() -> None:
    sb = sandbox_with(FaultConfig(lost_response=1.0))
    async with sandbox_client(sb) as client:
        for _ in range(2):
            assert (await client.post("/proxy/sessions", params=IA, json=booking())).status_code == 504
        # reads are never "lost"
        assert (await client.get("/proxy/sessions", params=IA)).status_code == 200
    assert booked(sb) == 2


async def test_only_resources_limits_the_faults() -> None:
    sb = sandbox_with(FaultConfig(server_errors=1.0, only_resources=["participants"]))
    demo = sb.store.demo
    assert demo is not None
    async with sandbox_client(sb) as client:
        assert (await client.get("/proxy/sessions", params=IA)).status_code == 200
        response = await client.get("/proxy/participants", params={**IA, "session_id": demo.sessions["future"]})
        assert response.status_code in (502, 504)
