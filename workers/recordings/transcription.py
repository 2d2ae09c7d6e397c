"""Transcription of downloaded audio: the backend protocol, OpenAI's, and the hand-off that writes `<audio>.txt`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from tools.private_files import write_private
from workers.recordings.manifest import Manifest, ManifestEntry

log = logging.getLogger(__name__)


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


async def transcribe_downloads(
    entries: Iterable[ManifestEntry | None],
    transcriber: Transcriber,
    directory: Path,
    manifest: Manifest,
    on_event: Callable[[str], None],
) -> list[str]:
    """Transcribe each downloaded audio file once (`<audio>.txt` next to it), recorded in `manifest` (saved by the
    caller). Returns the errors: a backend's failure (network, quota) never loses the downloads."""
    errors: list[str] = []
    for entry in entries:
        if entry is None or entry.kind != "audio":
            continue
        audio = directory / entry.path
        transcript = audio.with_suffix(".txt")
        if entry.transcript_path and transcript.is_file() and transcript.stat().st_size > 0:
            continue
        try:
            text = await transcriber.transcribe(audio, entry.content_type or "audio/webm")
        except Exception as exc:  # the backend's own errors (network, quota) must not lose the downloads
            message = f"transcribing {entry.path}: {type(exc).__name__}: {exc}"
            log.error("%s", message)
            errors.append(message)
            continue
        write_private(transcript, text)
        entry.transcript_path = transcript.relative_to(directory).as_posix()
        manifest.put(entry)
        on_event(f"transcribed {entry.path} ({transcriber.name})")
    return errors
