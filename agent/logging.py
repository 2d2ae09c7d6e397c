"""Logging to stderr with secrets redacted from every record (message, arguments, traceback), whatever the level.

Patient names are never logged at INFO by our code; ids and counts are. Text from outside in a record is
shown with control and bidi characters escaped, on one line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

from tools.textsafety import REDACTED, REDACTOR, clean_line, redact, register_secrets

__all__ = ["REDACTED", "JsonLinesFormatter", "RedactSecrets", "RedactingFormatter", "configure_logging"]


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


class JsonLinesFormatter(RedactingFormatter):
    """One JSON object a line (`--log-format json`): time (UTC, ISO 8601), level, logger, message, and the
    traceback as one string when there is one; the whole line passes through the redactor."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, ensure_ascii=False))


def _redacted_arg(value: object) -> object:
    """A record argument with secrets taken out; its type kept where nothing was found (`%d` still gets an int)."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def install_record_redaction() -> None:
    """Every log record, from any logger and whatever handler later takes it (a library's own, uvicorn's), has its
    message and arguments redacted where it is made (idempotent). Records below a logger's level are never made."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted_arg(a) for a in record.args)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# Our packages' loggers: `-v` (or COVIU_AGENT_LOG_LEVEL=DEBUG) opens these to DEBUG; libraries stay at WARNING.
OWN_LOGGERS = ("agent", "graphs", "tools", "sandbox", "prompts", "bench")


def configure_logging(
    level: str, secrets: Iterable[str] = (), *, libraries_debug: bool = False, json_lines: bool = False
) -> None:
    """One stderr handler for the app, at `level` for coviu-agent's own loggers; `json_lines`: one JSON object a line.

    Libraries (httpx, httpcore, aiosqlite, openai, langgraph, ...) log at WARNING and above unless
    `libraries_debug` (`-vv`), which opens every logger to `level`.
    """
    register_secrets(secrets)
    install_record_redaction()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(REDACTOR.secrets))
    root.addHandler(handler)
    numeric = logging.getLevelName(level) if isinstance(logging.getLevelName(level), int) else logging.INFO
    root.setLevel(numeric if libraries_debug else max(numeric, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(numeric)
    quiet = numeric if libraries_debug else max(numeric, logging.WARNING)
    for name in ("httpx", "httpcore", "openai", "langchain", "langgraph", "aiosqlite", "uvicorn", "asyncio"):
        logging.getLogger(name).setLevel(quiet)
    # the mcp library logs tool arguments (patient names) at DEBUG: never below INFO
    logging.getLogger("mcp").setLevel(max(logging.INFO, quiet))
