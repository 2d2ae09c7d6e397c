"""The recordings worker: find a collection's submissions with media, then list, download or transcribe them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from tools.errors import CoviuAgentError, TrutoError
from tools.private_files import private_dir
from tools.retry import call_with_retries
from tools.toolbox import Toolbox
from workers.recordings.manifest import Manifest, ManifestEntry
from workers.recordings.media import AUDIO_GET, FILE_GET, SUBMISSION_GET, SUBMISSIONS_LIST, MediaItem, kind_of
from workers.recordings.stream import (
    MAX_UNANNOUNCED_BYTES,
    STALL_WINDOW_SECONDS,
    DownloadError,
    DownloadTooLargeError,
    ensure_free_space,
    fetch,
    sha256_of,
)
from workers.recordings.transcription import Transcriber, transcribe_downloads

log = logging.getLogger(__name__)

PAGE_SIZE = 200

Status = Literal["downloaded", "resumed", "skipped", "missing", "listed", "failed"]


@dataclass
class FileResult:
    """What happened to one media item."""

    item: MediaItem
    status: Status
    entry: ManifestEntry | None = None
    fetched_bytes: int = 0
    error: str | None = None

    def as_dict(self, directory: Path | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "session_id": self.item.session_id,
            "submission_id": self.item.submission_id,
            "file_id": self.item.file_id,
            "kind": self.item.kind,
            "status": self.status,
        }
        if self.entry is not None:
            out.update(asdict(self.entry))
            if directory is not None:
                out["path"] = str(directory / self.entry.path)
                if self.entry.transcript_path:
                    out["transcript_path"] = str(directory / self.entry.transcript_path)
        else:
            out.update({"content_type": self.item.content_type, "size": self.item.size})
        if self.fetched_bytes:
            out["fetched_bytes"] = self.fetched_bytes
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class RecordingsReport:
    """The worker's outcome: one result per media item, the manifest, transcription status, errors."""

    results: list[FileResult] = field(default_factory=list)
    manifest_path: Path | None = None
    transcription: Literal["on", "off", "not requested"] = "not requested"
    errors: list[str] = field(default_factory=list)


class RecordingsWorker:
    """Finds a collection's recordings and streams them to `download_dir` (reads retried per the shared policy)."""

    def __init__(
        self,
        toolbox: Toolbox,
        *,
        team_id: str,
        collection_id: str,
        download_dir: Path | None = None,
        transcriber: Transcriber | None = None,
        on_event: Callable[[str], None] | None = None,
        max_unannounced_bytes: int = MAX_UNANNOUNCED_BYTES,
        stall_seconds: float = STALL_WINDOW_SECONDS,
    ) -> None:
        self.max_unannounced_bytes = max_unannounced_bytes
        self.stall_seconds = stall_seconds
        self.toolbox = toolbox
        self.team_id = team_id
        self.collection_id = collection_id
        self.download_dir = download_dir
        self.transcriber = transcriber
        self.on_event = on_event or (lambda message: log.info("%s", message))
        self.manifest = Manifest(download_dir) if download_dir is not None else None

    # --- reads ----------------------------------------------------------------------------------

    async def _read(self, what: str, fn: Callable[[], Any]) -> Any:
        return await call_with_retries(
            what,
            fn,
            clock=self.toolbox.clock,
            governor=self.toolbox.governor,
            budget=self.toolbox.budget,
            policy=self.toolbox.retry_policy,
            on_wait=lambda delay, exc: log.info("%s: waiting %.1fs (%s)", what, delay, exc),
        )

    @property
    def _scope(self) -> dict[str, Any]:
        return {"team_id": self.team_id, "collection_id": self.collection_id}

    async def submissions(
        self, *, since: datetime | None = None, until: datetime | None = None, session_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Submissions created in [since, until), or those naming `session_id` (the list has no such filter)."""
        executor = self.toolbox.executor
        arguments: dict[str, Any] = dict(self._scope)
        if session_id is None:
            if since is not None:
                arguments["from"] = since.isoformat()
            if until is not None:
                arguments["until"] = until.isoformat()
        items = await self._read(
            "listing submissions", lambda: executor.all_items(SUBMISSIONS_LIST, arguments, limit=PAGE_SIZE)
        )
        found = [s for s in items if isinstance(s, Mapping)]
        if session_id is not None:
            found = [s for s in found if s.get("session_id") == session_id]
        return [dict(s) for s in found]

    async def _submission(self, submission_id: str) -> Any:
        arguments = {"id": submission_id, **self._scope}
        return await self._read(
            f"reading submission {submission_id}", lambda: self.toolbox.executor.run(SUBMISSION_GET, arguments)
        )

    async def find(
        self, *, since: datetime | None = None, until: datetime | None = None, session_id: str | None = None
    ) -> list[MediaItem]:
        """Every submission file, and each submission's audio recording (a 404 later means none)."""
        media: list[MediaItem] = []
        for submission in await self.submissions(since=since, until=until, session_id=session_id):
            submission_id = str(submission.get("item_submission_id") or submission.get("id") or "")
            if not submission_id:
                continue
            owner = submission.get("session_id")
            full = await self._submission(submission_id)
            files = full.get("files") if isinstance(full, Mapping) else None
            for file in files or []:
                if not isinstance(file, Mapping) or not file.get("id"):
                    continue
                metadata = file.get("metadata") if isinstance(file.get("metadata"), Mapping) else {}
                content_type = (metadata or {}).get("content_type")
                size = file.get("size")
                media.append(
                    MediaItem(
                        session_id=str(owner) if owner else None,
                        submission_id=submission_id,
                        file_id=str(file["id"]),
                        kind=kind_of(content_type),
                        tool=FILE_GET,
                        arguments={"id": str(file["id"]), "submission_id": submission_id, **self._scope},
                        content_type=str(content_type) if content_type else None,
                        size=int(size) if isinstance(size, int) and size >= 0 else None,
                    )
                )
            media.append(
                MediaItem(
                    session_id=str(owner) if owner else None,
                    submission_id=submission_id,
                    file_id=submission_id,
                    kind="audio",
                    tool=AUDIO_GET,
                    arguments={"id": submission_id, **self._scope},
                    content_type="audio/webm",
                )
            )
        return media

    async def probe(self, item: MediaItem) -> FileResult:
        """Listing mode: the binary guard's metadata (headers only, the body is never read)."""
        try:
            meta = await self._read(
                f"probing {item.tool} {item.file_id}", lambda: self.toolbox.executor.run(item.tool, item.arguments)
            )
        except TrutoError as exc:
            if item.tool == AUDIO_GET and _no_recording(exc):
                return FileResult(item, "missing")
            raise
        size = meta.get("size_bytes") if isinstance(meta, Mapping) else None
        content_type = meta.get("content_type") if isinstance(meta, Mapping) else None
        listed = replace(
            item,
            size=size if isinstance(size, int) else item.size,
            content_type=str(content_type) if content_type else item.content_type,
        )
        return FileResult(listed, "listed")

    # --- downloads ------------------------------------------------------------------------------

    async def run(
        self, *, since: datetime | None = None, until: datetime | None = None, session_id: str | None = None
    ) -> RecordingsReport:
        """Find, then download (or only list, without a download directory); write the manifest."""
        report = RecordingsReport()
        items = await self.find(since=since, until=until, session_id=session_id)
        self.on_event(f"{len(items)} media items to check")
        if self.download_dir is None or self.manifest is None:
            for item in items:
                report.results.append(await self.probe(item))
            return report
        private_dir(self.download_dir)
        self.manifest.load()
        for item in items:
            try:
                result = await self.download(item)
            except (CoviuAgentError, OSError) as exc:
                message = f"{item.kind} {item.file_id} of submission {item.submission_id}: {exc}"
                log.error("download failed: %s", message)
                report.errors.append(message)
                result = FileResult(item, "failed", error=str(exc))
            report.results.append(result)
            if result.entry is not None:
                self.manifest.put(result.entry)
                self.manifest.save(self.toolbox.clock.now())
        report.manifest_path = self.manifest.save(self.toolbox.clock.now())
        return report

    async def download(self, item: MediaItem) -> FileResult:
        """Stream one item to disk: skip it when complete, resume a `.part` with Range (and If-Range), retry
        transient errors. Nothing is written through a symlink or outside the download folder; a resumed file
        whose digest does not match the server's is fetched again from zero."""
        assert self.download_dir is not None and self.manifest is not None
        relative = item.relative_path()
        target = self.download_dir / relative
        created = private_dir(target.parent)
        if not target.parent.resolve().is_relative_to(self.download_dir.resolve()):
            raise DownloadError(f"{relative}: its folder leads outside {self.download_dir} (a symlink?); not written")
        part = target.with_name(target.name + ".part")
        meta = part.with_name(part.name + ".meta")
        for path in (target, part, meta):
            if path.is_symlink():  # never ours: removed (the link, not what it points at), never followed
                log.warning("removing a symlink at %s in the download folder; downloads never follow one", path.name)
                path.unlink()
        known = self.manifest.find(item.submission_id, item.kind, item.file_id)
        expected = (
            item.size
            if item.size is not None
            else (known.size if known and known.path == relative.as_posix() else None)
        )
        if target.is_file():
            size = target.stat().st_size
            if expected is not None and size == expected:
                digest = known.sha256 if known and known.size == size else await asyncio.to_thread(sha256_of, target)
                self.on_event(f"skip {relative} (complete, {size} bytes)")
                return FileResult(item, "skipped", self._entry(item, relative, size, digest, known))
            # Incomplete or unverifiable: resume it as a partial download (a longer file starts over).
            if expected is not None and size > expected:
                target.unlink()
            else:
                os.replace(target, part)
        resumed_from = part.stat().st_size if part.is_file() else 0
        ensure_free_space(part.parent, None if expected is None else expected - resumed_from, str(relative))
        state: dict[str, Any] = {}
        for _ in range(2):  # a resumed file whose digest is not the server's: once more, from zero
            state.clear()
            try:
                await self._read(
                    f"downloading {relative}",
                    lambda: fetch(
                        self.toolbox,
                        item,
                        part,
                        expected,
                        state,
                        max_unannounced_bytes=self.max_unannounced_bytes,
                        stall_seconds=self.stall_seconds,
                    ),
                )
            except DownloadTooLargeError:
                part.unlink(missing_ok=True)  # more bytes than announced: corrupt, never kept or resumed
                meta.unlink(missing_ok=True)
                raise
            except TrutoError as exc:
                if item.tool == AUDIO_GET and _no_recording(exc):
                    part.unlink(missing_ok=True)
                    meta.unlink(missing_ok=True)
                    remove_empty(created)
                    self.on_event(f"no audio recording for submission {item.submission_id}")
                    return FileResult(item, "missing")
                raise
            size = part.stat().st_size
            total = state.get("total")
            if (total is not None and size != total) or (expected is not None and size != expected):
                raise DownloadError(
                    f"{relative}: got {size} bytes, expected {total if total is not None else expected}"
                )
            digest = await asyncio.to_thread(sha256_of, part)
            wanted = state.get("sha256")
            if wanted is None or digest == wanted:
                break
            part.unlink()
            meta.unlink(missing_ok=True)
            if not state.get("resumed"):
                raise DownloadError(f"{relative}: its SHA-256 is not the one the server gave; removed")
            log.info("%s: the resumed file's SHA-256 is not the server's; downloading it again from zero", relative)
        else:
            raise DownloadError(f"{relative}: its SHA-256 is not the one the server gave; removed")
        os.replace(part, target)
        meta.unlink(missing_ok=True)
        content_type = state.get("content_type") or item.content_type
        status: Status = "resumed" if state.get("resumed") else "downloaded"
        if state.get("already_complete"):
            status = "skipped"
        self.on_event(
            f"{status} {relative} ({size} bytes{f', from byte {resumed_from}' if status == 'resumed' else ''})"
        )
        entry = self._entry(replace(item, content_type=content_type), relative, size, digest, known)
        return FileResult(item, status, entry, fetched_bytes=int(state.get("fetched", 0)))

    def _entry(
        self, item: MediaItem, relative: Path, size: int, digest: str, known: ManifestEntry | None
    ) -> ManifestEntry:
        transcript = known.transcript_path if known is not None and known.sha256 == digest else None
        return ManifestEntry(
            session_id=item.session_id,
            submission_id=item.submission_id,
            file_id=item.file_id,
            kind=item.kind,
            content_type=item.content_type or (known.content_type if known else None),
            size=size,
            sha256=digest,
            path=relative.as_posix(),
            transcript_path=transcript,
        )

    # --- transcription --------------------------------------------------------------------------

    async def transcribe(self, report: RecordingsReport) -> None:
        """Transcribe each downloaded audio file once (`<audio>.txt` next to it), recorded in the manifest."""
        if self.transcriber is None or self.download_dir is None or self.manifest is None:
            return
        entries = [result.entry for result in report.results]
        report.errors += await transcribe_downloads(
            entries, self.transcriber, self.download_dir, self.manifest, self.on_event
        )
        report.manifest_path = self.manifest.save(self.toolbox.clock.now())


def _no_recording(error: TrutoError) -> bool:
    """A remote 404 on the audio endpoint means the submission has no recording."""
    return error.status_code == 404 and error.truto_is_remote_error


def remove_empty(directories: list[Path]) -> None:
    """Remove these directories (deepest first) while they are empty: no empty folder for a missing recording."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:  # not empty (another file of the submission), or already gone
            return
