"""What the recordings worker fetches: the Coviu tools that serve binaries, one media item, and its file name."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SUBMISSIONS_LIST = "list_all_coviu_submissions"
SUBMISSION_GET = "get_single_coviu_submission_by_id"
FILE_GET = "get_single_coviu_submission_file_by_id"
AUDIO_GET = "get_single_coviu_audio_recording_by_id"
BINARY_TOOLS = (FILE_GET, AUDIO_GET)
DEFAULT_DOWNLOAD_DIR = Path("recordings")

Kind = Literal["video", "audio", "file"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_EXTENSIONS = {
    "video/webm": "webm",
    "audio/webm": "webm",
    "video/mp4": "mp4",
    "audio/mp4": "m4a",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
}


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
