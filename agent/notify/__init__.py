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

One concern per module (each name is importable from here): `channels` (the URLs from the settings),
`sending` (a message and its send to one channel; `notify test`), `outbox` (written before sent, claimed,
retried), `messages` (what staff are told: queue alerts, the audit's report and failure, and their hooks).
"""

from __future__ import annotations

from agent.notify.channels import (
    EMAIL_SCHEMES,
    NOTIFY_ENV,
    PATIENT_DATA_ENV,
    TOKEN_LENGTH,
    Channel,
    channels_from,
    parse_channels,
    split_urls,
    url_secrets,
)
from agent.notify.messages import (
    audit_failure_message,
    audit_failure_notifier,
    audit_message,
    audit_notifier,
    queue_message,
    rerun_for_window,
)
from agent.notify.outbox import (
    EXPIRE_AFTER,
    FLUSH_BUDGET,
    FLUSH_MAX_ROWS,
    KEEP_DONE,
    PUT,
    RETRY_FIRST,
    RETRY_MAX,
    FlushResult,
    Outbox,
    deliver,
)
from agent.notify.sending import SEND_TIMEOUT, ChannelTest, Message, Sender, apprise_send, send_test, trial_message

__all__ = [
    "EMAIL_SCHEMES",
    "EXPIRE_AFTER",
    "FLUSH_BUDGET",
    "FLUSH_MAX_ROWS",
    "KEEP_DONE",
    "NOTIFY_ENV",
    "PATIENT_DATA_ENV",
    "PUT",
    "RETRY_FIRST",
    "RETRY_MAX",
    "SEND_TIMEOUT",
    "TOKEN_LENGTH",
    "Channel",
    "ChannelTest",
    "FlushResult",
    "Message",
    "Outbox",
    "Sender",
    "apprise_send",
    "audit_failure_message",
    "audit_failure_notifier",
    "audit_message",
    "audit_notifier",
    "channels_from",
    "deliver",
    "parse_channels",
    "queue_message",
    "rerun_for_window",
    "send_test",
    "split_urls",
    "trial_message",
    "url_secrets",
]
