"""The recordings worker: find submissions with media, stream each file to disk, resume, manifest, transcribe.

Bytes go from Truto's proxy straight to `<path>.part` in chunks: never whole in memory, never to a model. One module
per concern: `media` (what is fetched and its file name), `stream` (one file to disk: resume, bounds, integrity),
`manifest` (the completed files, and the executor's locator), `transcription` (audio to text), and `worker` (finding
the submissions and running the rest).
"""

from workers.recordings.manifest import MANIFEST_NAME, DownloadIndex, Manifest, ManifestEntry
from workers.recordings.media import (
    AUDIO_GET,
    BINARY_TOOLS,
    DEFAULT_DOWNLOAD_DIR,
    FILE_GET,
    SUBMISSION_GET,
    SUBMISSIONS_LIST,
    Kind,
    MediaItem,
    extension,
    kind_of,
    safe_name,
)
from workers.recordings.stream import (
    FREE_SPACE_RESERVE,
    MAX_UNANNOUNCED_BYTES,
    STALL_MIN_BYTES,
    STALL_WINDOW_SECONDS,
    ByteBound,
    ChangedUpstream,
    DownloadError,
    DownloadTooLargeError,
    ThroughputFloor,
    Validators,
    ensure_free_space,
    sha256_of,
)
from workers.recordings.transcription import OpenAITranscriber, Transcriber, transcribe_downloads
from workers.recordings.worker import PAGE_SIZE, FileResult, RecordingsReport, RecordingsWorker, Status

__all__ = [
    "AUDIO_GET",
    "BINARY_TOOLS",
    "DEFAULT_DOWNLOAD_DIR",
    "FILE_GET",
    "FREE_SPACE_RESERVE",
    "MANIFEST_NAME",
    "MAX_UNANNOUNCED_BYTES",
    "PAGE_SIZE",
    "STALL_MIN_BYTES",
    "STALL_WINDOW_SECONDS",
    "SUBMISSIONS_LIST",
    "SUBMISSION_GET",
    "ByteBound",
    "ChangedUpstream",
    "DownloadError",
    "DownloadIndex",
    "DownloadTooLargeError",
    "FileResult",
    "Kind",
    "Manifest",
    "ManifestEntry",
    "MediaItem",
    "OpenAITranscriber",
    "RecordingsReport",
    "RecordingsWorker",
    "Status",
    "ThroughputFloor",
    "Transcriber",
    "Validators",
    "ensure_free_space",
    "extension",
    "kind_of",
    "safe_name",
    "sha256_of",
    "transcribe_downloads",
]
