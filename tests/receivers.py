"""Real message receivers on loopback, started by the tests themselves: an SMTP server (aiosmtpd) and an HTTP
webhook receiver (Apprise's `json://127.0.0.1:PORT/` posts to it). Each records what it received; the webhook can
answer 500 or be slow, and either can be stopped (a channel that is down)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Webhook:
    """A JSON webhook: `url` is its Apprise URL; `posts` the JSON bodies it took (answered 200)."""

    port: int
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200  # what it answers (500: a failing channel)
    delay: float = 0.0  # seconds it waits before answering (a slow channel)
    refused: int = 0  # posts answered with an error
    answered: int = 0  # posts answered (whatever the answer)

    def wait_answered(self, count: int, timeout: float = 10) -> None:
        """Wait until this many posts were answered (a slow channel's sender is done before the test ends)."""
        deadline = time.monotonic() + timeout
        while self.answered < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the sender reads the answer

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"


@contextmanager
def webhook() -> Iterator[Webhook]:
    hook = Webhook(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if hook.delay:
                time.sleep(hook.delay)
            if hook.status >= 400:
                hook.refused += 1
            else:
                hook.posts.append(json.loads(body))
            try:
                self.send_response(hook.status)
                self.end_headers()
            except OSError:
                pass  # the client gave up (a slow-channel test)
            hook.answered += 1

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", hook.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    """An SMTP server: `url` is its Apprise URL; `messages` the emails it took."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    def url(self, to: str = "staff@clinic.example") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=agent@clinic.example&to={to}&mode=insecure"

    def html(self, index: int = -1) -> str:
        """The HTML body (not an attachment) of an email."""
        part = self.messages[index].get_body(preferencelist=("html",))
        assert part is not None, "the email has no HTML body"
        return str(part.get_content())

    def attachments(self, index: int = -1) -> dict[str, bytes]:
        """Each attachment's file name and bytes."""
        return {
            str(part.get_filename()): bytes(part.get_payload(decode=True))
            for part in self.messages[index].iter_attachments()
        }


@contextmanager
def mailbox() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox(free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            box.messages.append(message)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def down_url() -> str:
    """A webhook URL nobody listens on (a channel that is down)."""
    return f"json://127.0.0.1:{free_port()}/hook"
