"""Tests of the sandbox's Truto layer: account id, rate limits and headers, account status, idempotency keys.

Rate windows run on a fake monotonic clock: the tests advance it instead of sleeping.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

from sandbox import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, FaultConfig, SandboxConfig, config_from_env, create_sandbox
from sandbox.querystring import parse_query
from sandbox.testing import sandbox_client
from tools.clock import FakeClock

IA = {"integrated_account_id": "sandbox"}
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def future_session(minutes_ahead: int = 60) -> dict[str, str]:
    start = NOW + timedelta(minutes=minutes_ahead)
    return {
        "session_name": "Triage booking - Harper King",
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(minutes=30)).isoformat(),
    }


async def test_integrated_account_id_is_required_and_checked() -> None:
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        missing = await client.get("/proxy/sessions")
        assert missing.status_code == 400
        assert "integrated_account_id" in missing.json()["message"]
        assert "truto_is_remote_error" not in missing.json()
        unknown = await client.get("/proxy/sessions", params={"integrated_account_id": "nope"})
        assert unknown.status_code == 404 and "nope" in unknown.json()["message"]
        no_token = await client.get("/proxy/sessions", params=IA, headers={"Authorization": ""})
        assert no_token.status_code == 401


async def test_rate_limit_window_and_headers_in_seconds() -> None:
    clock = FakeClock(NOW)
    sb = create_sandbox(clock=clock)
    async with sandbox_client(sb) as client:
        for i in range(50):
            response = await client.get("/proxy/sessions", params={**IA, "limit": 1})
            assert response.status_code == 200
            assert response.headers["ratelimit-limit"] == "50"
            assert response.headers["ratelimit-remaining"] == str(49 - i)
            assert response.headers["ratelimit-reset"] == ("10" if i <= 10 else "8")
            if i == 10:
                clock.advance(2.5)  # the window started at the first request
        refused = await client.get("/proxy/sessions", params=IA)
        assert refused.status_code == 429
        body = refused.json()
        assert body["statusCode"] == 429 and "truto_is_remote_error" not in body
        assert refused.headers["retry-after"] == "8"  # 10 - 2.5 = 7.5 s, rounded up
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-reset"] == "8"
        # 429s do not count: the next window is full-sized.
        clock.advance(7.4)
        assert (await client.get("/proxy/sessions", params=IA)).status_code == 429
        clock.advance(0.2)
        fresh = await client.get("/proxy/sessions", params=IA)
        assert fresh.status_code == 200
        assert fresh.headers["ratelimit-remaining"] == "49"
    assert sb.count(resource="sessions", truto_method="list", status=429) == 2
    assert sb.count(status=200) == 51


async def test_rate_limit_unix_reset_and_http_date_retry_after() -> None:
    clock = FakeClock(NOW)
    config = SandboxConfig(rate_limit=3, ratelimit_reset_format="unix", retry_after_format="http-date")
    sb = create_sandbox(config, clock=clock)
    async with sandbox_client(sb) as client:
        first = await client.get("/proxy/sessions", params=IA)
        assert first.headers["ratelimit-reset"] == str(math.ceil(NOW.timestamp()) + 10)
        clock.advance(4)
        for _ in range(2):
            assert (await client.get("/proxy/sessions", params=IA)).status_code == 200
        refused = await client.get("/proxy/sessions", params=IA)
        assert refused.status_code == 429
        retry_at = parsedate_to_datetime(refused.headers["retry-after"])
        assert retry_at == NOW + timedelta(seconds=10)
        assert refused.headers["ratelimit-reset"] == str(int((NOW + timedelta(seconds=10)).timestamp()))
        assert refused.headers["date"] == "Wed, 25 Nov 2026 09:00:04 GMT"


async def test_rate_limit_is_per_account_and_skips_tools() -> None:
    clock = FakeClock(NOW)
    sb = create_sandbox(SandboxConfig(rate_limit=1), clock=clock)
    async with sandbox_client(sb) as client:
        assert (await client.get("/proxy/sessions", params=IA)).status_code == 200
        assert (await client.get("/proxy/sessions", params=IA)).status_code == 429
        assert (await client.get("/integrated-account/sandbox/tools")).status_code == 200


@pytest.mark.parametrize(
    ("status", "method", "expected", "remote"),
    [
        ("needs_reauth", "GET", 401, True),
        ("needs_reauth", "POST", 401, True),
        ("blocked", "GET", 503, False),
        ("read_only", "GET", 200, False),
        ("read_only", "POST", 405, False),
        ("missing_scopes", "GET", 200, False),
        ("missing_scopes", "POST", 403, True),
    ],
)
async def test_account_status(status: str, method: str, expected: int, remote: bool) -> None:
    sb = create_sandbox(SandboxConfig(account_status=status), clock=FakeClock(NOW))  # type: ignore[arg-type]
    async with sandbox_client(sb) as client:
        if method == "GET":
            response = await client.get("/proxy/sessions", params=IA)
        else:
            response = await client.post("/proxy/sessions", params=IA, json=future_session())
    assert response.status_code == expected, response.text
    if expected == 200:
        return
    body = response.json()
    assert body.get("truto_is_remote_error", False) is remote
    assert response.headers["ratelimit-limit"] == "50"
    if status == "blocked":
        assert body["message"] == "integrated account is blocked"
    if status == "missing_scopes":
        assert body["truto_error_insight"] == {"forbidden_error": {"value": {"missing_scopes": ["sessions:write"]}}}
    if status in ("read_only", "missing_scopes"):
        assert len(sb.store.sessions) == 14  # nothing written


async def test_read_only_refuses_patch_and_delete() -> None:
    sb = create_sandbox(SandboxConfig(account_status="read_only"), clock=FakeClock(NOW))
    sid = sb.store.demo.sessions["future"]  # type: ignore[union-attr]
    async with sandbox_client(sb) as client:
        assert (await client.patch(f"/proxy/sessions/{sid}", params=IA, json={"session_name": "x"})).status_code == 405
        assert (await client.delete(f"/proxy/sessions/{sid}", params=IA)).status_code == 405
    assert sb.store.sessions[sid].canceled_time is None


async def test_account_status_can_change_at_run_time() -> None:
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        assert (await client.get("/proxy/sessions", params=IA)).status_code == 200
        sb.config.account_status = "needs_reauth"
        assert (await client.get("/proxy/sessions", params=IA)).status_code == 401


async def test_idempotency_key_returns_the_first_response() -> None:
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        headers = {"Idempotency-Key": "book-ava-1"}
        first = await client.post("/proxy/sessions", params=IA, json=future_session(), headers=headers)
        second = await client.post("/proxy/sessions", params=IA, json=future_session(), headers=headers)
        assert first.status_code == second.status_code == 200
        assert first.json() == second.json()
        assert second.headers["idempotent-replayed"] == "true"
        assert len([s for s in sb.store.sessions.values() if s.session_name == "Triage booking - Harper King"]) == 1
        reused = await client.post("/proxy/sessions", params=IA, json=future_session(90), headers=headers)
        assert reused.status_code == 422
        other = await client.post(
            "/proxy/sessions", params=IA, json=future_session(), headers={"Idempotency-Key": "book-ava-2"}
        )
        assert other.json()["session_id"] != first.json()["session_id"]
    assert [r.idempotency_key for r in sb.requests] == ["book-ava-1", "book-ava-1", "book-ava-1", "book-ava-2"]


async def test_idempotency_keys_ignored_when_disabled() -> None:
    sb = create_sandbox(SandboxConfig(honour_idempotency_keys=False), clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        headers = {"Idempotency-Key": "same"}
        first = await client.post("/proxy/sessions", params=IA, json=future_session(), headers=headers)
        second = await client.post("/proxy/sessions", params=IA, json=future_session(), headers=headers)
        assert first.json()["session_id"] != second.json()["session_id"]


async def test_failed_create_is_not_remembered_by_its_key() -> None:
    clock = FakeClock(NOW)
    sb = create_sandbox(clock=clock)
    async with sandbox_client(sb) as client:
        headers = {"Idempotency-Key": "k"}
        past = {**future_session(), "start_time": (NOW - timedelta(hours=1)).isoformat()}
        assert (await client.post("/proxy/sessions", params=IA, json=past, headers=headers)).status_code == 400
        assert (
            await client.post("/proxy/sessions", params=IA, json=future_session(), headers=headers)
        ).status_code == 200


async def test_request_log_and_count() -> None:
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        await client.get("/integrated-account/sandbox/tools")
        await client.get("/proxy/sessions", params={**IA, "limit": 2})
        await client.get(f"/proxy/sessions/{sb.store.demo.sessions['ontime']}", params=IA)  # type: ignore[union-attr]
        await client.get("/proxy/sessions/missing", params=IA)
        await client.post("/proxy/sessions", params=IA, json=future_session())
    assert [(r.method, r.resource, r.truto_method, r.status) for r in sb.requests] == [
        ("GET", None, None, 200),
        ("GET", "sessions", "list", 200),
        ("GET", "sessions", "get", 200),
        ("GET", "sessions", "get", 404),
        ("POST", "sessions", "create", 200),
    ]
    assert sb.requests[1].query == {"integrated_account_id": "sandbox", "limit": "2"}
    assert sb.count(resource="sessions") == 4
    assert sb.count(truto_method="get", status=404) == 1


async def test_bracket_query_syntax() -> None:
    assert parse_query("a[b]=1&a[c]=2&arr[]=x&arr[]=y&plain=1&plain=2&n[0]=z") == {
        "a": {"b": "1", "c": "2"},
        "arr": ["x", "y"],
        "plain": ["1", "2"],
        "n": ["z"],
    }
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        response = await client.get(
            "/proxy/submissions?integrated_account_id=sandbox"
            f"&team_id={DEMO_TEAM_ID}&collection_id={DEMO_INTAKE_COLLECTION_ID}&order=desc&limit=2"
        )
        assert response.status_code == 200
        repeated = await client.get(
            f"/proxy/waiting_calls?integrated_account_id=sandbox&team_id[]={DEMO_TEAM_ID}&team_id[]=x"
        )
        assert repeated.status_code == 400


async def test_set_faults_replaces_faults_at_run_time() -> None:
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        sb.set_faults(FaultConfig(server_errors=1.0))
        assert (await client.get("/proxy/sessions", params=IA)).status_code in (502, 504)
        sb.set_faults(FaultConfig())
        assert (await client.get("/proxy/sessions", params=IA)).status_code == 200


def test_config_from_env() -> None:
    config = config_from_env(
        {
            "COVIU_SANDBOX_CONFIG": '{"tools_envelope": "results", "rate_limit": 5}',
            "COVIU_SANDBOX_FAULTS": '{"seed": 3, "drop": 0.5}',
        }
    )
    assert config.tools_envelope == "results" and config.rate_limit == 5
    assert config.faults.seed == 3 and config.faults.drop == 0.5
    assert config_from_env({}) == SandboxConfig()
    with pytest.raises(ValueError):
        config_from_env({"COVIU_SANDBOX_FAULTS": '{"dorp": 1}'})


async def test_unknown_route_is_truto_404() -> None:
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        response = await client.get("/unified/crm/contacts")
    assert response.status_code == 404
    assert isinstance(response.json()["message"], str)


async def test_httpx_put_is_not_a_proxy_method() -> None:
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        response = await client.put("/proxy/sessions/abc", params=IA, json={})
    assert response.status_code == 405
    assert isinstance(response, httpx.Response)


async def test_replacing_the_clock_moves_every_rule() -> None:
    sb = create_sandbox(clock=FakeClock(NOW))
    async with sandbox_client(sb) as client:
        assert (await client.post("/proxy/sessions", params=IA, json=future_session(1))).status_code == 200
        sb.clock = FakeClock(NOW + timedelta(minutes=5))
        response = await client.post("/proxy/sessions", params=IA, json=future_session(1))
        assert response.status_code == 400 and "2026-11-25T09:05:00.000Z" in response.json()["message"]
        assert response.headers["date"] == "Wed, 25 Nov 2026 09:05:00 GMT"
