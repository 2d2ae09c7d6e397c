"""The recordings worker: find submissions with media, stream each file to disk, resume, manifest, transcribe.

Bytes go from Truto's proxy straight to `<path>.part` in chunks: never whole in memory, never to a model.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from tools.catalog import ToolSpec
from tools.errors import CoviuAgentError, TransportError, TrutoError
from tools.private_files import NOFOLLOW, owner_only_opener, private_dir, write_private
from tools.retry import call_with_retries
from tools.toolbox import Toolbox

log = logging.getLogger(__name__)

SUBMISSIONS_LIST = "list_all_coviu_submissions"
SUBMISSION_GET = "get_single_coviu_submission_by_id"
FILE_GET = "get_single_coviu_submission_file_by_id"
AUDIO_GET = "get_single_coviu_audio_recording_by_id"
BINARY_TOOLS = (FILE_GET, AUDIO_GET)
MANIFEST_NAME = "manifest.json"
# A download that brings fewer than this many bytes in any window of this many seconds has stalled: a server dripping
# a byte at a time (each byte resets the read timeout) cannot hold the worker for the length of a recording.
STALL_WINDOW_SECONDS = 60.0
STALL_MIN_BYTES = 64 * 1024
PAGE_SIZE = 200
DEFAULT_DOWNLOAD_DIR = Path("recordings")
# A body with no announced size (no Content-Length, no size in the metadata) stops at this many bytes.
MAX_UNANNOUNCED_BYTES = 16 * 1024**3
# Free space a download must leave on the target disk.
FREE_SPACE_RESERVE = 256 * 1024**2

Kind = Literal["video", "audio", "file"]
Status = Literal["downloaded", "resumed", "skipped", "missing", "listed", "failed"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
_EXTENSIONS = {
    "video/webm": "webm",
    "audio/webm": "webm",
    "video/mp4": "mp4",
    "audio/mp4": "m4a",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
}


class DownloadError(CoviuAgentError):
    """A file could not be fetched intact (size mismatch, an unexpected range)."""


class ChangedUpstream(DownloadError):
    """The remote file is not the one a `.part` holds the start of: its bytes are never stitched to the new ones."""


_REPR_DIGEST = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]+):", re.IGNORECASE)
_LEGACY_DIGEST = re.compile(r"(?:^|,)\s*sha-256\s*=\s*([A-Za-z0-9+/=]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Validators:
    """What the server said identifies the file a `.part` holds the start of (kept beside it in `.part.meta`):
    its ETag, Last-Modified, total length, and the whole file's SHA-256 where the server gives one (RFC 9530
    `Repr-Digest`, or the older `Digest`). A resume sends `If-Range` with them; a change starts again from zero."""

    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str], total: int | None) -> Validators:
        return cls(
            etag=headers.get("etag") or None,
            last_modified=headers.get("last-modified") or None,
            total=total,
            sha256=_digest_hex(headers.get("repr-digest"), _REPR_DIGEST)
            or _digest_hex(headers.get("digest"), _LEGACY_DIGEST),
        )

    def if_range(self) -> str | None:
        """A strong ETag, else Last-Modified (a weak ETag may not be used in If-Range: RFC 9110 13.1.5)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def differs(self, other: Validators) -> bool:
        """Some fact both know is not the same: another version of the file."""
        pairs = zip(asdict(self).values(), asdict(other).values(), strict=True)
        return any(a is not None and b is not None and a != b for a, b in pairs)

    def merged(self, newer: Validators) -> Validators:
        return Validators(**{k: v if v is not None else asdict(self)[k] for k, v in asdict(newer).items()})

    @classmethod
    def load(cls, path: Path) -> Validators | None:
        try:
            with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW), "r", encoding="utf-8") as handle:
                raw = json.load(handle)
            return cls(**{k: raw.get(k) for k in cls.__dataclass_fields__}) if isinstance(raw, dict) else None
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self)))


def _digest_hex(header: str | None, pattern: re.Pattern[str]) -> str | None:
    match = pattern.search(header or "")
    if match is None:
        return None
    try:
        return base64.b64decode(match.group(1), validate=True).hex()
    except ValueError:
        return None


def safe_name(identifier: str) -> str:
    """A file-system-safe name built from an id only (never a patient's name); odd ids are hashed."""
    if _SAFE_ID.match(identifier):
        return identifier
    return "id-" + hashlib.sha256(identifier.encode()).hexdigest()[:24]


def extension(content_type: str | None, kind: Kind) -> str:
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in _EXTENSIONS:
        return _EXTENSIONS[base]
    return "webm" if kind in ("video", "audio") else "bin"


def kind_of(content_type: str | None) -> Kind:
    base = (content_type or "").lower()
    if base.startswith("video/"):
        return "video"
    if base.startswith("audio/"):
        return "audio"
    return "file"


# Every file the worker opens is opened without following a symlink (NOFOLLOW: a link planted at a `.part`, a target
# or the manifest is never written through; tools/private_files.py writes by rename, which replaces a link).


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW), "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class MediaItem:
    """One binary to fetch: which submission and file, through which tool, and what we expect."""

    session_id: str | None
    submission_id: str
    file_id: str
    kind: Kind
    tool: str
    arguments: dict[str, Any]
    content_type: str | None = None
    size: int | None = None

    def relative_path(self) -> Path:
        folder = Path(safe_name(self.session_id or "no-session")) / safe_name(self.submission_id)
        name = "audio" if self.tool == AUDIO_GET else safe_name(self.file_id)
        return folder / f"{name}.{extension(self.content_type, self.kind)}"


@dataclass
class ManifestEntry:
    """One downloaded file as `manifest.json` lists it (`path` is relative to the manifest's directory)."""

    session_id: str | None
    submission_id: str
    file_id: str
    kind: Kind
    content_type: str | None
    size: int
    sha256: str
    path: str
    transcript_path: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.submission_id, self.kind, self.file_id)


class Manifest:
    """`DIR/manifest.json`: every file the worker has completed, merged across runs, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / MANIFEST_NAME
        self.entries: dict[tuple[str, str, str], ManifestEntry] = {}
        self._mtime: float | None = None

    def load(self) -> Manifest:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self.entries, self._mtime = {}, None
            return self
        if stat.st_mtime == self._mtime:
            return self
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring an unreadable manifest %s: %s", self.path, exc)
            payload = {}
        entries: dict[tuple[str, str, str], ManifestEntry] = {}
        for raw in payload.get("files", []) if isinstance(payload, Mapping) else []:
            try:
                entry = ManifestEntry(**{k: raw.get(k) for k in ManifestEntry.__dataclass_fields__})
            except TypeError:
                continue
            if entry.submission_id and entry.file_id and entry.path:
                entries[entry.key] = entry
        self.entries, self._mtime = entries, stat.st_mtime
        return self

    def find(self, submission_id: str, kind: Kind, file_id: str) -> ManifestEntry | None:
        return self.entries.get((submission_id, kind, file_id))

    def put(self, entry: ManifestEntry) -> None:
        self.entries[entry.key] = entry

    def save(self, now: datetime) -> Path:
        private_dir(self.directory)
        files = sorted(self.entries.values(), key=lambda e: (e.session_id or "", e.submission_id, e.kind, e.file_id))
        payload = {"updated_at": now.isoformat(), "files": [asdict(e) for e in files]}
        write_private(self.path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        self._mtime = self.path.stat().st_mtime
        return self.path


def remove_empty(directories: list[Path]) -> None:
    """Remove these directories (deepest first) while they are empty: no empty folder for a missing recording."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:  # not empty (another file of the submission), or already gone
            return


class DownloadIndex:
    """The executor's binary locator: a downloaded file's local path, or how the worker will fetch it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = Manifest(directory)

    def __call__(self, spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
        record_id = str(arguments.get("id") or "")
        entry: ManifestEntry | None = None
        if record_id and spec.name in BINARY_TOOLS:
            self.manifest.load()
            if spec.name == AUDIO_GET:
                entry = self.manifest.find(record_id, "audio", record_id)
            else:
                submission = str(arguments.get("submission_id") or "")
                entry = self.manifest.find(submission, "video", record_id) or self.manifest.find(
                    submission, "file", record_id
                )
        if entry is not None:
            local = self.directory / entry.path
            if local.is_file() and local.stat().st_size == entry.size:
                found: dict[str, Any] = {
                    "downloaded": True,
                    "local_path": str(local.resolve()),
                    "sha256": entry.sha256,
                    "note": "Binary media is not shown to the model; it is already downloaded at local_path.",
                }
                if entry.transcript_path:
                    found["transcript_path"] = str((self.directory / entry.transcript_path).resolve())
                return found
        return {
            "downloaded": False,
            "fetch_with": (
                f"coviu-agent recordings --session-id <the submission's session_id> --download {self.directory}"
            ),
        }


class Transcriber(Protocol):
    """A speech-to-text backend for downloaded audio."""

    name: str

    async def transcribe(self, path: Path, content_type: str) -> str:
        """The transcript of the audio file at `path` (read from disk)."""
        ...


class OpenAITranscriber:
    """OpenAI's transcription API through the `openai` package (model whisper-1 by default)."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str = "whisper-1",
        client: Any = None,
    ) -> None:
        if client is None:
            from openai import AsyncOpenAI

            client = AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=4, timeout=600.0)
        self.client = client
        self.model = model

    async def transcribe(self, path: Path, content_type: str) -> str:
        with path.open("rb") as handle:
            result = await self.client.audio.transcriptions.create(
                model=self.model, file=(path.name, handle, content_type or "audio/webm")
            )
        return str(getattr(result, "text", result))


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
                await self._read(f"downloading {relative}", lambda: self._fetch(item, part, expected, state))
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

    async def _fetch(self, item: MediaItem, part: Path, expected: int | None, state: dict[str, Any]) -> None:
        """One attempt: GET (with `Range: bytes=<size>-` and `If-Range` when a `.part` exists), appending chunks to
        `.part`. A `.part` of another version of the file (the server's validators, total or digest differ) is
        dropped and the file fetched from zero in the same attempt: never stitched."""
        try:
            await self._fetch_once(item, part, expected, state)
        except ChangedUpstream as exc:
            log.info("%s: %s; downloading it from zero", part.name, exc)
            part.unlink(missing_ok=True)
            part.with_name(part.name + ".meta").unlink(missing_ok=True)
            state.clear()
            await self._fetch_once(item, part, expected, state)

    async def _fetch_once(self, item: MediaItem, part: Path, expected: int | None, state: dict[str, Any]) -> None:
        spec = self.toolbox.executor.validate(item.tool, item.arguments)
        record_id, query, _ = spec.split(item.arguments)
        meta = part.with_name(part.name + ".meta")
        offset = part.stat().st_size if part.is_file() and not part.is_symlink() else 0
        if expected is not None and offset > expected:
            part.unlink()
            offset = 0
        seen = Validators.load(meta) if offset else None
        headers = {"Accept": "*/*"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if seen is not None and seen.if_range():
                headers["If-Range"] = str(seen.if_range())  # the Range holds only for the version we started
        client = self.toolbox.client
        path = client.proxy_path(spec.resource, spec.method, record_id)
        try:
            async with client.stream_proxy(
                spec.resource, spec.method, record_id=record_id, query=query, headers=headers
            ) as response:
                state["content_type"] = response.headers.get("content-type", "").split(";")[0].strip() or None
                mode = "wb"
                if offset and response.status_code == 206:
                    start, total = _content_range(response.headers.get("content-range"))
                    if start != offset:
                        raise DownloadError(f"asked for bytes from {offset}, the server sent from {start}")
                    now = Validators.of(response.headers, total)
                    if seen is not None and seen.differs(now):
                        raise ChangedUpstream("the remote file changed since the partial download")
                    if seen is None and now.sha256 is None:
                        # no `.part.meta` (missing or unreadable): nothing says which version the `.part` holds,
                        # and no digest will catch a stitch
                        raise ChangedUpstream("nothing records which version the partial download holds")
                    if expected is not None and total is not None and total != expected:
                        raise ChangedUpstream(f"the remote file is {total} bytes, not the {expected} expected")
                    mode = "ab"
                    state["resumed"] = True
                    state["total"] = total
                    now = seen.merged(now) if seen is not None else now
                else:
                    if offset:
                        log.info(
                            "the server ignored Range or If-Range (status %d); downloading from the start",
                            response.status_code,
                        )
                    length = response.headers.get("content-length")
                    state["total"] = int(length) if length and length.isdigit() else None
                    state["resumed"] = False
                    now = Validators.of(response.headers, state["total"])
                state["sha256"] = now.sha256
                now.save(meta)  # before the first byte: an interrupted download knows which version it holds
                bound = ByteBound.for_response(response, offset, expected, state, part, self.max_unannounced_bytes)
                floor = ThroughputFloor(self.toolbox.clock.monotonic, path, self.stall_seconds)
                try:
                    handle = open(part, mode, opener=owner_only_opener)  # noqa: SIM115 (closed below)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise DownloadError(f"{part.name} is a symlink: downloads never follow one") from None
                    raise
                with handle:
                    # Each piece as it arrives (no chunk size: httpx would buffer pieces into chunks of that size,
                    # and the floor would only see a drip once a whole chunk had come, however long that took).
                    async for chunk in response.aiter_bytes():
                        bound.take(len(chunk))  # stops as soon as the bytes exceed the announced size
                        floor.take(len(chunk))  # stops a download that has stalled (kept as .part: resumed later)
                        handle.write(chunk)
                        state["fetched"] = int(state.get("fetched", 0)) + len(chunk)
        except httpx.TransportError as exc:  # mid-body: the client maps errors only until the headers arrive
            raise TransportError(
                "connection dropped", f"{type(exc).__name__} while streaming", method="GET", path=path
            ) from exc
        except TrutoError as exc:
            if exc.status_code != 416 or not offset:
                raise
            total = _unsatisfied_total(exc.headers.get("content-range"))
            if total is not None and total == offset:
                state.update({"total": total, "already_complete": True, "resumed": False})
                state["sha256"] = seen.sha256 if seen is not None else None
                return
            part.unlink(missing_ok=True)  # the partial file does not match the remote one: start over
            meta.unlink(missing_ok=True)
            raise DownloadError(
                f"range from {offset} not satisfiable (remote size {total}); restarting next run"
            ) from exc

    # --- transcription --------------------------------------------------------------------------

    async def transcribe(self, report: RecordingsReport) -> None:
        """Transcribe each downloaded audio file once (`<audio>.txt` next to it), recorded in the manifest."""
        if self.transcriber is None or self.download_dir is None or self.manifest is None:
            return
        for result in report.results:
            entry = result.entry
            if entry is None or entry.kind != "audio":
                continue
            audio = self.download_dir / entry.path
            transcript = audio.with_suffix(".txt")
            if entry.transcript_path and transcript.is_file() and transcript.stat().st_size > 0:
                continue
            try:
                text = await self.transcriber.transcribe(audio, entry.content_type or "audio/webm")
            except Exception as exc:  # the backend's own errors (network, quota) must not lose the downloads
                message = f"transcribing {entry.path}: {type(exc).__name__}: {exc}"
                log.error("%s", message)
                report.errors.append(message)
                continue
            write_private(transcript, text)
            entry.transcript_path = transcript.relative_to(self.download_dir).as_posix()
            self.manifest.put(entry)
            self.on_event(f"transcribed {entry.path} ({self.transcriber.name})")
        report.manifest_path = self.manifest.save(self.toolbox.clock.now())


def _no_recording(error: TrutoError) -> bool:
    """A remote 404 on the audio endpoint means the submission has no recording."""
    return error.status_code == 404 and error.truto_is_remote_error


def _content_range(header: str | None) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.match(header or "")
    if match is None:
        raise DownloadError(f"a 206 without a usable Content-Range ({header!r})")
    total = match.group(3)
    return int(match.group(1)), (int(total) if total != "*" else None)


def _unsatisfied_total(header: str | None) -> int | None:
    match = _UNSATISFIED_RANGE.match(header or "")
    return int(match.group(1)) if match else None


class DownloadTooLargeError(DownloadError):
    """The server sent more bytes than it (or the metadata) announced: stopped, the partial file removed."""


def ensure_free_space(directory: Path, needed: int | None, what: str) -> None:
    """Refuse (before any byte is written) a download that would not fit on the target disk."""
    if needed is None or needed <= 0:
        return
    free = shutil.disk_usage(directory).free
    if needed + FREE_SPACE_RESERVE > free:
        raise DownloadError(
            f"{what}: needs {needed} bytes but the disk holding {directory} has {free} free "
            f"(keeping {FREE_SPACE_RESERVE} spare); not downloaded"
        )


class ThroughputFloor:
    """Ends a download that brings fewer than `STALL_MIN_BYTES` in a window of `window` seconds (default
    `STALL_WINDOW_SECONDS`; `COVIU_AGENT_DOWNLOAD_STALL_SECONDS`). Transient: the `.part` is kept and the retry
    resumes it with `Range`."""

    def __init__(self, monotonic: Callable[[], float], path: str, window: float = STALL_WINDOW_SECONDS) -> None:
        self.monotonic = monotonic
        self.path = path
        self.window = window
        self.window_start = monotonic()
        self.window_bytes = 0

    def take(self, count: int) -> None:
        self.window_bytes += count
        now = self.monotonic()
        if now - self.window_start < self.window:
            return
        if self.window_bytes < STALL_MIN_BYTES:
            raise TransportError(
                "stalled",
                f"{self.window_bytes} bytes in {now - self.window_start:.0f} s (the floor is {STALL_MIN_BYTES} bytes "
                f"per {self.window:g} s; COVIU_AGENT_DOWNLOAD_STALL_SECONDS)",
                method="GET",
                path=self.path,
            )
        self.window_start, self.window_bytes = now, 0


@dataclass
class ByteBound:
    """How many bytes one response may write: the smallest announced size, or a cap when none is announced."""

    limit: int
    announced: bool
    what: str
    taken: int = 0

    @classmethod
    def for_response(
        cls,
        response: httpx.Response,
        offset: int,
        expected: int | None,
        state: Mapping[str, Any],
        part: Path,
        unannounced_cap: int,
    ) -> ByteBound:
        base = offset if state.get("resumed") else 0
        announced: list[int] = []
        length = response.headers.get("content-length", "")
        if length.isdigit():
            announced.append(int(length))
        if isinstance(state.get("total"), int):
            announced.append(int(state["total"]) - base)
        if expected is not None:
            announced.append(expected - base)
        if announced:
            limit = max(0, min(announced))
            ensure_free_space(part.parent, limit, part.name)
            return cls(limit, True, part.name)
        free = shutil.disk_usage(part.parent).free - FREE_SPACE_RESERVE
        return cls(max(0, min(unannounced_cap, free)), False, part.name)

    def take(self, count: int) -> None:
        self.taken += count
        if self.taken > self.limit:
            said = "announced" if self.announced else "allowed for a body of unannounced size (or free on disk)"
            raise DownloadTooLargeError(
                f"{self.what}: the server sent more than the {self.limit} bytes {said}; stopped, and the partial "
                "file was removed as corrupt"
            )
