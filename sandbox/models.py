"""The clinic's records as the simulated Coviu keeps them: sessions, participants, waiting calls, submissions.

Compact `__slots__` dataclasses so that ten thousand sessions stay small; binaries are only seeds and sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(slots=True)
class Session:
    """A scheduled Coviu call (Coviu's Session), with the actual end once the call has completed."""

    session_id: str
    session_name: str
    start_time: datetime
    end_time: datetime
    team_id: str
    client_id: str
    created_at: datetime
    seq: int
    picture: str | None = None
    feature_flags: list[str] = field(default_factory=list)
    participant_ids: list[str] = field(default_factory=list)
    canceled_time: datetime | None = None
    actual_end_time: datetime | None = None


@dataclass(slots=True)
class Participant:
    """One person's place in a session, with their own entry link, and their attendance once they joined."""

    participant_id: str
    session_id: str
    client_id: str
    display_name: str
    role: str
    created_at: datetime
    picture: str | None = None
    state: str | None = None
    phone: str | None = None
    deleted_at: datetime | None = None
    entry_time: datetime | None = None
    left_at: datetime | None = None
    left_reason: str | None = None
    bandwidth: tuple[int, int, int, int, int, int] | None = None


@dataclass(slots=True)
class WaitingQueue:
    """A waiting area queue of a team (Coviu lists no queues; they are known from calls)."""

    waiting_queue_id: str
    team_id: str
    name: str


@dataclass(slots=True)
class Team:
    """A clinic team: owns sessions, waiting queues and collections."""

    team_id: str
    name: str
    subdomain: str


@dataclass(slots=True)
class WaitingCall:
    """A patient's call in a waiting area queue (Coviu's Call, camelCase on the wire)."""

    call_id: str
    team_id: str
    waiting_queue_id: str
    peer_id: str
    socket_id: str
    call_type: str
    details: str
    joined_at: datetime
    last_activity_at: datetime
    session_id: str | None = None
    answered_at: datetime | None = None
    started_at: datetime | None = None
    on_hold_at: datetime | None = None
    left_queue_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(slots=True)
class Collection:
    """A secure collection of data gathered around calls (intake forms, consent, recordings)."""

    collection_id: str
    team_id: str
    collection_reference: str
    name: str
    read_setting: str
    delete_setting: str
    created_at: datetime
    updated_at: datetime | None = None


@dataclass(slots=True)
class Submission:
    """One submission into a collection (e.g. a patient's intake form); `locked_at` None means pending."""

    submission_id: str
    collection_id: str
    team_id: str
    session_id: str | None
    collection_location: str
    submitting_user_id: str
    created_at: datetime
    updated_at: datetime
    seq: int
    locked_at: datetime | None = None
    action_status: bool = False
    file_ids: list[str] = field(default_factory=list)
    audio_recording_id: str | None = None


@dataclass(slots=True)
class MediaFile:
    """A submission's video file or audio recording: bytes are generated from `seed` on demand."""

    file_id: str
    submission_id: str
    content_type: str
    filename: str
    size: int
    seed: int
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class ParticipantDraft:
    """A participant to be added: what a create request carries."""

    display_name: str
    role: str
    picture: str | None = None
    state: str | None = None
    phone: str | None = None


@dataclass
class DemoData:
    """The ids of the seeded demo records, by the case they stand for (see `sandbox.demo`)."""

    team_id: str
    waiting_queue_id: str
    collection_id: str
    client_id: str
    today: date | None = None
    yesterday: date | None = None
    sessions: dict[str, str] = field(default_factory=dict)
    participants: dict[str, dict[str, str]] = field(default_factory=dict)
    submissions: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    audio_recordings: dict[str, str] = field(default_factory=dict)
    waiting_calls: dict[str, str] = field(default_factory=dict)
    collections: dict[str, str] = field(default_factory=dict)
    injection_call_id: str | None = None
