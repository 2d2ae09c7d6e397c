"""Staff notifications: channels by URL (Apprise), and the outbox every message goes through.

A channel is an Apprise URL (Slack, Microsoft Teams, email, ntfy, a JSON webhook, ...): `COVIU_AGENT_NOTIFY` names
channels that never carry patient data; `COVIU_AGENT_NOTIFY_PATIENT_DATA` names channels allowed to carry it (the
patient's display name in a queue alert, the names in an audit's To-do list and its HTML report). Both are secrets:
the URLs hold tokens and passwords, so they are registered with the redaction layer and never printed, logged or
checkpointed; a channel is shown as `scheme://… (key)` where the key is a hash of its URL.

Every message is written to the outbox (`coviu_outbox`, in the state store beside the checkpoints) before it is
sent: one row per message and channel, keyed by the message's stable id and the channel's key, so a message is
written once however often it is raised. `Outbox.flush` claims each due row (status `sending`, committed) before
the send and marks it `sent` after it: a process killed between the write and the send leaves the row `pending`
for the next flush (nothing lost); a row is claimed by one sender only (nothing sent twice). A send that fails is
retried with backoff (30 s doubling to 30 min) until it is 24 h old (`expired`, logged); a process killed during a
send leaves its row `sending`, which is never sent again (`interrupted`, logged): at most once per id and channel.
Each send is bounded (`SEND_TIMEOUT`), channels are sent to at once, a channel that failed is not tried again in the
same flush, and a flush ends by `FLUSH_BUDGET`: a channel that is down or slow never holds up the watcher or the
audit. A sent row keeps its ids and times, not its text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.errors import BadInput
from tools.textsafety import redact, redact_value, register_secrets

if TYPE_CHECKING:
    from graphs.audit_store import AuditStore
    from tools.clock import Clock

log = logging.getLogger(__name__)

NOTIFY_ENV = "COVIU_AGENT_NOTIFY"
PATIENT_DATA_ENV = "COVIU_AGENT_NOTIFY_PATIENT_DATA"
SEND_TIMEOUT = 20.0  # seconds one send to one channel may take (Apprise's own call limit, then ours)
RETRY_FIRST = 30.0  # seconds before the first retry; doubled per attempt
RETRY_MAX = 1800.0
EXPIRE_AFTER = 24 * 3600.0  # a message not delivered in a day is given up (logged)
FLUSH_MAX_ROWS = 50  # rows one flush sends at most (the rest wait for the next)
FLUSH_BUDGET = 30.0  # seconds one flush may spend sending (channels are sent to at once)
KEEP_DONE = 30 * 86_400.0  # seconds a row that is done with stays (ids and times only)
EMAIL_SCHEMES = ("mailto", "mailtos")


@dataclass(frozen=True)
class Channel:
    """One notification URL (a secret) and whether it may carry patient data."""

    url: str = field(repr=False)
    patient_data: bool = False

    @property
    def key(self) -> str:
        """A stable name for the channel that does not reveal its URL (stored in the outbox)."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower() if "://" in self.url else "?"

    @property
    def is_email(self) -> bool:
        return self.scheme in EMAIL_SCHEMES

    def describe(self) -> str:
        return f"{self.scheme}://… ({self.key[:8]}{', patient data' if self.patient_data else ''})"

    def __str__(self) -> str:
        return self.describe()


def split_urls(text: str | None) -> list[str]:
    """One or more Apprise URLs separated by spaces, newlines or commas (Apprise's own convention)."""
    if not text or not text.strip():
        return []
    from apprise.utils.parse import parse_urls

    return [str(u) for u in parse_urls(text)]


TOKEN_LENGTH = 12  # a path segment or query value this long is taken for a token (Slack, Teams, Pushover, ...)


def url_secrets(url: str) -> list[str]:
    """The parts of a channel URL a library may log on their own: its password, its user and host parts that look
    like tokens, and its long path segments and query values (tokens)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [unquote(password)] if password else []
    # the user and host parts when they are tokens, not names (Telegram's bot token is the host, `id:secret`;
    # Pushover's user key the user): long and without a dot, which a host name has
    user, _, host = parts.netloc.rpartition("@")
    for piece in (host, *user.split(":", 1), *host.split(":", 1)):
        if len(piece) >= TOKEN_LENGTH and "." not in piece and not piece.startswith("["):
            found.append(unquote(piece))
    found += [unquote(p) for p in parts.path.split("/") if len(p) >= TOKEN_LENGTH]
    found += [v for _, v in parse_qsl(parts.query) if len(v) >= TOKEN_LENGTH and "@" not in v]
    return found


def parse_channels(text: str | None, *, patient_data: bool, source: str) -> list[Channel]:
    """The channels a setting names; a URL Apprise cannot use is bad input naming the setting and the URL's place
    and scheme (never the URL: it holds tokens)."""
    urls = split_urls(text)
    if not urls:
        return []
    from apprise import Apprise

    register_secrets([*urls, *(part for url in urls for part in url_secrets(url))])
    channels: list[Channel] = []
    for index, url in enumerate(urls, start=1):
        channel = Channel(url, patient_data)
        if Apprise.instantiate(url) is None:
            raise BadInput(
                f"{source}: URL {index} of {len(urls)} ({channel.scheme}://…) is not a notification URL Apprise can "
                "use (see https://github.com/caronc/apprise/wiki for the URL of each service)"
            )
        channels.append(channel)
    return channels


def channels_from(
    notify: str | None, notify_patient_data: str | None, *, where: str = "", patient_where: str = ""
) -> list[Channel]:
    """Both settings' channels; a URL in both may carry patient data (it is listed once)."""
    plain = parse_channels(notify, patient_data=False, source=where or NOTIFY_ENV)
    allowed = parse_channels(notify_patient_data, patient_data=True, source=patient_where or PATIENT_DATA_ENV)
    keys = {c.key for c in allowed}
    seen: set[str] = set()
    out: list[Channel] = []
    for channel in [*allowed, *(c for c in plain if c.key not in keys)]:
        if channel.key not in seen:
            seen.add(channel.key)
            out.append(channel)
    return out


# --- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message to staff. `body` carries no patient data; `patient_body` (when given) is what channels allowed
    to carry patient data get instead, with `attach` (a file: the HTML report) for those of them that are email."""

    clinic: str
    kind: str  # "queue", "audit" or "test"
    subject: str  # a call id, an audit window, ...
    level: str  # "alert", "escalation", "unknown", "seen", "report", "incomplete", "failed", "test"
    title: str
    body: str = field(repr=False)
    patient_body: str | None = field(default=None, repr=False)
    attach: str | None = None
    notify_type: str = "info"  # Apprise's: info, success, warning, failure

    @property
    def id(self) -> str:
        """Stable: the same clinic, kind, subject and level is the same message, however often it is raised."""
        key = "|".join((self.clinic, self.kind, self.subject, self.level))
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    def payload_for(self, channel: Channel) -> dict[str, Any]:
        """What this channel gets: the title, the body it may carry, and the attachment when it may carry one."""
        body = self.patient_body if channel.patient_data and self.patient_body is not None else self.body
        attach = self.attach if channel.patient_data and channel.is_email else None
        return {"title": self.title, "body": body, "attach": attach, "type": self.notify_type}


# --- sending -------------------------------------------------------------------------------------

Sender = Callable[[Channel, dict[str, Any]], Awaitable[str | None]]  # None: delivered; else why not


async def apprise_send(channel: Channel, payload: dict[str, Any], timeout: float = SEND_TIMEOUT) -> str | None:
    """Send one payload to one channel through Apprise, in a worker thread, bounded by `timeout` seconds."""

    def send() -> str | None:
        from apprise import Apprise, AppriseAttachment, NotifyFormat

        apobj = Apprise()
        if not apobj.add(channel.url):
            return "the URL was not accepted"
        for service in apobj:  # wait for the answer as long as the send may take, not Apprise's 4 s: a receiver
            # that has the message and answers late would count as failed, and the retry would send it again
            service.socket_read_timeout = max(float(service.socket_read_timeout or 0), timeout)
        attach = None
        if payload.get("attach"):
            attach = AppriseAttachment()
            attach.add(str(payload["attach"]))
        result = apobj.notify(
            body=str(payload.get("body") or ""),
            title=str(payload.get("title") or ""),
            notify_type=str(payload.get("type") or "info"),
            body_format=NotifyFormat.MARKDOWN,
            attach=attach,
            timeout=timeout,
        )
        if result:
            return None
        status = getattr(result.status, "name", str(result.status)).lower()
        return f"the channel did not take it ({status})"

    try:
        return await asyncio.wait_for(asyncio.to_thread(send), timeout + 5)
    except TimeoutError:
        return f"no answer in {timeout:g} s"
    except Exception as exc:  # a channel's failure is kept for the next attempt, never raised into the caller
        return redact(f"{type(exc).__name__}: {exc}")[:300]


# --- the outbox ----------------------------------------------------------------------------------

PUT = (
    "INSERT INTO coviu_outbox (id, msg, channel, clinic, kind, subject, level, payload, status, attempts, "
    "created_at, next_at, claim, claimed_at, sent_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, '', 0, 0, '') "
    "ON CONFLICT (id) DO NOTHING"
)


@dataclass
class FlushResult:
    """What one flush did: rows delivered, rows that failed this time (kept for a retry), rows given up."""

    sent: int = 0
    failed: int = 0
    expired: int = 0
    interrupted: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed, "expired": self.expired, "interrupted": self.interrupted}


class Outbox:
    """Messages to staff, written to the state store before they are sent (see the module's docstring)."""

    def __init__(
        self,
        store: AuditStore,
        channels: Sequence[Channel],
        clock: Clock,
        *,
        sender: Sender | None = None,
        send_timeout: float = SEND_TIMEOUT,
        after_write: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.channels = list(channels)
        self.clock = clock
        self.send_timeout = send_timeout
        self.sender: Sender = sender or (lambda c, p: apprise_send(c, p, self.send_timeout))
        self.after_write = after_write  # a crash point for tests (kill -9 between the write and the send)
        self._by_key = {c.key: c for c in self.channels}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    async def known(self, message: Message) -> bool:
        """Whether this message was written before (sent, pending, held in quiet hours or given up)."""
        rows = await self.store._query("SELECT 1 FROM coviu_outbox WHERE msg = ? LIMIT 1", (message.id,))
        return bool(rows)

    async def put(self, message: Message, *, status: str = "pending") -> bool:
        """Write the message once per channel (a message already written is left as it is). Returns whether it
        was new. `status="quiet"`: remembered but never sent (quiet hours)."""
        if await self.known(message):
            return False
        now = self._now()
        rows = []
        for channel in self.channels:
            payload = json.dumps(redact_value(message.payload_for(channel)), separators=(",", ":"))
            rows.append(
                (
                    f"{message.id}:{channel.key}",
                    message.id,
                    channel.key,
                    message.clinic,
                    message.kind,
                    message.subject,
                    message.level,
                    payload if status == "pending" else "{}",
                    status,
                    now,
                    now,
                )
            )
        if rows:
            await self.store._run([(PUT, rows)])
        if self.after_write is not None:
            self.after_write()
        return True

    async def levels(self, clinic: str, kind: str, since: float, *, told: bool = False) -> dict[str, set[str]]:
        """The levels written per subject for this clinic and kind since a time (what `queue watch` remembers);
        `told`: only those meant to be sent (not dropped in quiet hours)."""
        rows = await self.store._query(
            "SELECT DISTINCT subject, level FROM coviu_outbox WHERE clinic = ? AND kind = ? AND created_at >= ?"
            + (" AND status <> 'quiet'" if told else ""),
            (clinic, kind, since),
        )
        out: dict[str, set[str]] = {}
        for subject, level in rows:
            out.setdefault(str(subject), set()).add(str(level))
        return out

    async def flush(self) -> FlushResult:
        """Send every due row of this process's channels; never raises for a channel's or the store's failure."""
        result = FlushResult()
        try:
            await self._flush(result)
        except Exception as exc:  # the store is busy or gone: the rows stay, the next flush tries again
            log.warning("notification outbox: could not flush (%s)", redact(f"{type(exc).__name__}: {exc}")[:200])
            result.errors.append("the outbox could not be read")
        return result

    async def _flush(self, result: FlushResult) -> None:
        if not self._by_key:
            return
        now = self._now()
        stale = now - 3 * (self.send_timeout + 5)
        interrupted = await self.store._query(
            "SELECT id FROM coviu_outbox WHERE status = 'sending' AND claimed_at < ?", (stale,)
        )
        if interrupted:
            await self.store._run(
                [
                    (
                        "UPDATE coviu_outbox SET status = 'interrupted', payload = '{}' WHERE id = ? "
                        "AND status = 'sending'",
                        [(row[0],) for row in interrupted],
                    )
                ]
            )
            result.interrupted += len(interrupted)
            log.warning("notification outbox: %d sends were interrupted (not sent again)", len(interrupted))
        expired = await self.store._query(
            "SELECT id FROM coviu_outbox WHERE status = 'pending' AND created_at < ?", (now - EXPIRE_AFTER,)
        )
        if expired:
            await self.store._run(
                [
                    (
                        "UPDATE coviu_outbox SET status = 'expired', payload = '{}' WHERE id = ?",
                        [(r[0],) for r in expired],
                    )
                ],
            )
            result.expired += len(expired)
            log.warning("notification outbox: %d messages were not delivered in 24 h (given up)", len(expired))
        # rows done with (sent, dropped in quiet hours, given up) are kept KEEP_DONE for the memory, then deleted
        await self.store._run(
            [
                (
                    "DELETE FROM coviu_outbox WHERE status IN ('sent', 'quiet', 'expired', 'interrupted') "
                    "AND created_at < ?",
                    [(now - KEEP_DONE,)],
                )
            ]
        )
        keys = sorted(self._by_key)
        marks = ", ".join("?" for _ in keys)
        due = await self.store._query(
            "SELECT id, channel, payload, attempts FROM coviu_outbox WHERE status = 'pending' AND next_at <= ? "
            f"AND channel IN ({marks}) ORDER BY created_at, id LIMIT {FLUSH_MAX_ROWS}",
            (now, *keys),
        )
        rows_by_channel: dict[str, list[tuple[str, str, int]]] = {}
        for row_id, channel_key, payload, attempts in due:
            rows_by_channel.setdefault(str(channel_key), []).append((str(row_id), str(payload), int(attempts)))
        # channels at once (a slow one does not hold up the others), each channel's rows in order; the whole flush
        # ends by FLUSH_BUDGET seconds (rows not reached wait for the next flush)
        deadline = self.clock.monotonic() + FLUSH_BUDGET
        await asyncio.gather(
            *(self._flush_channel(self._by_key[key], rows, deadline, result) for key, rows in rows_by_channel.items())
        )

    async def _flush_channel(
        self, channel: Channel, rows: list[tuple[str, str, int]], deadline: float, result: FlushResult
    ) -> None:
        for index, (row_id, payload, attempts) in enumerate(rows):
            if self.clock.monotonic() >= deadline:
                return
            if not await self._claim(row_id):
                continue  # another process sends it
            error = await self.sender(channel, json.loads(payload))
            done = self._now()
            if error is None:
                await self.store._run(
                    [
                        (
                            "UPDATE coviu_outbox SET status = 'sent', sent_at = ?, payload = '{}', error = '' "
                            "WHERE id = ?",
                            [(done, row_id)],
                        )
                    ]
                )
                result.sent += 1
                continue
            delay = min(RETRY_FIRST * 2**attempts, RETRY_MAX)
            # this row is retried after the delay; the channel's other rows wait as long, without an attempt counted
            later = [(done + delay, other) for other, _, _ in rows[index + 1 :]]
            statements: list[tuple[str, Sequence[Sequence[Any]]]] = [
                (
                    "UPDATE coviu_outbox SET status = 'pending', next_at = ?, error = ? WHERE id = ?",
                    [(done + delay, redact(error)[:300], row_id)],
                )
            ]
            if later:
                statements.append(("UPDATE coviu_outbox SET next_at = ? WHERE id = ? AND status = 'pending'", later))
            await self.store._run(statements)
            result.failed += 1
            result.errors.append(f"{channel.describe()}: {redact(error)[:200]}")
            log.warning(
                "notification to %s failed (%s); retry in %.0f s", channel.describe(), redact(error)[:200], delay
            )
            return

    async def _claim(self, row_id: str) -> bool:
        """Mark the row as being sent by this process (committed before the send); False if someone else did."""
        token = uuid.uuid4().hex
        await self.store._run(
            [
                (
                    "UPDATE coviu_outbox SET status = 'sending', claim = ?, claimed_at = ?, attempts = attempts + 1 "
                    "WHERE id = ? AND status = 'pending'",
                    [(token, self._now(), row_id)],
                )
            ]
        )
        rows = await self.store._query("SELECT claim FROM coviu_outbox WHERE id = ?", (row_id,))
        return bool(rows) and rows[0][0] == token

    async def counts(self, clinic: str | None = None) -> dict[str, int]:
        """Rows per status (for status lines)."""
        if clinic is None:
            rows = await self.store._query("SELECT status, count(*) FROM coviu_outbox GROUP BY status", ())
        else:
            rows = await self.store._query(
                "SELECT status, count(*) FROM coviu_outbox WHERE clinic = ? GROUP BY status", (clinic,)
            )
        return {str(status): int(n) for status, n in rows}


async def deliver(outbox: Outbox, messages: Iterable[Message]) -> FlushResult:
    """Write the messages, then flush the outbox (what was written and not sent is sent by the next flush)."""
    for message in messages:
        await outbox.put(message)
    return await outbox.flush()


# --- `coviu-agent notify test` -------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelTest:
    channel: Channel
    error: str | None  # None: delivered

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel.describe(), "delivered": self.error is None, "error": self.error}


def trial_message(clinic: str, at: str) -> Message:
    return Message(
        clinic=clinic,
        kind="test",
        subject=at,
        level="test",
        title=f"coviu-agent: test message for {clinic}",
        body=(
            f"This is a test message from coviu-agent for **{clinic}**, sent at {at}. Queue alerts and the nightly "
            "audit's report will arrive here."
        ),
    )


async def send_test(
    channels: Sequence[Channel], clinic: str, at: str, *, sender: Sender | None = None
) -> list[ChannelTest]:
    """Send a test message to each channel now (not through the outbox: nothing is kept or retried)."""
    send: Sender = sender or apprise_send
    message = trial_message(clinic, at)
    errors = await asyncio.gather(*(send(c, message.payload_for(c)) for c in channels))
    return [ChannelTest(c, e) for c, e in zip(channels, errors, strict=True)]


# --- queue alerts --------------------------------------------------------------------------------


def queue_message(
    event: Mapping[str, Any],
    *,
    clinic: str,
    label: str,
    team_id: str,
    queue_id: str,
    threshold_minutes: float,
    escalate_minutes: float,
) -> Message:
    """The message for one queue event (graphs.queue.QueueEvent): the queue, how long, and where to act; the
    patient's display name only in `patient_body`."""
    call_id = str(event["call_id"])
    level = str(event["level"])
    minutes = event.get("waited_minutes")
    waited = f"{minutes:.0f} min" if isinstance(minutes, int | float) else "an unknown time"
    where = f"Waiting queue `{queue_id}` of team `{team_id}`, call `{call_id}`."
    act = "Act: open the waiting queue in Coviu and answer the call (or triage it: `coviu-agent triage`)."
    if level == "escalation":
        title = f"ESCALATION, {label}: a caller has waited {waited}"
        lead = f"A caller has waited **{waited}** (over {escalate_minutes:g} min, the escalation threshold)."
        kind = "failure"
    elif level == "alert":
        title = f"Queue alert, {label}: a caller has waited {waited}"
        lead = f"A caller has waited **{waited}** (over {threshold_minutes:g} min)."
        kind = "warning"
    elif level == "unknown":
        title = f"Queue alert, {label}: a caller's wait cannot be read"
        lead = "A caller is waiting, but the time they joined the queue cannot be read: check the queue."
        kind = "warning"
    else:
        title = f"Seen, {label}: a caller alerted on is no longer waiting"
        lead = f"The caller alerted on earlier is no longer waiting ({event.get('outcome') or 'left'})."
        act = "Nothing to do."
        kind = "success"
    body = f"{lead}\n\n{where}\n\n{act}"
    name = event.get("name")
    patient_body = f"{lead}\n\nPatient: **{name}**. {where}\n\n{act}" if name else None
    return Message(clinic, "queue", call_id, level, title, body, patient_body, notify_type=kind)


# --- the audit's messages ------------------------------------------------------------------------


def audit_message(
    report: Mapping[str, Any],
    paths: Mapping[str, str],
    *,
    clinic: str,
    zone: Any,
    overrun_threshold_minutes: float,
    rerun: str,
) -> Message:
    """The audit's report for staff: totals and the To-do list (names only for patient-data channels), with the HTML
    report attached for patient-data email channels. Level `report`, or `incomplete` (exit 5)."""
    from reporting.audit_report import render_message

    window = report.get("window") or {}
    complete = bool(report.get("complete", True))
    common: dict[str, Any] = {
        "zone": zone,
        "overrun_threshold_minutes": overrun_threshold_minutes,
        "rerun": rerun,
        "report_path": paths.get("html") or paths.get("md"),
    }
    title, body = render_message(report, names=False, **common)
    _, patient_body = render_message(report, names=True, **common)
    return Message(
        clinic=clinic,
        kind="audit",
        subject=f"{window.get('since')}|{window.get('until')}",
        level="report" if complete else "incomplete",
        title=title,
        body=body,
        patient_body=patient_body,
        attach=paths.get("html"),
        notify_type="info" if complete else "warning",
    )


def audit_failure_message(
    *, clinic: str, label: str, subject: str, what: str, rerun: str, resumes: bool = True
) -> Message:
    """An audit that produced no report (exit 3): what failed and the command to run it again; `resumes` False for
    bad input (exit 2: an unknown account or team), which fails the same way until it is fixed."""
    again = (
        f"It resumes where it stopped when run again: `{rerun}`"
        if resumes
        else f"It fails the same way until this is fixed (an id or a setting); then run: `{rerun}`"
    )
    return Message(
        clinic=clinic,
        kind="audit",
        subject=subject,
        level="failed",
        title=f"FAILED end-of-day audit: {label}",
        body=(f"The end-of-day audit of **{label}** did not produce a report: {redact(what)[:500]}\n\n{again}"),
        notify_type="failure",
    )


def audit_notifier(outbox: Outbox, *, clinic: str, zone: Any, rerun: Callable[[Mapping[str, Any]], str]) -> Any:
    """`Services.on_report` for the audit: the report's message written to the outbox and sent. Never raises: a
    store or channel that fails leaves the audit's result as it is (logged; the next flush sends what was written)."""

    async def on_report(report: Mapping[str, Any], paths: Mapping[str, str], threshold: float) -> None:
        try:
            message = audit_message(
                report, paths, clinic=clinic, zone=zone, overrun_threshold_minutes=threshold, rerun=rerun(report)
            )
            await deliver(outbox, [message])
        except Exception as exc:
            log.warning("the audit's message could not be written (%s)", redact(f"{type(exc).__name__}: {exc}")[:200])

    return on_report


def audit_failure_notifier(
    outbox: Outbox, *, clinic: str, label: str, zone: Any, rerun: str = "coviu-agent audit"
) -> Callable[[Mapping[str, Any], str, bool], Awaitable[None]]:
    """`Services.on_audit_failed`: an audit that produced no report (window, what failed) told to staff through the
    outbox, with the command to rerun it (`rerun` plus the window's flags). One message per clinic and window (its
    stable id): a rerun or retry that fails again writes no second one. `resumes`: False for bad input (an unknown
    account or team: a rerun fails the same way until it is fixed). Never raises (logged)."""

    async def on_audit_failed(window: Mapping[str, Any], what: str, resumes: bool = True) -> None:
        try:
            since, until = window.get("since"), window.get("until")
            message = audit_failure_message(
                clinic=clinic,
                label=label,
                subject=f"{since}|{until}" if since and until else json.dumps(dict(window), sort_keys=True),
                what=what,
                rerun=rerun_for_window({"window": window}, zone, rerun) if since and until else rerun,
                resumes=resumes,
            )
            await deliver(outbox, [message])
        except Exception as exc:  # telling staff never changes the audit's own outcome
            log.warning("the audit's failure could not be told (%s)", type(exc).__name__)

    return on_audit_failed


def rerun_for_window(report: Mapping[str, Any], zone: Any, prefix: str = "coviu-agent audit") -> str:
    """`coviu-agent audit --date D` for a report's window (one day), else `--since ... --until ...`."""
    from graphs.audit_window import day_of_window
    from tools.timeparse import parse_time

    window = report.get("window") or {}
    since_read, until_read = parse_time(window.get("since")), parse_time(window.get("until"))
    if since_read is None or until_read is None:
        return prefix
    since, until = since_read.astimezone(zone), until_read.astimezone(zone)
    day = day_of_window(since, until, zone)
    if day is not None:
        return f"{prefix} --date {day.isoformat()}"
    return f"{prefix} --since {since.isoformat()} --until {until.isoformat()}"
