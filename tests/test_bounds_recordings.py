"""Issue 13: every download ends. An endless body stops at the announced size and leaves nothing behind; a
download that would not fit on the disk is refused before a byte is fetched.
"""

from __future__ import annotations

import shutil
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
    create_sandbox,
)
from tests.e2e import serve
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

    monkeypatch.setattr("workers.recordings.shutil.disk_usage", tiny)
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
