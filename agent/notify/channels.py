"""Notification channels: Apprise URLs from the settings (or a fleet file), those allowed patient data named
apart; each URL and its token-like parts registered as secrets, a channel shown only by its scheme and key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from agent.errors import BadInput
from tools.textsafety import register_secrets

NOTIFY_ENV = "COVIU_AGENT_NOTIFY"
PATIENT_DATA_ENV = "COVIU_AGENT_NOTIFY_PATIENT_DATA"


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
