"""The simulated Coviu account's in-memory records and the clinic rules Coviu enforces on them.

Indexed for large days: every id lookup is a dict hit; sessions and submissions sit in sorted indexes.
"""

from __future__ import annotations

import bisect
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from sandbox.clock import Clock
from sandbox.errors import CoviuError
from sandbox.ids import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID
from sandbox.models import (
    Collection,
    DemoData,
    MediaFile,
    Participant,
    ParticipantDraft,
    Session,
    Submission,
    Team,
    WaitingCall,
    WaitingQueue,
)
from sandbox.timefmt import format_time

# A keyset position in a sorted index: (time in microseconds since the epoch, sequence number).
IndexKey = tuple[int, int]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch (exact integer arithmetic)."""
    return (moment - _EPOCH) // _MICROSECOND


def _iso(moment: datetime) -> str:
    return format_time(moment, "iso")


class CoviuStore:
    """Sessions, participants, summaries, waiting calls, collections, submissions and files, with Coviu's rules.

    Methods that serve API requests raise `CoviuError` with Coviu's status and a specific message.
    Methods named `insert_*` / `record_*` write without rules: they seed data and play out calls.
    """

    def __init__(self, clock: Clock, *, client_id: str, id_seed: str = "coviu-sandbox") -> None:
        self.clock = clock
        self.client_id = client_id
        self.teams: dict[str, Team] = {}
        self.waiting_queues: dict[str, WaitingQueue] = {}
        self.sessions: dict[str, Session] = {}
        self.participants: dict[str, Participant] = {}
        self.waiting_calls: dict[str, WaitingCall] = {}
        self.collections: dict[str, Collection] = {}
        self.submissions: dict[str, Submission] = {}
        self.files: dict[str, MediaFile] = {}
        self.demo: DemoData | None = None
        self._ids = random.Random(id_seed)
        self._seq = 0
        # Sessions sorted by (created, seq, id) and by (start, seq, id).
        self._by_creation: list[tuple[int, int, str]] = []
        self._by_start: list[tuple[int, int, str]] = []
        self._calls_by_team: dict[str, list[str]] = {}
        self._collections_by_team: dict[str, list[str]] = {}
        self._submissions_by_collection: dict[str, list[tuple[int, int, str]]] = {}
        self._submissions_by_session: dict[str, list[str]] = {}

    # ----------------------------------------------------------------- ids and time

    def new_id(self, rng: random.Random | None = None) -> str:
        """A UUID4 string, deterministic for a given sequence of calls."""
        source = rng or self._ids
        return str(uuid.UUID(int=source.getrandbits(128), version=4))

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def now(self) -> datetime:
        return self.clock.now()

    # ----------------------------------------------------------------- phases

    def has_started(self, session: Session) -> bool:
        """Started: the scheduled start has come, or someone has already entered the call."""
        if self.now() >= session.start_time:
            return True
        return any(self.participants[pid].entry_time is not None for pid in session.participant_ids)

    def has_finished(self, session: Session) -> bool:
        """Finished: the call was recorded complete, or the scheduled end has passed."""
        return session.actual_end_time is not None or self.now() > session.end_time

    # ----------------------------------------------------------------- structure

    def insert_team(self, team_id: str, name: str, subdomain: str) -> Team:
        team = Team(team_id=team_id, name=name, subdomain=subdomain)
        self.teams[team_id] = team
        self._calls_by_team.setdefault(team_id, [])
        self._collections_by_team.setdefault(team_id, [])
        return team

    def insert_waiting_queue(self, waiting_queue_id: str, team_id: str, name: str) -> WaitingQueue:
        queue = WaitingQueue(waiting_queue_id=waiting_queue_id, team_id=team_id, name=name)
        self.waiting_queues[waiting_queue_id] = queue
        return queue

    def insert_collection(self, collection: Collection) -> Collection:
        self.collections[collection.collection_id] = collection
        self._collections_by_team.setdefault(collection.team_id, []).append(collection.collection_id)
        self._submissions_by_collection.setdefault(collection.collection_id, [])
        return collection

    def require_team(self, team_id: str) -> Team:
        team = self.teams.get(team_id)
        if team is None:
            raise CoviuError(404, f"`teamId` not found: {team_id}")
        return team

    def require_collection(self, team_id: str, collection_id: str) -> Collection:
        self.require_team(team_id)
        collection = self.collections.get(collection_id)
        if collection is None or collection.team_id != team_id:
            raise CoviuError(404, f"`collectionId` not found: {collection_id}")
        return collection

    # ----------------------------------------------------------------- sessions: lookups

    def get_session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise CoviuError(404, f"`session_id` not found: {session_id}")
        return session

    def session_participants(self, session: Session, include_deleted: bool = False) -> list[Participant]:
        people = [self.participants[pid] for pid in session.participant_ids]
        if include_deleted:
            return people
        return [p for p in people if p.deleted_at is None]

    def iter_sessions(
        self,
        *,
        start_from: datetime | None = None,
        end_until: datetime | None = None,
        include_canceled: bool = False,
        state: str | None = None,
        reverse: bool = False,
        after: IndexKey | None = None,
    ) -> Iterator[tuple[IndexKey, Session]]:
        """Sessions in Coviu's list order, each with its keyset position.

        No time filter: by creation, oldest first. With `start_from` (starts at or after) or `end_until`
        (ends at or before): by start time. `reverse` flips the order; `after` resumes past a position.
        """

        def keep(session: Session) -> bool:
            if session.canceled_time is not None and not include_canceled:
                return False
            if end_until is not None and session.end_time > end_until:
                return False
            if state is not None:
                return any(p.state == state for p in self.session_participants(session))
            return True

        if start_from is None and end_until is None:
            index = self._by_creation
            low, high = 0, len(index)
        else:
            index = self._by_start
            low = 0 if start_from is None else bisect.bisect_left(index, (micros(start_from),))
            # A session ending at or before end_until started before it.
            high = len(index) if end_until is None else bisect.bisect_left(index, (micros(end_until),))
        if reverse:
            if after is not None:
                high = min(high, bisect.bisect_left(index, after))
            positions: Iterator[int] = iter(range(high - 1, low - 1, -1))
        else:
            if after is not None:
                low = max(low, bisect.bisect_left(index, (after[0], after[1] + 1)))
            positions = iter(range(low, high))
        for i in positions:
            time_us, seq, session_id = index[i]
            session = self.sessions[session_id]
            if keep(session):
                yield (time_us, seq), session

    # ----------------------------------------------------------------- sessions: rules

    def create_session(
        self,
        *,
        team_id: str,
        session_name: str,
        start_time: datetime,
        end_time: datetime,
        picture: str | None = None,
        feature_flags: list[str] | None = None,
        participants: list[ParticipantDraft] | None = None,
    ) -> Session:
        """Coviu's create: start must be in the future and end after start."""
        now = self.now()
        if start_time <= now:
            raise CoviuError(
                400, f"start_time must be in the future (now is {_iso(now)}, start_time is {_iso(start_time)})"
            )
        if end_time <= start_time:
            raise CoviuError(
                400,
                f"end_time must be after start_time (start_time is {_iso(start_time)}, end_time is {_iso(end_time)})",
            )
        session = self.insert_session(
            session_name=session_name,
            start_time=start_time,
            end_time=end_time,
            team_id=team_id,
            picture=picture,
            feature_flags=feature_flags,
            created_at=now,
        )
        for draft in participants or []:
            self.insert_participant(session, draft, created_at=now)
        return session

    def update_session(
        self,
        session_id: str,
        *,
        session_name: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        picture: str | None = None,
    ) -> Session:
        """Coviu's update: only name, times and picture; refused once canceled or finished."""
        session = self.get_session(session_id)
        now = self.now()
        if session.canceled_time is not None:
            raise CoviuError(400, f"a canceled session may not be changed (session {session_id})")
        if self.has_finished(session):
            raise CoviuError(400, f"a session that has already finished may not be changed (session {session_id})")
        new_start = session.start_time if start_time is None else start_time
        new_end = session.end_time if end_time is None else end_time
        if start_time is not None and start_time != session.start_time and start_time <= now:
            raise CoviuError(
                400, f"start_time must be in the future (now is {_iso(now)}, start_time is {_iso(start_time)})"
            )
        if end_time is not None and end_time <= now:
            raise CoviuError(400, f"end_time must be in the future (now is {_iso(now)}, end_time is {_iso(end_time)})")
        if new_end <= new_start:
            raise CoviuError(
                400,
                f"end_time must be after start_time (start_time is {_iso(new_start)}, end_time is {_iso(new_end)})",
            )
        if new_start != session.start_time:
            self._unindex_start(session)
            session.start_time = new_start
            self._index_start(session)
        session.end_time = new_end
        if session_name is not None:
            session.session_name = session_name
        if picture is not None:
            session.picture = picture
        return session

    def cancel_session(self, session_id: str) -> Session:
        """Coviu's cancel (DELETE): irreversible, and only before the session has started."""
        session = self.get_session(session_id)
        if session.canceled_time is not None:
            raise CoviuError(400, f"session {session_id} has already been canceled (at {_iso(session.canceled_time)})")
        if self.has_started(session):
            raise CoviuError(
                400,
                f"a session that has already started may not be canceled "
                f"(start_time was {_iso(session.start_time)}, now is {_iso(self.now())})",
            )
        session.canceled_time = self.now()
        return session

    # ----------------------------------------------------------------- participants: rules

    def get_participant(self, participant_id: str) -> Participant:
        participant = self.participants.get(participant_id)
        if participant is None:
            raise CoviuError(404, f"`participant_id` not found: {participant_id}")
        return participant

    def add_participant(self, session_id: str, draft: ParticipantDraft) -> Participant:
        """Coviu's add participant: refused on a canceled or finished session (a started one is fine)."""
        session = self.get_session(session_id)
        if session.canceled_time is not None:
            raise CoviuError(400, f"a canceled session may not have participants added (session {session_id})")
        if self.has_finished(session):
            raise CoviuError(
                400,
                f"a session that has already finished may not have participants added "
                f"(session {session_id} ended {_iso(session.actual_end_time or session.end_time)})",
            )
        return self.insert_participant(session, draft, created_at=self.now())

    def update_participant(
        self,
        participant_id: str,
        *,
        display_name: str | None = None,
        role: str | None = None,
        picture: str | None = None,
        state: str | None = None,
    ) -> Participant:
        participant = self.get_participant(participant_id)
        if participant.deleted_at is not None:
            raise CoviuError(400, f"a canceled participant may not be changed (participant {participant_id})")
        if display_name is not None:
            participant.display_name = display_name
        if role is not None:
            participant.role = role
        if picture is not None:
            participant.picture = picture
        if state is not None:
            participant.state = state
        return participant

    def cancel_participant(self, participant_id: str, rule: str = "finished") -> Participant:
        """Coviu's participant cancel: refused once the session has finished (or started, in strict mode)."""
        participant = self.get_participant(participant_id)
        if participant.deleted_at is not None:
            raise CoviuError(
                400,
                f"participant {participant_id} has already been canceled (at {_iso(participant.deleted_at)})",
            )
        session = self.sessions[participant.session_id]
        if rule == "started" and self.has_started(session):
            raise CoviuError(400, "a participant may not be canceled after the session has started")
        if self.has_finished(session):
            raise CoviuError(400, "a participant may not be canceled after the session has finished")
        participant.deleted_at = self.now()
        return participant

    # ----------------------------------------------------------------- writes without rules

    def insert_session(
        self,
        *,
        session_name: str,
        start_time: datetime,
        end_time: datetime,
        team_id: str,
        created_at: datetime,
        picture: str | None = None,
        feature_flags: list[str] | None = None,
        session_id: str | None = None,
        rng: random.Random | None = None,
    ) -> Session:
        """Store a session as given (no temporal rules): for seeding and synthetic days."""
        session = Session(
            session_id=session_id or self.new_id(rng),
            session_name=session_name,
            start_time=start_time,
            end_time=end_time,
            team_id=team_id,
            client_id=self.client_id,
            created_at=created_at,
            seq=self.next_seq(),
            picture=picture,
            feature_flags=list(feature_flags or []),
        )
        if session.session_id in self.sessions:
            raise ValueError(f"session id already exists: {session.session_id}")
        self.sessions[session.session_id] = session
        bisect.insort(self._by_creation, (micros(created_at), session.seq, session.session_id))
        self._index_start(session)
        return session

    def insert_participant(
        self,
        session: Session,
        draft: ParticipantDraft,
        *,
        created_at: datetime,
        rng: random.Random | None = None,
    ) -> Participant:
        participant = Participant(
            participant_id=self.new_id(rng),
            session_id=session.session_id,
            client_id=self.client_id,
            display_name=draft.display_name,
            role=draft.role.upper(),
            created_at=created_at,
            picture=draft.picture,
            state=draft.state,
            phone=draft.phone,
        )
        self.participants[participant.participant_id] = participant
        session.participant_ids.append(participant.participant_id)
        return participant

    def record_entry(
        self,
        participant_id: str,
        at: datetime,
        bandwidth: tuple[int, int, int, int, int, int] | None = None,
    ) -> Participant:
        """A participant entered the call (the summary's `entry_time`)."""
        participant = self.get_participant(participant_id)
        participant.entry_time = at
        participant.bandwidth = bandwidth or (320, 1450, 980, 410, 1900, 1210)
        return participant

    def record_exit(self, participant_id: str, at: datetime, reason: str = "hangup") -> Participant:
        """A participant left the call (the summary's `exit_time`)."""
        participant = self.get_participant(participant_id)
        participant.left_at = at
        participant.left_reason = reason
        return participant

    def complete_call(self, session_id: str, at: datetime) -> Session:
        """The call was recorded complete: sets `actual_end_time` (the session is then finished). Called again, it
        is an upstream correction of the recorded end (the list, when it shows the end, and the summary show it)."""
        session = self.get_session(session_id)
        session.actual_end_time = at
        return session

    def _index_start(self, session: Session) -> None:
        bisect.insort(self._by_start, (micros(session.start_time), session.seq, session.session_id))

    def _unindex_start(self, session: Session) -> None:
        entry = (micros(session.start_time), session.seq, session.session_id)
        i = bisect.bisect_left(self._by_start, entry)
        if i < len(self._by_start) and self._by_start[i] == entry:
            del self._by_start[i]

    # ----------------------------------------------------------------- waiting calls

    def insert_waiting_call(self, call: WaitingCall) -> WaitingCall:
        self.waiting_calls[call.call_id] = call
        self._calls_by_team.setdefault(call.team_id, []).append(call.call_id)
        return call

    def add_waiting_call(
        self,
        *,
        team_id: str,
        waiting_queue_id: str,
        joined_at: datetime,
        details: str,
        call_type: str = "video",
    ) -> WaitingCall:
        """A patient joins a waiting queue (for tests and demos)."""
        call = WaitingCall(
            call_id=self.new_id(),
            team_id=team_id,
            waiting_queue_id=waiting_queue_id,
            peer_id=self.new_id(),
            socket_id=self.new_id()[:20],
            call_type=call_type,
            details=details,
            joined_at=joined_at,
            last_activity_at=joined_at,
        )
        return self.insert_waiting_call(call)

    @staticmethod
    def is_waiting(call: WaitingCall) -> bool:
        """Still waiting: not answered, not left the queue, not finished."""
        return call.answered_at is None and call.left_queue_at is None and call.finished_at is None

    def team_calls(self, team_id: str, *, waiting_only: bool) -> list[WaitingCall]:
        """The team's calls, longest-waiting first."""
        self.require_team(team_id)
        calls = [self.waiting_calls[cid] for cid in self._calls_by_team.get(team_id, [])]
        if waiting_only:
            calls = [c for c in calls if self.is_waiting(c)]
        return sorted(calls, key=lambda c: c.joined_at)

    def queue_calls(self, team_id: str, waiting_queue_id: str) -> list[WaitingCall]:
        """Every call that joined this queue (answered and departed ones too), longest-waiting first."""
        self.require_team(team_id)
        queue = self.waiting_queues.get(waiting_queue_id)
        if queue is None or queue.team_id != team_id:
            raise CoviuError(404, f"`waitingQueueId` not found: {waiting_queue_id}")
        return [c for c in self.team_calls(team_id, waiting_only=False) if c.waiting_queue_id == waiting_queue_id]

    def get_waiting_call(self, team_id: str, call_id: str) -> WaitingCall:
        self.require_team(team_id)
        call = self.waiting_calls.get(call_id)
        if call is None or call.team_id != team_id:
            raise CoviuError(404, f"`callId` not found: {call_id}")
        return call

    # ----------------------------------------------------------------- collections and submissions

    def team_collections(self, team_id: str) -> list[Collection]:
        self.require_team(team_id)
        return [self.collections[cid] for cid in self._collections_by_team.get(team_id, [])]

    def insert_submission(self, submission: Submission) -> Submission:
        self.submissions[submission.submission_id] = submission
        bisect.insort(
            self._submissions_by_collection.setdefault(submission.collection_id, []),
            (micros(submission.created_at), submission.seq, submission.submission_id),
        )
        if submission.session_id is not None:
            self._submissions_by_session.setdefault(submission.session_id, []).append(submission.submission_id)
        return submission

    def insert_media(self, media: MediaFile, *, audio: bool = False) -> MediaFile:
        self.files[media.file_id] = media
        submission = self.submissions[media.submission_id]
        if audio:
            submission.audio_recording_id = media.file_id
        else:
            submission.file_ids.append(media.file_id)
        return media

    def session_submissions(self, session_id: str) -> list[Submission]:
        """Submissions naming a session (any collection); a convenience for tests."""
        return [self.submissions[sid] for sid in self._submissions_by_session.get(session_id, [])]

    def iter_submissions(
        self,
        collection_id: str,
        *,
        created_from: datetime | None = None,
        created_until: datetime | None = None,
        reverse: bool = False,
        after: IndexKey | None = None,
    ) -> Iterator[tuple[IndexKey, Submission]]:
        """Submissions of a collection by creation time: `created_from` inclusive, `created_until` exclusive."""
        index = self._submissions_by_collection.get(collection_id, [])
        low = 0 if created_from is None else bisect.bisect_left(index, (micros(created_from),))
        high = len(index) if created_until is None else bisect.bisect_left(index, (micros(created_until),))
        if reverse:
            if after is not None:
                high = min(high, bisect.bisect_left(index, after))
            positions: Iterator[int] = iter(range(high - 1, low - 1, -1))
        else:
            if after is not None:
                low = max(low, bisect.bisect_left(index, (after[0], after[1] + 1)))
            positions = iter(range(low, high))
        for i in positions:
            created_us, seq, submission_id = index[i]
            yield (created_us, seq), self.submissions[submission_id]

    def get_submission(self, team_id: str, collection_id: str, submission_id: str) -> Submission:
        self.require_collection(team_id, collection_id)
        submission = self.submissions.get(submission_id)
        if submission is None or submission.collection_id != collection_id:
            raise CoviuError(404, f"`submissionId` not found: {submission_id}")
        return submission

    def get_submission_file(self, team_id: str, collection_id: str, submission_id: str, file_id: str) -> MediaFile:
        submission = self.get_submission(team_id, collection_id, submission_id)
        if file_id not in submission.file_ids:
            raise CoviuError(404, f"`fileId` not found: {file_id}")
        return self.files[file_id]

    def get_audio_recording(self, team_id: str, collection_id: str, submission_id: str) -> MediaFile:
        submission = self.get_submission(team_id, collection_id, submission_id)
        if submission.audio_recording_id is None:
            raise CoviuError(404, f"no audio recording for submission: {submission_id}")
        return self.files[submission.audio_recording_id]

    # ----------------------------------------------------------------- synthetic days

    def generate_sessions(
        self,
        day: date,
        n: int,
        seed: int = 0,
        team_id: str = DEMO_TEAM_ID,
        collection_id: str = DEMO_INTAKE_COLLECTION_ID,
    ) -> list[str]:
        """N synthetic sessions ending within `day` (UTC), with summaries and intake submissions.

        The mix is realistic: ~10% missing form, ~5% pending, ~7% overrun > 10 min, ~3% no-show,
        ~2% canceled. Returns the new session ids in creation order.
        """
        from sandbox.demo import generate_day

        return generate_day(self, day, n, seed=seed, team_id=team_id, collection_id=collection_id)
