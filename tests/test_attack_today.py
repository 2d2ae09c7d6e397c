"""Attacks on the latest changes: the headroom slot, the no-show cache, per-run budgets, the stall window."""

from __future__ import annotations

import contextvars
import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sandbox import DEMO_ACCOUNT_ID, DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, Sandbox, SandboxTransport
from sandbox.ratelimit import RateDecision, RateLimiter
from tests.test_ratestore import ACCOUNT, simulate
from tools.clock import FakeClock
from tools.ratelimit import RateLimitGovernor, RateLimitInfo
from tools.toolbox import open_toolbox
from workers.recordings import FILE_GET, RecordingsWorker

# --- the download stall window ------------------------------------------------------------------------


class _Drip(httpx.AsyncByteStream):
    """A body sent 1 KiB at a time, `gap` seconds (on the fake clock) between pieces: each piece resets any read
    timeout, but the rate (1 KiB per 20 s) is far below the floor (64 KiB per stall window)."""

    def __init__(self, body: bytes, clock: FakeClock, gap: float) -> None:
        self.body, self.clock, self.gap = body, clock, gap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), 1024):
            self.clock.advance(self.gap)
            yield self.body[start : start + 1024]


class _DripMedia(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, clock: FakeClock) -> None:
        self.inner, self.clock = inner, clock

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if "submission_files" not in request.url.path or response.status_code >= 300:
            return response
        body = await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Drip(body, self.clock, 20.0), request=request
        )


@pytest.mark.profiles("default")
async def test_a_recording_dripped_a_kilobyte_every_20_s_is_ended_as_stalled(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    """The worker reads `aiter_bytes(CHUNK_SIZE)`: httpx then buffers the body into 256 KiB chunks, so the throughput
    floor sees a chunk only once 256 KiB have come (however long that took) and a drip is never ended as stalled
    (the floor's own test calls `take` per network read, which the worker never does)."""
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=_DripMedia(SandboxTransport(sandbox), clock),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    try:
        assert sandbox.store.demo is not None
        session = sandbox.store.demo.sessions["ontime"]
        worker = RecordingsWorker(
            toolbox,
            team_id=DEMO_TEAM_ID,
            collection_id=DEMO_INTAKE_COLLECTION_ID,
            download_dir=tmp_path / "rec",
            stall_seconds=60.0,
        )
        started = clock.monotonic()
        report = await worker.run(session_id=session)
    finally:
        await toolbox.aclose()
    video = next(r for r in report.results if r.item.tool == FILE_GET)
    assert video.item.size is not None and video.item.size > 256 * 1024
    assert video.status != "downloaded", (
        f"{video.item.size} bytes at 1 KiB per 20 s ({clock.monotonic() - started:.0f} s) were taken as a download"
    )
    assert "stalled" in (video.error or "") + " ".join(report.errors)


# --- the slot of headroom -----------------------------------------------------------------------------


def _headers(decision: RateDecision) -> RateLimitInfo:
    """What the sandbox's headers say about a decision (whole seconds, at least 1)."""
    reset = float(max(1, math.ceil(decision.reset_after)))
    return RateLimitInfo(
        limit=decision.limit,
        remaining=decision.remaining,
        reset_seconds=reset,
        retry_after_seconds=None if decision.allowed else reset,
    )


def test_a_headroom_send_is_not_made_once_the_servers_count_says_the_slot_is_gone() -> None:
    # Found by the attack review: the headroom slot used to be booked (its send time fixed) 9 s ahead, so a count
    # that showed it gone in between did not stop the send (a 429). Now the send asks again at that moment.
    clock = FakeClock()
    server = RateLimiter(clock)
    gov = RateLimitGovernor(clock=clock, smooth=False)
    for _ in range(47):  # the window opens with 47 sends of another sender on the account
        server.check(ACCOUNT, 50, 10.0)
    first = contextvars.copy_context()
    assert first.run(gov.reserve) == 0.0
    first.run(gov.observe, _headers(server.check(ACCOUNT, 50, 10.0)), status_code=200)  # remaining 2
    a, b = contextvars.copy_context(), contextvars.copy_context()
    assert a.run(gov.reserve) == 0.0  # room 2 less the headroom: A goes now
    wait_b, booked = b.run(gov.try_reserve)  # only the headroom is left: B is told to ask again late in the window
    assert not booked and 0.0 < wait_b < 10.0
    server.check(ACCOUNT, 50, 10.0)  # the other sender takes one more
    a.run(gov.observe, _headers(server.check(ACCOUNT, 50, 10.0)), status_code=200)  # A's answer: remaining 0
    clock.advance(wait_b)
    wait_again, booked = b.run(gov.try_reserve)  # B asks again: the count says the window is spent
    assert booked and wait_again > 0.0
    clock.advance(wait_again)
    assert server.check(ACCOUNT, 50, 10.0).allowed  # B goes at the reset, into a new window: no 429


def test_a_sender_outside_the_deployment_late_in_each_window_is_not_refused_in_every_window() -> None:
    # Found by the attack review: an outsider 0.5 s before each reset met a full window every time. The headroom
    # is now decided 0.25 s before the reset on the count as it is then: our send meets the outsider's once (a 429),
    # and the headroom is then kept for 30 windows. (An outsider in a window's last 0.25 s, after our send, still
    # finds it full: the price of spending the headroom at all.)
    clock = FakeClock()
    gov = RateLimitGovernor(clock=clock)
    foreign = [10.0 * k + 9.5 for k in range(20)]  # another app on the account, in each window's last second
    result = simulate(clock, [gov], 1000, latency=lambda: 0.005, foreign=foreign)
    assert len(result.sent) == 1000
    refused = result.rate_limited + (len(foreign) - result.foreign_accepted)
    assert refused <= 1, f"{len(foreign) - result.foreign_accepted} of the outsider's {len(foreign)} sends refused"
