"""Tests of the simulated Coviu rules through Truto's proxy: sessions, participants, summaries, 404s, paging.

Every temporal rule runs against a fake clock that the tests move by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox import Sandbox, SandboxConfig, create_sandbox, generate_sessions
from sandbox.testing import sandbox_client
from tools.clock import FakeClock

IA = {"integrated_account_id": "sandbox"}
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sb(clock: FakeClock) -> Sandbox:
    return create_sandbox(SandboxConfig(rate_limit=10_000), clock=clock)


@pytest.fixture
async def client(sb: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with sandbox_client(sb) as c:
        yield c


async def create_session(client: httpx.AsyncClient, start: datetime, minutes: int = 30, **extra: Any) -> httpx.Response:
    body = {
        "session_name": "Follow-up - Ava Jenkins",
        "start_time": iso(start),
        "end_time": iso(start + timedelta(minutes=minutes)),
        **extra,
    }
    return await client.post("/proxy/sessions", params=IA, json=body)


def assert_remote(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status
    assert body["truto_is_remote_error"] is True
    assert body["raw_response"] == {"error": {"message": body["message"]}}
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body


# --------------------------------------------------------------------------- create


async def test_create_session_with_participants(client: httpx.AsyncClient, sb: Sandbox) -> None:
    response = await create_session(
        client,
        NOW + timedelta(hours=1),
        participants=[{"display_name": "Dr. Smith", "role": "HOST"}, {"display_name": "Ava Jenkins", "role": "guest"}],
        feature_flags=["session;enforce-participant-uniqueness"],
    )
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["start_time"] == "2026-11-25T10:00:00.000Z"
    assert session["team_id"] == sb.store.demo.team_id  # type: ignore[union-attr]
    assert [p["role"] for p in session["participants"]] == ["HOST", "GUEST"]
    for person in session["participants"]:
        assert person["entry_url"] == f"https://coviu.com/session/{person['participant_id']}"
        assert person["session_id"] == session["session_id"]
    assert session["feature_flags"] == ["session;enforce-participant-uniqueness"]
    assert "canceled_time" not in session
    fetched = await client.get(f"/proxy/sessions/{session['session_id']}", params=IA)
    assert fetched.json() == session


async def test_create_accepts_rfc1123_and_offsets(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/proxy/sessions",
        params=IA,
        json={
            "session_name": "RFC times",
            "start_time": "Wed, 25 Nov 2026 10:00:00 GMT",
            "end_time": "2026-11-25T20:30:00+10:00",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["end_time"] == "2026-11-25T10:30:00.000Z"


async def test_rfc1123_output_format(clock: FakeClock) -> None:
    sb = create_sandbox(SandboxConfig(time_format="rfc1123"), clock=clock)
    async with sandbox_client(sb) as client:
        response = await create_session(client, NOW + timedelta(hours=1))
    assert response.json()["start_time"] == "Wed, 25 Nov 2026 10:00:00 GMT"


async def test_create_in_the_past_is_refused(client: httpx.AsyncClient, sb: Sandbox) -> None:
    before = len(sb.store.sessions)
    response = await create_session(client, NOW - timedelta(minutes=1))
    assert_remote(response, 400, "start_time must be in the future", "now is 2026-11-25T09:00:00.000Z")
    response = await create_session(client, NOW)  # exactly now is not the future
    assert_remote(response, 400, "start_time must be in the future")
    assert len(sb.store.sessions) == before


async def test_create_end_before_start_is_refused(client: httpx.AsyncClient) -> None:
    response = await create_session(client, NOW + timedelta(hours=1), minutes=-10)
    assert_remote(response, 400, "end_time must be after start_time")
    response = await create_session(client, NOW + timedelta(hours=1), minutes=0)
    assert_remote(response, 400, "end_time must be after start_time")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"start_time": "2026-11-26T10:00:00Z", "end_time": "2026-11-26T10:30:00Z"}, "`session_name` is required"),
        ({"session_name": "x", "end_time": "2026-11-26T10:30:00Z"}, "`start_time` is required"),
        ({"session_name": "x", "start_time": "tomorrow", "end_time": "2026-11-26T10:30:00Z"}, "`start_time`"),
        ({"session_name": "x", "start_time": "2026-11-26T10:00:00", "end_time": "2026-11-26T10:30:00Z"}, "zone"),
        (
            {"session_name": "x", "start_time": "2026-11-26T10:00:00Z", "end_time": "2026-11-26T10:30:00Z", "room": 1},
            "unknown field `room`",
        ),
        (
            {
                "session_name": "x",
                "start_time": "2026-11-26T10:00:00Z",
                "end_time": "2026-11-26T10:30:00Z",
                "participants": [{"display_name": "Dr. Who", "role": "doctor"}],
            },
            "`participants[0].role`",
        ),
        (
            {
                "session_name": "x",
                "start_time": "2026-11-26T10:00:00Z",
                "end_time": "2026-11-26T10:30:00Z",
                "participants": [{"role": "host"}],
            },
            "`participants[0].display_name` is required",
        ),
        (
            {
                "session_name": "x",
                "start_time": "2026-11-26T10:00:00Z",
                "end_time": "2026-11-26T10:30:00Z",
                "feature_flags": "a",
            },
            "`feature_flags`",
        ),
    ],
)
async def test_invalid_create_bodies_name_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    assert_remote(await client.post("/proxy/sessions", params=IA, json=body), 400, fragment)


async def test_invalid_json_body_is_a_truto_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/proxy/sessions", params=IA, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "truto_is_remote_error" not in response.json()


# --------------------------------------------------------------------------- update and cancel


async def test_update_session(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session = (await create_session(client, NOW + timedelta(hours=1))).json()
    sid = session["session_id"]
    response = await client.patch(
        f"/proxy/sessions/{sid}", params=IA, json={"session_name": "Renamed", "end_time": iso(NOW + timedelta(hours=2))}
    )
    assert response.status_code == 200, response.text
    assert response.json()["session_name"] == "Renamed"
    assert response.json()["end_time"] == "2026-11-25T11:00:00.000Z"
    response = await client.patch(
        f"/proxy/sessions/{sid}", params=IA, json={"end_time": iso(NOW + timedelta(minutes=30))}
    )
    assert_remote(response, 400, "end_time must be after start_time")
    response = await client.patch(
        f"/proxy/sessions/{sid}", params=IA, json={"start_time": iso(NOW - timedelta(hours=1))}
    )
    assert_remote(response, 400, "start_time must be in the future")
    # A session in progress may still be extended.
    clock.advance(90 * 60)
    response = await client.patch(f"/proxy/sessions/{sid}", params=IA, json={"end_time": iso(NOW + timedelta(hours=3))})
    assert response.status_code == 200, response.text
    # Once finished it may not be changed.
    clock.advance(3 * 3600)
    response = await client.patch(f"/proxy/sessions/{sid}", params=IA, json={"session_name": "Too late"})
    assert_remote(response, 400, "a session that has already finished may not be changed")


async def test_update_with_id_in_body(clock: FakeClock) -> None:
    sb = create_sandbox(SandboxConfig(id_location="body"), clock=clock)
    async with sandbox_client(sb) as client:
        sid = (await create_session(client, NOW + timedelta(hours=1))).json()["session_id"]
        response = await client.patch(f"/proxy/sessions/{sid}", params=IA, json={"id": sid, "session_name": "Body id"})
        assert response.status_code == 200
        response = await client.patch(f"/proxy/sessions/{sid}", params=IA, json={"id": "other", "session_name": "x"})
        assert_remote(response, 400, "does not match the path id")


async def test_update_finished_demo_session_is_refused(client: httpx.AsyncClient, sb: Sandbox) -> None:
    sid = sb.store.demo.sessions["finished_today"]  # type: ignore[union-attr]
    response = await client.patch(f"/proxy/sessions/{sid}", params=IA, json={"session_name": "x"})
    assert_remote(response, 400, "a session that has already finished may not be changed")


async def test_cancel_session(client: httpx.AsyncClient, sb: Sandbox, clock: FakeClock) -> None:
    sid = (await create_session(client, NOW + timedelta(hours=1))).json()["session_id"]
    response = await client.delete(f"/proxy/sessions/{sid}", params=IA)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert_remote(await client.delete(f"/proxy/sessions/{sid}", params=IA), 400, "already been canceled")
    fetched = (await client.get(f"/proxy/sessions/{sid}", params=IA)).json()
    assert fetched["canceled_time"] == "2026-11-25T09:00:00.000Z"
    listed = (await client.get("/proxy/sessions", params={**IA, "limit": 200})).json()["result"]
    assert sid not in {s["session_id"] for s in listed}
    listed = (await client.get("/proxy/sessions", params={**IA, "limit": 200, "include_canceled": "true"})).json()
    assert sid in {s["session_id"] for s in listed["result"]}
    response = await client.patch(f"/proxy/sessions/{sid}", params=IA, json={"session_name": "x"})
    assert_remote(response, 400, "canceled session may not be changed")


async def test_cancel_started_session_is_refused(client: httpx.AsyncClient, sb: Sandbox, clock: FakeClock) -> None:
    sid = (await create_session(client, NOW + timedelta(minutes=5))).json()["session_id"]
    clock.advance(5 * 60)  # start_time == now: started
    response = await client.delete(f"/proxy/sessions/{sid}", params=IA)
    assert_remote(response, 400, "a session that has already started may not be canceled")
    assert sb.store.sessions[sid].canceled_time is None
    in_progress = sb.store.demo.sessions["in_progress"]  # type: ignore[union-attr]
    assert_remote(await client.delete(f"/proxy/sessions/{in_progress}", params=IA), 400, "already started")


async def test_cancel_session_whose_host_joined_early_is_refused(client: httpx.AsyncClient, sb: Sandbox) -> None:
    session = (
        await create_session(
            client, NOW + timedelta(hours=1), participants=[{"display_name": "Dr. Smith", "role": "host"}]
        )
    ).json()
    sb.store.record_entry(session["participants"][0]["participant_id"], NOW)
    response = await client.delete(f"/proxy/sessions/{session['session_id']}", params=IA)
    assert_remote(response, 400, "already started")


# --------------------------------------------------------------------------- participants


async def test_add_participant_and_list(client: httpx.AsyncClient, clock: FakeClock) -> None:
    sid = (await create_session(client, NOW + timedelta(minutes=10))).json()["session_id"]
    response = await client.post(
        "/proxy/participants",
        params={**IA, "session_id": sid},
        json={"display_name": "Ava Jenkins", "role": "Guest", "phone": "+61400000000", "state": "patient-42"},
    )
    assert response.status_code == 200, response.text
    guest = response.json()
    assert guest["role"] == "GUEST" and guest["phone"] == "+61400000000"
    assert guest["entry_url"] == f"https://coviu.com/session/{guest['participant_id']}"
    clock.advance(15 * 60)  # started but not finished: still fine
    host = await client.post(
        "/proxy/participants", params={**IA, "session_id": sid}, json={"display_name": "Dr. Smith", "role": "host"}
    )
    assert host.status_code == 200
    listed = (await client.get("/proxy/participants", params={**IA, "session_id": sid})).json()
    assert [p["display_name"] for p in listed["result"]] == ["Ava Jenkins", "Dr. Smith"]
    assert listed["next_cursor"] is None
    by_state = (await client.get("/proxy/sessions", params={**IA, "state": "patient-42", "limit": 200})).json()
    assert [s["session_id"] for s in by_state["result"]] == [sid]


async def test_add_participant_to_finished_session_is_refused(
    client: httpx.AsyncClient, sb: Sandbox, clock: FakeClock
) -> None:
    sid = (await create_session(client, NOW + timedelta(minutes=10))).json()["session_id"]
    clock.advance(41 * 60)  # now > end_time
    response = await client.post(
        "/proxy/participants", params={**IA, "session_id": sid}, json={"display_name": "Late", "role": "guest"}
    )
    assert_remote(response, 400, "a session that has already finished may not have participants added")
    # Finished by actual_end_time even before the scheduled end.
    demo = sb.store.demo
    assert demo is not None
    overrun = demo.sessions["overrun"]
    response = await client.post(
        "/proxy/participants", params={**IA, "session_id": overrun}, json={"display_name": "x", "role": "guest"}
    )
    assert_remote(response, 400, "already finished")


async def test_add_participant_to_canceled_or_unknown_session(client: httpx.AsyncClient, sb: Sandbox) -> None:
    canceled = sb.store.demo.sessions["canceled"]  # type: ignore[union-attr]
    body = {"display_name": "x", "role": "guest"}
    assert_remote(
        await client.post("/proxy/participants", params={**IA, "session_id": canceled}, json=body), 400, "canceled"
    )
    unknown = "00000000-0000-4000-8000-000000000000"
    response = await client.post("/proxy/participants", params={**IA, "session_id": unknown}, json=body)
    assert_remote(response, 404, f"`session_id` not found: {unknown}")
    response = await client.post("/proxy/participants", params=IA, json=body)
    assert response.status_code == 400 and "session_id" in response.json()["message"]
    assert "truto_is_remote_error" not in response.json()


async def test_add_participant_during_call_is_allowed(client: httpx.AsyncClient, sb: Sandbox) -> None:
    sid = sb.store.demo.sessions["in_progress"]  # type: ignore[union-attr]
    response = await client.post(
        "/proxy/participants", params={**IA, "session_id": sid}, json={"display_name": "Interpreter", "role": "GUEST"}
    )
    assert response.status_code == 200


async def test_participant_cancel_rule_finished(client: httpx.AsyncClient, sb: Sandbox, clock: FakeClock) -> None:
    session = (
        await create_session(
            client,
            NOW + timedelta(minutes=10),
            participants=[{"display_name": "A", "role": "guest"}, {"display_name": "B", "role": "guest"}],
        )
    ).json()
    first, second = (p["participant_id"] for p in session["participants"])
    clock.advance(15 * 60)  # started: allowed under the default rule
    response = await client.delete(f"/proxy/participants/{first}", params=IA)
    assert response.json() == {"ok": True}
    assert_remote(await client.delete(f"/proxy/participants/{first}", params=IA), 400, "already been canceled")
    shown = (await client.get(f"/proxy/sessions/{session['session_id']}", params=IA)).json()["participants"]
    assert [p["participant_id"] for p in shown] == [second]
    with_deleted = await client.get(
        "/proxy/participants", params={**IA, "session_id": session["session_id"], "deleted_participants": "true"}
    )
    deleted = [p for p in with_deleted.json()["result"] if p["participant_id"] == first]
    assert deleted[0]["deleted_at"] == "2026-11-25T09:15:00.000Z"
    clock.advance(30 * 60)  # finished
    response = await client.delete(f"/proxy/participants/{second}", params=IA)
    assert_remote(response, 400, "may not be canceled after the session has finished")


async def test_participant_cancel_rule_started(clock: FakeClock) -> None:
    sb = create_sandbox(SandboxConfig(participant_cancel_rule="started"), clock=clock)
    async with sandbox_client(sb) as client:
        session = (
            await create_session(
                client,
                NOW + timedelta(minutes=10),
                participants=[{"display_name": "A", "role": "guest"}, {"display_name": "B", "role": "guest"}],
            )
        ).json()
        first, second = (p["participant_id"] for p in session["participants"])
        assert (await client.delete(f"/proxy/participants/{first}", params=IA)).status_code == 200
        clock.advance(10 * 60)
        response = await client.delete(f"/proxy/participants/{second}", params=IA)
        assert_remote(response, 400, "may not be canceled after the session has started")


async def test_update_participant(client: httpx.AsyncClient) -> None:
    session = (
        await create_session(client, NOW + timedelta(minutes=10), participants=[{"display_name": "A", "role": "guest"}])
    ).json()
    pid = session["participants"][0]["participant_id"]
    response = await client.patch(
        f"/proxy/participants/{pid}", params=IA, json={"display_name": "Ava J.", "role": "host"}
    )
    assert response.json()["display_name"] == "Ava J." and response.json()["role"] == "HOST"
    assert_remote(await client.patch(f"/proxy/participants/{pid}", params=IA, json={"role": "admin"}), 400, "`role`")
    assert_remote(await client.patch(f"/proxy/participants/{pid}", params=IA, json={"email": "a@b.c"}), 400, "`email`")


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/proxy/sessions/{id}", "`session_id` not found: {id}"),
        ("/proxy/session_summaries/{id}", "`session_id` not found: {id}"),
        ("/proxy/participants/{id}", "`participant_id` not found: {id}"),
    ],
)
async def test_unknown_ids_are_remote_404s(client: httpx.AsyncClient, path: str, fragment: str) -> None:
    unknown = "11111111-2222-4333-8444-555555555555"
    response = await client.get(path.format(id=unknown), params=IA)
    assert_remote(response, 404, fragment.format(id=unknown))
    if "sessions" in path or "participants" in path:
        assert_remote(await client.delete(path.format(id=unknown), params=IA), 404, unknown)


async def test_unknown_resource_and_method_are_truto_404s(client: httpx.AsyncClient) -> None:
    response = await client.get("/proxy/appointments", params=IA)
    assert response.status_code == 404 and "truto_is_remote_error" not in response.json()
    response = await client.delete("/proxy/waiting_calls/abc", params=IA)
    assert response.status_code == 404 and "method `delete`" in response.json()["message"]


# --------------------------------------------------------------------------- summaries


async def test_summary_of_completed_and_no_show_sessions(client: httpx.AsyncClient, sb: Sandbox) -> None:
    demo = sb.store.demo
    assert demo is not None
    overrun = (await client.get(f"/proxy/session_summaries/{demo.sessions['overrun']}", params=IA)).json()
    assert overrun["end_time"] == "2026-11-24T10:30:00.000Z"
    assert overrun["actual_end_time"] == "2026-11-24T10:55:00.000Z"
    assert [p["entry_time"] for p in overrun["participants"]] == [
        "2026-11-24T10:00:00.000Z",
        "2026-11-24T10:02:00.000Z",
    ]
    assert overrun["participants"][0]["exit_time"] == {"left_at": "2026-11-24T10:55:00.000Z", "left_reason": "hangup"}
    assert set(overrun["participants"][0]["bandwidth"]) >= {"avg_sent_bandwidth", "avg_receive_bandwidth"}
    no_show = (await client.get(f"/proxy/session_summaries/{demo.sessions['no_show']}", params=IA)).json()
    assert no_show["actual_end_time"] is None and no_show["participants"] == []
    live = (await client.get(f"/proxy/session_summaries/{demo.sessions['in_progress']}", params=IA)).json()
    assert live["actual_end_time"] is None
    assert live["participants"][0]["exit_time"] == {"left_at": None, "left_reason": None}


# --------------------------------------------------------------------------- lists and paging


async def test_sessions_pagination_to_the_last_page(clock: FakeClock) -> None:
    sb = create_sandbox(SandboxConfig(rate_limit=10_000), clock=clock, seed_demo=False)
    ids = generate_sessions(sb.store, NOW.date() - timedelta(days=1), 103, seed=7)
    async with sandbox_client(sb) as client:
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {**IA, "include_canceled": "true"}
            if cursor:
                params["next_cursor"] = cursor
            page = (await client.get("/proxy/sessions", params=params)).json()
            pages += 1
            assert page["prev_cursor"] is None
            assert page["result_count"] == len(page["result"])
            seen += [s["session_id"] for s in page["result"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 5  # 25 + 25 + 25 + 25 + 3
        assert len(seen) == len(set(seen)) == 103
        assert set(seen) == set(ids)
        # Creation order, oldest first.
        created = [sb.store.sessions[sid].created_at for sid in seen]
        assert created == sorted(created)
        # A big page, capped at 200.
        big = (await client.get("/proxy/sessions", params={**IA, "limit": 1000, "include_canceled": "true"})).json()
        assert big["result_count"] == 103 and big["next_cursor"] is None
        bad = await client.get("/proxy/sessions", params={**IA, "next_cursor": "not-a-cursor"})
        assert bad.status_code == 400
        bad = await client.get("/proxy/sessions", params={**IA, "limit": "zero"})
        assert bad.status_code == 400 and "limit" in bad.json()["message"]


async def test_time_filtered_list_orders_by_start(client: httpx.AsyncClient, sb: Sandbox) -> None:
    demo = sb.store.demo
    assert demo is not None
    since = datetime(2026, 11, 24, tzinfo=UTC)
    params: dict[str, Any] = {
        **IA,
        "start_time": iso(since - timedelta(hours=1)),
        "end_time": iso(since + timedelta(days=1)),
        "limit": 4,
    }
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (
            await client.get("/proxy/sessions", params={**params, **({"next_cursor": cursor} if cursor else {})})
        ).json()
        seen += page["result"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    names = {s["session_id"] for s in seen}
    expected = {
        demo.sessions[k]
        for k in (
            "ends_at_yesterday_start",
            "ontime",
            "overrun",
            "small_overrun",
            "no_show",
            "missing_form",
            "pending_form",
            "late_form",
            "ends_at_today_start",
        )
    }
    assert names == expected  # canceled left out; end_time inclusive
    starts = [s["start_time"] for s in seen]
    assert starts == sorted(starts)
    reverse = (await client.get("/proxy/sessions", params={**params, "limit": 200, "order": "reverse"})).json()[
        "result"
    ]
    assert [s["session_id"] for s in reverse] == [s["session_id"] for s in reversed(seen)]
    # A cursor from one ordering does not fit another.
    first = (await client.get("/proxy/sessions", params=params)).json()
    mismatched = await client.get("/proxy/sessions", params={**IA, "next_cursor": first["next_cursor"]})
    assert mismatched.status_code == 400


async def test_invalid_list_parameters_are_named(client: httpx.AsyncClient) -> None:
    assert_remote(await client.get("/proxy/sessions", params={**IA, "order": "backward"}), 400, "`order`")
    assert_remote(
        await client.get("/proxy/sessions", params={**IA, "include_canceled": "maybe"}), 400, "`include_canceled`"
    )
    assert_remote(await client.get("/proxy/sessions", params={**IA, "start_time": "yesterday"}), 400, "`start_time`")
