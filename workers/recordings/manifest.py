"""`DIR/manifest.json`: the files the worker has completed, and the executor's locator that reads it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tools.catalog import ToolSpec
from tools.private_files import private_dir, write_private
from workers.recordings.media import AUDIO_GET, BINARY_TOOLS, Kind

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


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


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """The manifest's folder itself is locked while a manifest is read, merged and written (two workers on one
    folder): no lock file is left among the recordings."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # lets go of the lock


class Manifest:
    """`DIR/manifest.json`: every file the worker has completed, merged across runs, written atomically.

    `save` merges under a lock: it reads the file as it is now, lays this worker's own `put`s over it, and writes
    the whole, so two workers downloading into one folder (a cron and a person) each keep the other's files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / MANIFEST_NAME
        self.entries: dict[tuple[str, str, str], ManifestEntry] = {}
        self._mtime: float | None = None
        self._mine: dict[tuple[str, str, str], ManifestEntry] = {}  # put since the last save

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
        self._mine[entry.key] = entry

    def save(self, now: datetime) -> Path:
        private_dir(self.directory)
        with _locked(self.directory):
            self._mtime = None
            self.load()  # what the file holds now: another worker's files too
            self.entries.update(self._mine)
            files = sorted(
                self.entries.values(), key=lambda e: (e.session_id or "", e.submission_id, e.kind, e.file_id)
            )
            payload = {"updated_at": now.isoformat(), "files": [asdict(e) for e in files]}
            write_private(self.path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
            self._mtime = self.path.stat().st_mtime
        self._mine.clear()
        return self.path


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
