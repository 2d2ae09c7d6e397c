"""Recordings worker on the sandbox: streaming to disk, Range resume, skip, manifest, transcription, the CLI.

Nothing leaves loopback and nothing really sleeps (retries wait on the FakeClock).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.cli.recordings import print_run
from agent.runs import run_recordings
from agent.settings import Settings
from graphs.context import Services
from sandbox import DEMO_ACCOUNT_ID, DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, Sandbox, SandboxTransport
from sandbox.media import webm_bytes
from sandbox.store import DemoData
from tools.clock import FakeClock
from tools.ratelimit import RateLimitGovernor
from tools.toolbox import Toolbox, open_toolbox
from workers.recordings import (
    AUDIO_GET,
    FILE_GET,
    MANIFEST_NAME,
    MediaItem,
    OpenAITranscriber,
    RecordingsWorker,
    safe_name,
)


def demo(sandbox: Sandbox) -> DemoData:
    """The sandbox's seeded demo ids."""
    assert sandbox.store.demo is not None
    return sandbox.store.demo


def worker_for(toolbox: Toolbox, directory: Path | None, **kwargs: Any) -> RecordingsWorker:
    return RecordingsWorker(
        toolbox, team_id=DEMO_TEAM_ID, collection_id=DEMO_INTAKE_COLLECTION_ID, download_dir=directory, **kwargs
    )


def remote_bytes(sandbox: Sandbox, item: MediaItem) -> bytes:
    """The bytes the sandbox serves for a media item."""
    submission = sandbox.store.submissions[item.submission_id]
    file_id = submission.audio_recording_id if item.tool == AUDIO_GET else item.file_id
    assert file_id is not None
    media = sandbox.store.files[file_id]
    return webm_bytes(media.seed, media.size)


def binary_requests(sandbox: Sandbox) -> list[tuple[str | None, int]]:
    return [(r.resource, r.status) for r in sandbox.requests if r.resource in ("submission_files", "audio_recordings")]


async def video_item(services: Services, session_id: str) -> MediaItem:
    items = await worker_for(services.toolbox, None).find(session_id=session_id)
    return next(i for i in items if i.tool == FILE_GET)


async def test_downloads_a_sessions_recordings_and_writes_the_manifest(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    report = await worker_for(services.toolbox, tmp_path).run(session_id=ontime)
    assert sorted((r.item.kind, r.status) for r in report.results) == [("audio", "downloaded"), ("video", "downloaded")]
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert len(manifest["files"]) == 2
    for entry in manifest["files"]:
        assert set(entry) >= {
            "session_id",
            "submission_id",
            "file_id",
            "kind",
            "content_type",
            "size",
            "sha256",
            "path",
        }
        assert entry["session_id"] == ontime
        assert entry["submission_id"] == demo(sandbox).submissions["ontime"]
        item = next(r.item for r in report.results if r.item.kind == entry["kind"])
        data = remote_bytes(sandbox, item)
        path = tmp_path / entry["path"]
        assert path.read_bytes() == data
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["content_type"] == f"{entry['kind']}/webm"
        # file names come from ids only: no patient (or clinician) names on disk
        assert "Jenkins" not in entry["path"] and "consult" not in entry["path"]
    assert not list(tmp_path.rglob("*.part"))


async def test_resumes_a_half_downloaded_file_with_range(services: Services, sandbox: Sandbox, tmp_path: Path) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    item = await video_item(services, ontime)
    data = remote_bytes(sandbox, item)
    half = len(data) // 2
    part = tmp_path / item.relative_path()
    part = part.with_name(part.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:half])

    report = await worker_for(services.toolbox, tmp_path).run(session_id=ontime)
    video = next(r for r in report.results if r.item.tool == FILE_GET)
    assert video.status == "resumed"
    assert video.fetched_bytes == len(data) - half  # only the missing half crossed the wire
    assert ("submission_files", 206) in binary_requests(sandbox)
    assert ("submission_files", 200) not in binary_requests(sandbox)
    final = tmp_path / item.relative_path()
    assert final.read_bytes() == data and not part.exists()
    assert video.entry is not None and video.entry.sha256 == hashlib.sha256(data).hexdigest()
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert {e["sha256"] for e in manifest["files"] if e["kind"] == "video"} == {hashlib.sha256(data).hexdigest()}


async def test_skips_files_already_complete(services: Services, sandbox: Sandbox, tmp_path: Path) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    first = await worker_for(services.toolbox, tmp_path).run(session_id=ontime)
    before = binary_requests(sandbox)
    manifest_before = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]
    second = await worker_for(services.toolbox, tmp_path).run(session_id=ontime)
    assert [r.status for r in second.results] == ["skipped", "skipped"]
    assert binary_requests(sandbox) == before  # no byte was fetched again
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["files"] == manifest_before
    assert [r.entry.sha256 for r in first.results if r.entry] == [r.entry.sha256 for r in second.results if r.entry]


async def test_a_truncated_final_file_is_resumed_not_skipped(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    await worker_for(services.toolbox, tmp_path).run(session_id=ontime)
    item = await video_item(services, ontime)
    final = tmp_path / item.relative_path()
    data = final.read_bytes()
    final.write_bytes(data[:1000])
    report = await worker_for(services.toolbox, tmp_path).run(session_id=ontime)
    assert next(r for r in report.results if r.item.tool == FILE_GET).status == "resumed"
    assert final.read_bytes() == data


async def test_a_days_window_finds_its_media_and_missing_audio(
    services: Services, sandbox: Sandbox, tmp_path: Path, clock: FakeClock
) -> None:
    yesterday = clock.now().date() - timedelta(days=1)
    since = datetime.combine(yesterday, time(0), tzinfo=services.zone)
    report = await worker_for(services.toolbox, tmp_path).run(since=since, until=since + timedelta(days=1))
    done = {(r.item.session_id, r.item.kind) for r in report.results if r.status == "downloaded"}
    ids = demo(sandbox).sessions
    assert done == {(ids[k], kind) for k in ("ontime", "overrun") for kind in ("video", "audio")}
    missing = [r for r in report.results if r.status == "missing"]
    assert missing and all(r.item.kind == "audio" for r in missing)  # a remote 404: no recording
    assert not report.errors
    assert len(json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]) == 4


class _NoRangeTransport(SandboxTransport):
    """A server that ignores Range and always sends the whole file (200)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "range" in request.headers:
            del request.headers["range"]
        return await super().handle_async_request(request)


class _HalfThenDrop(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: len(self.data) // 2]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class _DropFirstBinaryTransport(SandboxTransport):
    """The first binary response is cut off halfway through its body."""

    dropped = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not self.dropped and "/proxy/submission_files/" in request.url.path:
            self.dropped = True
            data = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, stream=_HalfThenDrop(data))
        return response


async def toolbox_over(transport: httpx.AsyncBaseTransport, clock: FakeClock) -> Toolbox:
    return await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=transport,
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )


async def test_a_200_to_a_range_request_restarts_the_file(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> None:
    toolbox = await toolbox_over(_NoRangeTransport(sandbox), clock)
    try:
        ontime = demo(sandbox).sessions["ontime"]
        items = await worker_for(toolbox, None).find(session_id=ontime)
        item = next(i for i in items if i.tool == FILE_GET)
        data = remote_bytes(sandbox, item)
        part = tmp_path / item.relative_path()
        part = part.with_name(part.name + ".part")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"\x00" * 1000)  # whatever is there is overwritten, not appended to
        report = await worker_for(toolbox, tmp_path).run(session_id=ontime)
        video = next(r for r in report.results if r.item.tool == FILE_GET)
        assert video.status == "downloaded" and video.fetched_bytes == len(data)
        assert (tmp_path / item.relative_path()).read_bytes() == data
    finally:
        await toolbox.aclose()


async def test_a_connection_dropped_mid_file_is_retried_from_where_it_stopped(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    toolbox = await toolbox_over(_DropFirstBinaryTransport(sandbox), clock)
    try:
        ontime = demo(sandbox).sessions["ontime"]
        report = await worker_for(toolbox, tmp_path).run(session_id=ontime)
        video = next(r for r in report.results if r.item.tool == FILE_GET)
        data = remote_bytes(sandbox, video.item)
        assert video.status == "resumed" and not report.errors
        assert (tmp_path / video.item.relative_path()).read_bytes() == data
        files = [status for resource, status in binary_requests(sandbox) if resource == "submission_files"]
        assert files == [200, 206]
        assert clock.sleeps  # the shared retry policy waited (on the fake clock)
    finally:
        await toolbox.aclose()


async def test_listing_without_a_directory_reads_no_bytes(services: Services, sandbox: Sandbox, tmp_path: Path) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    report = await worker_for(services.toolbox, None).run(session_id=ontime)
    assert [r.status for r in report.results] == ["listed", "listed"]
    assert all(r.item.size and r.item.size > 100_000 for r in report.results)
    assert report.manifest_path is None


class FakeTranscriber:
    name = "fake"

    def __init__(self) -> None:
        self.seen: list[tuple[Path, str]] = []

    async def transcribe(self, path: Path, content_type: str) -> str:
        self.seen.append((path, content_type))
        return f"transcript of {path.stat().st_size} bytes"


async def test_transcribes_downloaded_audio_once(services: Services, sandbox: Sandbox, tmp_path: Path) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    transcriber = FakeTranscriber()
    worker = worker_for(services.toolbox, tmp_path, transcriber=transcriber)
    report = await worker.run(session_id=ontime)
    await worker.transcribe(report)
    assert len(transcriber.seen) == 1
    audio_path, content_type = transcriber.seen[0]
    assert audio_path.name == "audio.webm" and content_type == "audio/webm"
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]
    audio = next(e for e in manifest if e["kind"] == "audio")
    assert (tmp_path / audio["transcript_path"]).read_text().startswith("transcript of")
    again = worker_for(services.toolbox, tmp_path, transcriber=transcriber)
    await again.transcribe(await again.run(session_id=ontime))
    assert len(transcriber.seen) == 1  # already transcribed


async def test_openai_transcriber_sends_the_file_from_disk(tmp_path: Path) -> None:
    audio = tmp_path / "audio.webm"
    audio.write_bytes(b"\x1a\x45\xdf\xa3 fake audio")
    calls: list[dict[str, Any]] = []

    class Transcriptions:
        async def create(self, **kwargs: Any) -> Any:
            name, handle, content_type = kwargs["file"]
            calls.append({"model": kwargs["model"], "name": name, "bytes": handle.read(), "type": content_type})
            return type("Transcription", (), {"text": "hello doctor"})()

    client = type("Client", (), {"audio": type("Audio", (), {"transcriptions": Transcriptions()})()})()
    text = await OpenAITranscriber(client=client).transcribe(audio, "audio/webm")
    assert text == "hello doctor"
    assert calls == [{"model": "whisper-1", "name": "audio.webm", "bytes": audio.read_bytes(), "type": "audio/webm"}]


def offline_settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.sqlite"))  # type: ignore[call-arg]


async def test_transcribe_without_a_key_is_off_after_downloading(
    services: Services, sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    run = await run_recordings(
        offline_settings(tmp_path), services=services, session_id=ontime, download_dir=tmp_path / "rec", transcribe=True
    )
    assert run.report.transcription == "off"
    assert {r.status for r in run.report.results} == {"downloaded"}
    print_run(run, as_json=True)  # exit 0: no exception
    payload = json.loads(capsys.readouterr().out)
    assert payload["transcription"] == "off" and payload["totals"] == {"downloaded": 2}
    assert all(Path(f["path"]).is_file() for f in payload["files"])


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The CLI configures logging (root handler on CliRunner's stderr, library levels): put it all back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


def test_recordings_cli_on_the_embedded_sandbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keep_logging: None
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "TRUTO_API_KEY", "COVIU_SANDBOX_FAULTS", "COVIU_SANDBOX_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COVIU_AGENT_TIMEZONE", "UTC")
    result = CliRunner().invoke(app, ["recordings", "--download", "rec", "--transcribe", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["transcription"] == "off"
    assert payload["totals"]["downloaded"] == 4  # yesterday: two consults with a video and an audio each
    assert (tmp_path / "rec" / MANIFEST_NAME).is_file()
    assert "transcription is off" in result.stderr


def test_recordings_cli_rejects_contradictory_flags(keep_logging: None) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["recordings", "--date", "2026-11-24", "--session-id", "s"]).exit_code == 2
    assert runner.invoke(app, ["recordings", "--transcribe"]).exit_code == 2
    assert runner.invoke(app, ["recordings", "--date", "24/11/2026"]).exit_code == 2


def test_file_names_are_built_from_safe_ids_only() -> None:
    assert safe_name("0fba9203-eae3-4b71-bad3-6e42cb61e5df") == "0fba9203-eae3-4b71-bad3-6e42cb61e5df"
    for odd in ("../../etc/passwd", "Ava Jenkins", ".hidden", "a/b"):
        name = safe_name(odd)
        assert name.startswith("id-") and "/" not in name and "Jenkins" not in name
