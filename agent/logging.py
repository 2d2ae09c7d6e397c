"""Logging to stderr with secrets redacted from every record (message, arguments, traceback), whatever the level.

Patient names are never logged at INFO by our code; ids and counts are. Text from outside in a record is
shown with control and bidi characters escaped, on one line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from tools.textsafety import REDACTED, REDACTOR, clean_line, redact, register_secrets

__all__ = ["REDACTED", "RedactSecrets", "RedactingFormatter", "configure_logging"]


class RedactSecrets(logging.Filter):
    """Render a record's message with its arguments, redacted and on one line, before any handler sees it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        register_secrets(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!r} {record.args!r}"
        record.msg = clean_line(message)
        record.args = None
        return True


class RedactingFormatter(logging.Formatter):
    """The formatted record, traceback included, passes through the redactor."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """One stderr handler for the app; noisy libraries stay at WARNING unless DEBUG."""
    register_secrets(secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(REDACTOR.secrets))
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("httpx", "httpcore", "openai", "langchain", "langgraph", "aiosqlite", "uvicorn"):
        logging.getLogger(name).setLevel(quiet)
    # the mcp library logs tool arguments (patient names) at DEBUG: never below INFO
    logging.getLogger("mcp").setLevel(max(logging.INFO, quiet))
