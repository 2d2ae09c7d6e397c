"""Downloads never follow a link and never stitch. A symlink at a recording's `.part` (or a folder that
leads outside) never makes the worker write outside the download folder; a resume sends If-Range with the ETag it
saw and checks the total and the server's digest, so a file changed upstream between an interrupted download and
its resume starts again from zero (in-process sandbox, fake clock, every profile)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from graphs.context import Services
from sandbox import Sandbox, SandboxTransport
from sandbox.coviu import media_etag
from tests.test_recordings import demo, remote_bytes, toolbox_over, video_item, worker_for
from tools.clock import FakeClock
from workers.recordings import FILE_GET, MediaItem


def media_of(sandbox: Sandbox, item: MediaItem):  # type: ignore[no-untyped-def]
    return sandbox.store.files[item.file_id]


async def test_a_symlink_at_the_part_path_never_overwrites_a_file_outside(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    item = await video_item(services, ontime)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    downloads = tmp_path / "downloads"
    part = downloads / item.relative_path()
    part = part.with_name(part.name + ".part")
    part.parent.mkdir(parents=True)
    part.symlink_to(outside)
    report = await worker_for(services.toolbox, downloads).run(session_id=ontime)
    assert outside.read_bytes() == b"precious"
    video = next(r for r in report.results if r.item.tool == FILE_GET)
    assert video.status == "downloaded" and not report.errors
    assert (downloads / item.relative_path()).read_bytes() == remote_bytes(sandbox, item)
    assert not part.exists() and not part.is_symlink()


async def test_a_symlinked_target_is_replaced_not_written_through(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    item = await video_item(services, ontime)
    outside = tmp_path / "outside.webm"
    outside.write_bytes(b"x" * 10)
    downloads = tmp_path / "downloads"
    target = downloads / item.relative_path()
    target.parent.mkdir(parents=True)
    target.symlink_to(outside)
    await worker_for(services.toolbox, downloads).run(session_id=ontime)
    assert outside.read_bytes() == b"x" * 10
    assert not target.is_symlink() and target.read_bytes() == remote_bytes(sandbox, item)


async def test_a_folder_leading_outside_the_download_folder_is_refused(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    item = await video_item(services, ontime)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    downloads = tmp_path / "downloads"
    session_folder = downloads / item.relative_path().parts[0]
    session_folder.parent.mkdir(parents=True)
    session_folder.symlink_to(elsewhere, target_is_directory=True)
    report = await worker_for(services.toolbox, downloads).run(session_id=ontime)
    assert not [p for p in elsewhere.rglob("*") if p.is_file()]  # nothing written outside
    assert report.errors and all("outside" in e for e in report.errors)


class ChangedMidway(SandboxTransport):
    """The first binary response is cut off halfway; before the retry, the file changes upstream (a re-encode:
    other bytes, the same size, a later update time). Records each binary request's headers."""

    def __init__(self, sandbox: Sandbox, file_id: str) -> None:
        super().__init__(sandbox)
        self.file_id = file_id
        self.dropped = False
        self.seen: list[dict[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if "/proxy/submission_files/" not in request.url.path:
            return response
        self.seen.append({k: request.headers[k] for k in ("range", "if-range") if k in request.headers})
        if self.dropped:
            return response
        self.dropped = True
        data = await response.aread()
        media = self.sandbox.store.files[self.file_id]
        media.seed += 1
        media.updated_at += timedelta(minutes=5)
        return httpx.Response(response.status_code, headers=response.headers, stream=_HalfThenDrop(data))


class _HalfThenDrop(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: len(self.data) // 2]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


async def test_a_file_changed_upstream_between_interruption_and_resume_starts_from_zero(
    services: Services, sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    ontime = demo(sandbox).sessions["ontime"]
    item = await video_item(services, ontime)
    old_etag = media_etag(media_of(sandbox, item))
    transport = ChangedMidway(sandbox, item.file_id)
    toolbox = await toolbox_over(transport, clock)
    try:
        report = await worker_for(toolbox, tmp_path).run(session_id=ontime)
    finally:
        await toolbox.aclose()
    video = next(r for r in report.results if r.item.tool == FILE_GET)
    new = remote_bytes(sandbox, item)
    assert (tmp_path / item.relative_path()).read_bytes() == new  # the new version whole, never half of each
    assert video.status == "downloaded" and not report.errors
    assert transport.seen[1]["if-range"] == old_etag and transport.seen[1]["range"].startswith("bytes=")
    assert not list(tmp_path.rglob("*.part*"))


async def test_a_part_left_by_an_older_version_without_validators_is_caught_by_the_digest(
    services: Services, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A `.part` with nothing recorded about its version (an older worker): resumed with Range, then the whole
    file's SHA-256 (the server's Repr-Digest) says it is not the file: fetched again from zero."""
    ontime = demo(sandbox).sessions["ontime"]
    item = await video_item(services, ontime)
    data = remote_bytes(sandbox, item)
    part = tmp_path / item.relative_path()
    part = part.with_name(part.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\x00" * (len(data) // 2))  # the start of some other version
    report = await worker_for(services.toolbox, tmp_path).run(session_id=ontime)
    video = next(r for r in report.results if r.item.tool == FILE_GET)
    assert (tmp_path / item.relative_path()).read_bytes() == data
    assert video.status == "downloaded" and not report.errors


@pytest.mark.profiles("default")
async def test_the_sandbox_honours_if_range(sandbox: Sandbox, services: Services) -> None:
    from sandbox.testing import sandbox_client

    ontime = demo(sandbox).sessions["ontime"]
    item = await video_item(services, ontime)
    media = media_of(sandbox, item)
    url = services.toolbox.client.proxy_path("submission_files", "get", item.file_id)
    async with sandbox_client(sandbox, token="sandbox") as client:
        params = {**item.arguments, "integrated_account_id": services.toolbox.client.integrated_account_id}
        params.pop("id", None)
        same = await client.get(url, params=params, headers={"Range": "bytes=10-", "If-Range": media_etag(media)})
        other = await client.get(url, params=params, headers={"Range": "bytes=10-", "If-Range": '"another"'})
    assert same.status_code == 206 and same.headers["etag"] == media_etag(media)
    assert other.status_code == 200 and len(other.content) == media.size
    assert same.headers["last-modified"] and same.headers["repr-digest"].startswith("sha-256=:")


class NoDigest(SandboxTransport):
    """A server like most real ones: ETag and Last-Modified, but no Repr-Digest or Digest on binary responses."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if "/proxy/submission_files/" not in request.url.path:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("repr-digest", "digest")}
        return httpx.Response(response.status_code, headers=headers, content=await response.aread())


@pytest.mark.parametrize("meta", ["missing", "corrupt", "symlink"])
async def test_a_part_whose_version_is_unknown_is_never_resumed_without_a_digest(
    sandbox: Sandbox, services: Services, clock: FakeClock, tmp_path: Path, meta: str
) -> None:
    """A `.part` whose `.part.meta` is missing, unreadable or a symlink holds the start of an unknown version: with no
    digest from the server to catch a stitch, it is never resumed blind (Range without If-Range); fetched from zero."""
    ontime = demo(sandbox).sessions["ontime"]
    item = await video_item(services, ontime)
    data = remote_bytes(sandbox, item)
    downloads = tmp_path / "downloads"
    part = downloads / item.relative_path()
    part = part.with_name(part.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\x00" * (len(data) // 2))  # the start of some other version
    sidecar = part.with_name(part.name + ".meta")
    if meta == "corrupt":
        sidecar.write_text("{not json")
    elif meta == "symlink":
        (tmp_path / "elsewhere.json").write_text('{"etag": "whatever"}')
        sidecar.symlink_to(tmp_path / "elsewhere.json")
    toolbox = await toolbox_over(NoDigest(sandbox), clock)
    try:
        report = await worker_for(toolbox, downloads).run(session_id=ontime)
    finally:
        await toolbox.aclose()
    video = next(r for r in report.results if r.item.tool == FILE_GET)
    assert (downloads / item.relative_path()).read_bytes() == data  # never half zeros, half the file
    assert video.status == "downloaded" and not report.errors


def test_two_workers_saving_into_one_folder_each_keep_the_others_files(tmp_path: Path) -> None:
    """A cron's worker and a person's `recordings --download` share a folder: each loaded the manifest, added its own
    files and wrote the whole, so the last save dropped the other's entries (the assistant then said a downloaded
    file was not there). `save` now merges what the file holds under a lock."""
    from datetime import UTC, datetime

    from workers.recordings.manifest import Manifest, ManifestEntry

    def entry(submission: str) -> ManifestEntry:
        return ManifestEntry("s1", submission, "a", "audio", "audio/webm", 3, "00", f"s1/{submission}/audio.webm")

    now = datetime(2026, 11, 25, tzinfo=UTC)
    cron, person = Manifest(tmp_path).load(), Manifest(tmp_path).load()
    cron.put(entry("sub-cron"))
    person.put(entry("sub-person"))
    cron.save(now)
    person.save(now)
    cron.put(entry("sub-cron-2"))
    cron.save(now)
    on_disk = Manifest(tmp_path).load()
    assert sorted(k[0] for k in on_disk.entries) == ["sub-cron", "sub-cron-2", "sub-person"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]  # the folder is the lock: no lock file
