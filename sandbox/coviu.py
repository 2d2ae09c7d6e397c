"""Coviu's API behind Truto's proxy resources: argument checks, the store's rules, and Coviu's JSON shapes.

One handler per (resource, Truto method); each returns a JSON object, a page of a list, or a binary file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.errors import CoviuError, TrutoError
from sandbox.media import ByteRange, RangeNotSatisfiable, parse_range
from sandbox.models import Collection, MediaFile, Participant, Session, Submission, WaitingCall
from sandbox.paging import cursor_key, decode_cursor, page_by_key, page_by_offset, parse_limit
from sandbox.store import CoviuStore, ParticipantDraft
from sandbox.timefmt import TimeParseError, format_time, parse_time


@dataclass(frozen=True)
class ProviderCall:
    """A proxy call as it reaches Coviu: resource, Truto method, path id, query and JSON body."""

    resource: str
    method: str
    record_id: str | None
    query: dict[str, Any]
    body: dict[str, Any] | None
    range_header: str | None = None
    if_range: str | None = None  # a resume's validator: the Range holds only while it still names this file


@dataclass(frozen=True)
class JsonReply:
    """A single provider object (or `{"ok": true}`), sent verbatim."""

    payload: Any


@dataclass(frozen=True)
class PageReply:
    """One page of a list, to be wrapped in Truto's list envelope."""

    items: list[Any]
    next_cursor: str | None


@dataclass(frozen=True)
class BinaryReply:
    """A media file (whole, or the requested byte range)."""

    media: MediaFile
    byte_range: ByteRange | None


ProviderReply = JsonReply | PageReply | BinaryReply


def media_etag(media: MediaFile) -> str:
    """A strong ETag: the same bytes, the same tag; any change upstream (seed, size) a new one."""
    return f'"{media.seed & 0xFFFFFFFFFFFF:x}-{media.size:x}"'


def media_last_modified(media: MediaFile) -> str:
    """`Last-Modified`: when the file last changed (its `updated_at`), as an HTTP date."""
    return format_datetime(media.updated_at.astimezone(UTC), usegmt=True)


Handler = Callable[[ProviderCall], ProviderReply]

ROLES = {"host": "HOST", "guest": "GUEST"}
SUMMARY_CUSTOM_METHOD = "summary"  # the summary's custom method name when the account serves it that way


# ----------------------------------------------------------------------------- argument helpers


def _invalid(name: str, reason: str) -> CoviuError:
    return CoviuError(400, f"Invalid `{name}`: {reason}")


def _required_param(call: ProviderCall, name: str) -> str:
    """A parameter Truto needs to build Coviu's path (e.g. team_id): missing → Truto's own 400."""
    value = call.query.get(name)
    if value is None and call.body is not None:
        value = call.body.get(name)
    if value is None or value == "":
        raise TrutoError(400, f"missing required parameter `{name}` for {call.resource}.{call.method}")
    if not isinstance(value, str):
        raise TrutoError(400, f"parameter `{name}` must be a single string, got {value!r}")
    return value


def _opt_str(source: dict[str, Any], name: str) -> str | None:
    value = source.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(name, f"expected a string, got {value!r}")
    return value


def _bool(source: dict[str, Any], name: str) -> bool:
    value = source.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0"):
        return False
    raise _invalid(name, f"expected true or false, got {value!r}")


def _time(source: dict[str, Any], name: str) -> datetime | None:
    value = source.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid(name, f"expected an ISO-8601 or RFC-1123 time string, got {value!r}")
    try:
        return parse_time(value)
    except TimeParseError as exc:
        raise _invalid(name, str(exc)) from exc


def _choice(source: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = source.get(name)
    if value is None or value == "":
        return choices[0]
    if value not in choices:
        raise _invalid(name, f"expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _body(call: ProviderCall, allowed: set[str], *, path_id_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON body, checked for unknown fields; `id`-like keys may repeat the path/query value."""
    body = call.body or {}
    for key in body:
        if key in path_id_keys:
            continue
        if key not in allowed:
            raise CoviuError(400, f"Invalid `body`: unknown field `{key}` (allowed: {', '.join(sorted(allowed))})")
    if "id" in path_id_keys and "id" in body and body["id"] != call.record_id:
        raise CoviuError(400, f"Invalid `body`: `id` {body['id']!r} does not match the path id {call.record_id!r}")
    return body


def _name(body: dict[str, Any], name: str, *, required: bool, field_path: str | None = None) -> str | None:
    label = field_path or name
    value = body.get(name)
    if value is None:
        if required:
            raise CoviuError(400, f"Invalid `body`: `{label}` is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _invalid(label, f"expected a non-empty string, got {value!r}")
    return value


def _role(body: dict[str, Any], *, required: bool, field_path: str = "role") -> str | None:
    value = body.get("role")
    if value is None:
        if required:
            raise CoviuError(400, f"Invalid `body`: `{field_path}` is required")
        return None
    if not isinstance(value, str) or value.lower() not in ROLES:
        raise _invalid(field_path, f"expected host or guest, got {value!r}")
    return ROLES[value.lower()]


def _participant_draft(raw: Any, prefix: str = "") -> ParticipantDraft:
    """A participant from a request body; `prefix` (e.g. `participants[0]`) names nested fields in errors."""

    def label(key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    if not isinstance(raw, dict):
        raise _invalid(prefix or "body", f"expected an object, got {raw!r}")
    allowed = {"display_name", "role", "picture", "state", "phone"}
    for key in raw:
        if key not in allowed:
            raise CoviuError(400, f"Invalid `body`: unknown field `{label(key)}`")
    display_name = _name(raw, "display_name", required=True, field_path=label("display_name"))
    role = _role(raw, required=True, field_path=label("role"))
    assert display_name is not None and role is not None
    return ParticipantDraft(
        display_name=display_name,
        role=role,
        picture=_opt_str(raw, "picture"),
        state=_opt_str(raw, "state"),
        phone=_opt_str(raw, "phone"),
    )


# ----------------------------------------------------------------------------- the API


class CoviuApi:
    """Coviu's endpoints as Truto's proxy resources expose them."""

    def __init__(self, store: CoviuStore, config: Callable[[], SandboxConfig]) -> None:
        self.store = store
        self._config = config
        self.handlers: dict[tuple[str, str], Handler] = {
            ("sessions", "list"): self.list_sessions,
            ("sessions", "get"): self.get_session,
            ("sessions", "create"): self.create_session,
            ("sessions", "update"): self.update_session,
            ("sessions", "delete"): self.cancel_session,
            ("session_summaries", "get"): self.get_session_summary,
            ("session_summaries", SUMMARY_CUSTOM_METHOD): self.summary_custom_method,
            ("participants", "list"): self.list_participants,
            ("participants", "get"): self.get_participant,
            ("participants", "create"): self.create_participant,
            ("participants", "update"): self.update_participant,
            ("participants", "delete"): self.cancel_participant,
            ("waiting_queue_calls", "list"): self.list_waiting_queue_calls,
            ("waiting_calls", "list"): self.list_waiting_calls,
            ("waiting_calls", "get"): self.get_waiting_call,
            ("collections", "list"): self.list_collections,
            ("submissions", "list"): self.list_submissions,
            ("submissions", "get"): self.get_submission,
            ("submission_files", "get"): self.get_submission_file,
            ("audio_recordings", "get"): self.get_audio_recording,
        }
        self.resources = {resource for resource, _ in self.handlers}

    def served(self, resource: str, method: str) -> bool:
        """Whether this account serves (resource, method): the summary is a get or a custom method, never both."""
        if resource == "session_summaries":
            custom = self._config().summary_method == "custom"
            return method == (SUMMARY_CUSTOM_METHOD if custom else "get")
        return (resource, method) in self.handlers

    def handle(self, call: ProviderCall) -> ProviderReply:
        handler = self.handlers.get((call.resource, call.method)) if self.served(call.resource, call.method) else None
        if handler is None:
            if call.resource not in self.resources:
                raise TrutoError(404, f"resource `{call.resource}` not found for integration coviu")
            raise TrutoError(404, f"method `{call.method}` is not defined for resource `{call.resource}`")
        return handler(call)

    # ------------------------------------------------------------------ rendering

    def _t(self, moment: datetime | None) -> str | None:
        return None if moment is None else format_time(moment, self._config().time_format)

    def session_json(self, session: Session, include_deleted: bool = False) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "session_id": session.session_id,
            "session_name": session.session_name,
            "start_time": self._t(session.start_time),
            "end_time": self._t(session.end_time),
            "picture": session.picture,
            "team_id": session.team_id,
            "client_id": session.client_id,
            "participants": [
                self.participant_json(p) for p in self.store.session_participants(session, include_deleted)
            ],
            "feature_flags": list(session.feature_flags),
        }
        if session.canceled_time is not None:
            payload["canceled_time"] = self._t(session.canceled_time)
        if self._config().session_actual_end_listed:
            payload["actual_end_time"] = self._t(session.actual_end_time)
        return payload

    def participant_json(self, participant: Participant) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "participant_id": participant.participant_id,
            "session_id": participant.session_id,
            "client_id": participant.client_id,
            "display_name": participant.display_name,
            "role": participant.role,
            "picture": participant.picture,
            "state": participant.state,
            "phone": participant.phone,
            "entry_url": f"https://coviu.com/session/{participant.participant_id}",
        }
        if participant.deleted_at is not None:
            payload["deleted_at"] = self._t(participant.deleted_at)
        if self._config().participant_entry_listed:
            payload["entry_time"] = self._t(participant.entry_time)
        return payload

    def summary_json(self, session: Session) -> dict[str, Any]:
        attendees = [p for p in self.store.session_participants(session, True) if p.entry_time is not None]
        attendees.sort(key=lambda p: (p.entry_time, p.participant_id))
        people = []
        for p in attendees:
            bandwidth = p.bandwidth or (0, 0, 0, 0, 0, 0)
            people.append(
                {
                    "participant_id": p.participant_id,
                    "role": p.role,
                    "entry_time": self._t(p.entry_time),
                    "exit_time": {"left_at": self._t(p.left_at), "left_reason": p.left_reason},
                    "bandwidth": {
                        "min_sent_bandwidth": bandwidth[0],
                        "max_sent_bandwidth": bandwidth[1],
                        "avg_sent_bandwidth": bandwidth[2],
                        "min_receive_bandwidth": bandwidth[3],
                        "max_receive_bandwidth": bandwidth[4],
                        "avg_receive_bandwidth": bandwidth[5],
                    },
                }
            )
        return {
            "session_id": session.session_id,
            "start_time": self._t(session.start_time),
            "end_time": self._t(session.end_time),
            "actual_end_time": self._t(session.actual_end_time),
            "participants": people,
        }

    def call_json(self, call: WaitingCall) -> dict[str, Any]:
        return {
            "callId": call.call_id,
            "teamId": call.team_id,
            "waitingQueueId": call.waiting_queue_id,
            "peerId": call.peer_id,
            "socketId": call.socket_id,
            "sessionId": call.session_id,
            "callType": call.call_type,
            "details": call.details,
            "joinedAt": self._t(call.joined_at),
            "lastActivityAt": self._t(call.last_activity_at),
            "answeredAt": self._t(call.answered_at),
            "startedAt": self._t(call.started_at),
            "onHoldAt": self._t(call.on_hold_at),
            "leftQueueAt": self._t(call.left_queue_at),
            "finishedAt": self._t(call.finished_at),
            "emptiedAt": None,
            "cleanedAt": None,
            "transferredAt": None,
            "transferredTo": None,
            "transferredToTeam": None,
            "previousCallId": None,
        }

    def collection_json(self, collection: Collection) -> dict[str, Any]:
        return {
            "id": collection.collection_id,
            "team_id": collection.team_id,
            "collection_id": collection.collection_id,
            "collection_reference": collection.collection_reference,
            "name": collection.name,
            "read_setting": collection.read_setting,
            "delete_setting": collection.delete_setting,
            "created_at": self._t(collection.created_at),
            "updated_at": self._t(collection.updated_at),
        }

    def submission_json(self, submission: Submission) -> dict[str, Any]:
        payload = {
            "item_submission_id": submission.submission_id,
            "secure_collection_id": submission.collection_id,
            "session_id": submission.session_id,
            "collection_location": submission.collection_location,
            "submitting_user_id": submission.submitting_user_id,
            "created_at": self._t(submission.created_at),
            "updated_at": self._t(submission.updated_at),
            "locked_at": self._t(submission.locked_at),
            "action_status": submission.action_status,
        }
        if self._config().submission_layout == "sparse":
            # the same fields, keys in another order, unset ones left out rather than null
            return {key: payload[key] for key in sorted(payload) if payload[key] is not None}
        return payload

    def file_json(self, media: MediaFile) -> dict[str, Any]:
        return {
            "id": media.file_id,
            "metadata": {"content_type": media.content_type, "filename": media.filename},
            "size": media.size,
            "created_at": self._t(media.created_at),
            "updated_at": self._t(media.updated_at),
        }

    # ------------------------------------------------------------------ sessions

    def list_sessions(self, call: ProviderCall) -> ProviderReply:
        q = call.query
        start_from = _time(q, "start_time")
        end_until = _time(q, "end_time")
        order = _choice(q, "order", ("forward", "reverse"))
        include_canceled = (
            _bool(q, "include_canceled")
            if q.get("include_canceled") not in (None, "")
            else self._config().canceled_listed_by_default
        )
        include_deleted = _bool(q, "deleted_participants")
        state = _opt_str(q, "state")
        limit = self._limit(q)
        mode = ("start" if start_from or end_until else "created") + ":" + order
        after = cursor_key(decode_cursor(q.get("next_cursor"), call.resource), mode, call.resource)
        entries = self.store.iter_sessions(
            start_from=start_from,
            end_until=end_until,
            include_canceled=include_canceled,
            state=state,
            reverse=order == "reverse",
            after=after,
        )
        sessions, cursor = page_by_key(entries, limit, {"r": call.resource, "m": mode})
        return PageReply([self.session_json(s, include_deleted) for s in sessions], cursor)

    def _limit(self, query: dict[str, Any]) -> int:
        """The page size: `limit` (checked either way), unless the account pages by its own fixed size."""
        limit = parse_limit(query.get("limit"))
        fixed = self._config().page_size
        return limit if fixed is None else fixed

    def _record_id(self, call: ProviderCall) -> str:
        if not call.record_id:
            raise TrutoError(400, f"missing id for {call.resource}.{call.method}")
        return call.record_id

    def get_session(self, call: ProviderCall) -> ProviderReply:
        session = self.store.get_session(self._record_id(call))
        return JsonReply(self.session_json(session, _bool(call.query, "deleted_participants")))

    def create_session(self, call: ProviderCall) -> ProviderReply:
        allowed = {"session_name", "start_time", "end_time", "picture", "feature_flags", "participants"}
        body = _body(call, allowed)
        session_name = _name(body, "session_name", required=True)
        start_time = _time(body, "start_time")
        end_time = _time(body, "end_time")
        if start_time is None:
            raise CoviuError(400, "Invalid `body`: `start_time` is required")
        if end_time is None:
            raise CoviuError(400, "Invalid `body`: `end_time` is required")
        flags = body.get("feature_flags") or []
        if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
            raise _invalid("feature_flags", f"expected an array of strings, got {flags!r}")
        raw_people = body.get("participants") or []
        if not isinstance(raw_people, list):
            raise _invalid("participants", f"expected an array of participants, got {raw_people!r}")
        drafts = [_participant_draft(raw, f"participants[{i}]") for i, raw in enumerate(raw_people)]
        assert session_name is not None
        session = self.store.create_session(
            team_id=self._team_id(),
            session_name=session_name,
            start_time=start_time,
            end_time=end_time,
            picture=_opt_str(body, "picture"),
            feature_flags=flags,
            participants=drafts,
        )
        return JsonReply(self.session_json(session))

    def _team_id(self) -> str:
        demo = self.store.demo
        if demo is not None:
            return demo.team_id
        return next(iter(self.store.teams))

    def update_session(self, call: ProviderCall) -> ProviderReply:
        allowed = {"session_name", "start_time", "end_time", "picture"}
        body = _body(call, allowed, path_id_keys=("id",))
        session = self.store.update_session(
            self._record_id(call),
            session_name=_name(body, "session_name", required=False),
            start_time=_time(body, "start_time"),
            end_time=_time(body, "end_time"),
            picture=_opt_str(body, "picture"),
        )
        return JsonReply(self.session_json(session))

    def cancel_session(self, call: ProviderCall) -> ProviderReply:
        self.store.cancel_session(self._record_id(call))
        return JsonReply({"ok": True})

    def get_session_summary(self, call: ProviderCall) -> ProviderReply:
        return JsonReply(self.summary_json(self.store.get_session(self._record_id(call))))

    def summary_custom_method(self, call: ProviderCall) -> ProviderReply:
        """The summary as a custom method (`POST /proxy/session_summaries/summary`): `id` in the body or query."""
        body = _body(call, {"id"})
        record_id = body.get("id", call.query.get("id"))
        if not isinstance(record_id, str) or not record_id:
            raise TrutoError(400, f"missing required parameter `id` for {call.resource}.{call.method}")
        return JsonReply(self.summary_json(self.store.get_session(record_id)))

    # ------------------------------------------------------------------ participants

    def list_participants(self, call: ProviderCall) -> ProviderReply:
        session = self.store.get_session(_required_param(call, "session_id"))
        people = self.store.session_participants(session, _bool(call.query, "deleted_participants"))
        cursor = decode_cursor(call.query.get("next_cursor"), call.resource)
        page, next_cursor = page_by_offset(people, self._limit(call.query), cursor, call.resource)
        return PageReply([self.participant_json(p) for p in page], next_cursor)

    def get_participant(self, call: ProviderCall) -> ProviderReply:
        return JsonReply(self.participant_json(self.store.get_participant(self._record_id(call))))

    def create_participant(self, call: ProviderCall) -> ProviderReply:
        session_id = _required_param(call, "session_id")
        body = _body(call, {"display_name", "role", "picture", "state", "phone"}, path_id_keys=("session_id",))
        draft = _participant_draft({k: v for k, v in body.items() if k != "session_id"})
        participant = self.store.add_participant(session_id, draft)
        return JsonReply(self.participant_json(participant))

    def update_participant(self, call: ProviderCall) -> ProviderReply:
        body = _body(call, {"display_name", "role", "picture", "state"}, path_id_keys=("id",))
        participant = self.store.update_participant(
            self._record_id(call),
            display_name=_name(body, "display_name", required=False),
            role=_role(body, required=False),
            picture=_opt_str(body, "picture"),
            state=_opt_str(body, "state"),
        )
        return JsonReply(self.participant_json(participant))

    def cancel_participant(self, call: ProviderCall) -> ProviderReply:
        self.store.cancel_participant(self._record_id(call), self._config().participant_cancel_rule)
        return JsonReply({"ok": True})

    # ------------------------------------------------------------------ waiting area

    def _page(self, call: ProviderCall, items: list[Any]) -> PageReply:
        cursor = decode_cursor(call.query.get("next_cursor"), call.resource)
        page, next_cursor = page_by_offset(items, self._limit(call.query), cursor, call.resource)
        return PageReply(page, next_cursor)

    def list_waiting_queue_calls(self, call: ProviderCall) -> ProviderReply:
        calls = self.store.queue_calls(_required_param(call, "team_id"), _required_param(call, "waiting_queue_id"))
        return self._page(call, [self.call_json(c) for c in calls])

    def list_waiting_calls(self, call: ProviderCall) -> ProviderReply:
        calls = self.store.team_calls(_required_param(call, "team_id"), waiting_only=True)
        return self._page(call, [self.call_json(c) for c in calls])

    def get_waiting_call(self, call: ProviderCall) -> ProviderReply:
        waiting = self.store.get_waiting_call(_required_param(call, "team_id"), self._record_id(call))
        return JsonReply(self.call_json(waiting))

    # ------------------------------------------------------------------ collections

    def list_collections(self, call: ProviderCall) -> ProviderReply:
        collections = self.store.team_collections(_required_param(call, "team_id"))
        return self._page(call, [self.collection_json(c) for c in collections])

    def list_submissions(self, call: ProviderCall) -> ProviderReply:
        q = call.query
        collection = self.store.require_collection(
            _required_param(call, "team_id"), _required_param(call, "collection_id")
        )
        created_from = _time(q, "from")
        created_until = _time(q, "until")
        order = _choice(q, "order", ("asc", "desc"))
        order_by = _choice(q, "orderBy", ("created_at",))
        limit = self._limit(q)
        mode = f"{order_by}:{order}"
        after = cursor_key(decode_cursor(q.get("next_cursor"), call.resource), mode, call.resource)
        entries = self.store.iter_submissions(
            collection.collection_id,
            created_from=created_from,
            created_until=created_until,
            reverse=order == "desc",
            after=after,
        )
        submissions, cursor = page_by_key(entries, limit, {"r": call.resource, "m": mode})
        return PageReply([self.submission_json(s) for s in submissions], cursor)

    def get_submission(self, call: ProviderCall) -> ProviderReply:
        submission = self.store.get_submission(
            _required_param(call, "team_id"), _required_param(call, "collection_id"), self._record_id(call)
        )
        payload = self.submission_json(submission)
        payload["files"] = [self.file_json(self.store.files[file_id]) for file_id in submission.file_ids]
        return JsonReply(payload)

    def _binary(self, media: MediaFile, call: ProviderCall) -> BinaryReply:
        if call.if_range is not None and call.if_range.strip() not in (media_etag(media), media_last_modified(media)):
            return BinaryReply(media, None)  # If-Range names another version: the whole file (200), Range ignored
        try:
            return BinaryReply(media, parse_range(call.range_header, media.size))
        except RangeNotSatisfiable as exc:
            raise TrutoError(
                416,
                f"range not satisfiable: {call.range_header!r} (file is {media.size} bytes)",
                remote=True,
                raw_response={"error": {"message": "Range Not Satisfiable"}},
                headers={"content-range": f"bytes */{media.size}"},
            ) from exc

    def get_submission_file(self, call: ProviderCall) -> ProviderReply:
        quality = call.query.get("quality")
        if quality not in (None, "", "480p"):
            raise _invalid("quality", f"expected 480p, got {quality!r}")
        media = self.store.get_submission_file(
            _required_param(call, "team_id"),
            _required_param(call, "collection_id"),
            _required_param(call, "submission_id"),
            self._record_id(call),
        )
        return self._binary(media, call)

    def get_audio_recording(self, call: ProviderCall) -> ProviderReply:
        media = self.store.get_audio_recording(
            _required_param(call, "team_id"), _required_param(call, "collection_id"), self._record_id(call)
        )
        return self._binary(media, call)
