"""Every download ends. An endless body stops at the announced size and leaves nothing behind; a
download that would not fit on the disk is refused before a byte is fetched.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphs.context import Services
from sandbox import (
    DEMO_ACCOUNT_ID,
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    FaultConfig,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
    create_sandbox,
)
from tests.e2e import serve
from tools.clock import FakeClock
from tools.ratelimit import RateLimitGovernor
from tools.toolbox import open_toolbox
from workers.recordings import FILE_GET, RecordingsWorker


def worker(toolbox: Any, directory: Path, **kwargs: Any) -> RecordingsWorker:
    return RecordingsWorker(
        toolbox, team_id=DEMO_TEAM_ID, collection_id=DEMO_INTAKE_COLLECTION_ID, download_dir=directory, **kwargs
    )


async def test_an_endless_recording_never_grows_past_its_announced_size(tmp_path: Path) -> None:
    sandbox = create_sandbox(SandboxConfig(faults=FaultConfig(endless_media=True, only_resources=["submission_files"])))
    assert sandbox.store.demo is not None
    session = sandbox.store.demo.sessions["ontime"]
    with serve(sandbox) as served:
        toolbox = await open_toolbox(
            base_url=served.url,
            api_key="sandbox",
            integrated_account_id=DEMO_ACCOUNT_ID,
            governor=RateLimitGovernor(),
            timeout=httpx.Timeout(10.0),
        )
        try:
            report = await worker(toolbox, tmp_path / "rec").run(session_id=session)
        finally:
            await toolbox.aclose()
    video = next(r for r in report.results if r.item.tool == FILE_GET)
    assert video.item.size is not None
    assert video.status == "failed" and "more than the" in (video.error or "")
    assert any("removed as corrupt" in e for e in report.errors)
    assert not list((tmp_path / "rec").rglob("*.part")), "the partial file is removed"
    for path in (tmp_path / "rec").rglob("*.webm"):
        assert path.stat().st_size <= 50_000_000
    assert next(r for r in report.results if r.item.kind == "audio").status == "downloaded"


async def test_a_download_that_would_not_fit_is_refused_before_any_byte(
    services: Services, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sandbox.store.demo is not None
    session = sandbox.store.demo.sessions["ontime"]
    real = shutil.disk_usage

    def tiny(path: Any) -> Any:
        usage = real(path)
        return type(usage)(usage.total, usage.total - 1000, 1000)

    monkeypatch.setattr("workers.recordings.stream.shutil.disk_usage", tiny)
    report = await worker(services.toolbox, tmp_path / "rec").run(session_id=session)
    video = next(r for r in report.results if r.item.tool == FILE_GET)
    assert video.status == "failed" and "free" in (video.error or "")
    assert sandbox.count(resource="submission_files") == 0, "nothing was fetched"
    assert not list((tmp_path / "rec").rglob("*.part"))


def test_a_dripping_download_is_ended_as_stalled_and_a_slow_steady_one_is_not() -> None:
    from tools.errors import TransportError
    from workers.recordings import STALL_MIN_BYTES, STALL_WINDOW_SECONDS, ThroughputFloor

    now = [0.0]
    drip = ThroughputFloor(lambda: now[0], "/proxy/submission_files/f")
    with pytest.raises(TransportError, match="stalled"):
        for _ in range(10):  # a byte every 20 s: the read timeout never fires
            now[0] += 20.0
            drip.take(1)
    now[0] = 0.0
    steady = ThroughputFloor(lambda: now[0], "/proxy/submission_files/f")
    for _ in range(int(4 * STALL_WINDOW_SECONDS)):  # 4 minutes at just over the floor's rate
        now[0] += 1.0
        steady.take(STALL_MIN_BYTES // int(STALL_WINDOW_SECONDS) + 1)
    assert TransportError("stalled", "x").retryable  # retried, resuming the kept .part with Range
    now[0] = 0.0
    quick = ThroughputFloor(lambda: now[0], "/proxy/submission_files/f", window=5.0)  # a 5 s setting
    now[0] += 5.0
    with pytest.raises(TransportError, match="per 5 s; COVIU_AGENT_DOWNLOAD_STALL_SECONDS"):
        quick.take(STALL_MIN_BYTES - 1)


def test_the_stall_window_is_a_setting_checked_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.settings import Settings

    monkeypatch.setenv("COVIU_AGENT_DOWNLOAD_STALL_SECONDS", "15")
    assert Settings(_env_file=None).download_stall_seconds == 15.0  # type: ignore[call-arg]
    monkeypatch.setenv("COVIU_AGENT_DOWNLOAD_STALL_SECONDS", "0")
    with pytest.raises(ValueError, match="COVIU_AGENT_DOWNLOAD_STALL_SECONDS"):
        Settings(_env_file=None)  # type: ignore[call-arg]


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
