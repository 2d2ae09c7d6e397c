"""The recordings worker's run (`coviu-agent recordings`): find and fetch the recordings, then transcribe."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import BadInput
from agent.runs.base import Event, _services, observed
from agent.runs.results import RecordingsRun

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from agent.settings import Settings
    from graphs.context import Services
    from workers.recordings import Transcriber


TRANSCRIPTION_OFF = "transcription is off: set OPENAI_API_KEY to transcribe audio (files were still downloaded)"


@observed("recordings")
async def run_recordings(
    settings: Settings,
    *,
    services: Services | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    session_id: str | None = None,
    download_dir: Path | None = None,
    transcribe: bool = False,
    transcriber: Transcriber | None = None,
    team_id: str | None = None,
    collection_id: str | None = None,
    on_event: Event | None = None,
) -> RecordingsRun:
    """Find and fetch (or, without `download_dir`, only list) the recordings; tests inject `services`."""
    from workers.recordings import OpenAITranscriber, RecordingsWorker

    def say(message: str) -> None:
        if on_event is not None:
            on_event(message)

    async with _services(settings, services) as svc:
        team = team_id or svc.team_id
        collection = collection_id or svc.collection_id
        if not team or not collection:
            missing = "COVIU_TEAM_ID" if not team else "COVIU_INTAKE_COLLECTION_ID"
            raise BadInput(f"recordings need a team and the intake collection: set {missing} (or pass it)")
        if transcribe and transcriber is None and settings.openai_api_key is not None:
            transcriber = OpenAITranscriber(
                api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url
            )
        worker = RecordingsWorker(
            svc.toolbox,
            team_id=team,
            collection_id=collection,
            download_dir=download_dir,
            transcriber=transcriber if transcribe else None,
            # each file's progress is an INFO log line (cron's record); the caller lists the files once, at the end
            on_event=None,
            stall_seconds=settings.download_stall_seconds,
        )
        report = await worker.run(since=since, until=until, session_id=session_id)
        if transcribe:
            if transcriber is None:
                report.transcription = "off"
                say(TRANSCRIPTION_OFF)
            else:
                report.transcription = "on"
                await worker.transcribe(report)
        return RecordingsRun(report, download_dir, since, until, session_id, team, collection)
