"""A message to staff (stable id; the body a channel may carry) and how it reaches one channel: Apprise, in a
worker thread, bounded in time; and `coviu-agent notify test`, which sends directly (no outbox).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.notify.channels import Channel
from tools.textsafety import redact

SEND_TIMEOUT = 20.0  # seconds one send to one channel may take (Apprise's own call limit, then ours)


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
