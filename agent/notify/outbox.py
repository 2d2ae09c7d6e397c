"""The outbox (`coviu_outbox`, in the state store): every message written before it is sent, each row claimed
before its send, retried with backoff, given up after a day (see `agent.notify`'s docstring).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.notify.channels import Channel
from agent.notify.sending import SEND_TIMEOUT, Message, Sender, apprise_send
from tools.textsafety import redact, redact_value

if TYPE_CHECKING:
    from graphs.audit_store import AuditStore
    from tools.clock import Clock


log = logging.getLogger(__name__)


RETRY_FIRST = 30.0  # seconds before the first retry; doubled per attempt
RETRY_MAX = 1800.0
EXPIRE_AFTER = 24 * 3600.0  # a message not delivered in a day is given up (logged)
FLUSH_MAX_ROWS = 50  # rows one flush sends at most (the rest wait for the next)
FLUSH_BUDGET = 30.0  # seconds one flush may spend sending (channels are sent to at once)
KEEP_DONE = 30 * 86_400.0  # seconds a row that is done with stays (ids and times only)


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
