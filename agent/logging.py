"""Logging to stderr with secrets redacted from every record, whatever the level.

Patient names are never logged at INFO by our code; ids and counts are.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

REDACTED = "[redacted]"


class RedactSecrets(logging.Filter):
    """Replace any secret value that appears in a log record's message or arguments."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self._scrub(record.getMessage())
            record.args = None
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """One stderr handler for the app; noisy libraries stay at WARNING unless DEBUG."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("httpx", "httpcore", "openai", "langchain", "langgraph", "aiosqlite", "uvicorn"):
        logging.getLogger(name).setLevel(quiet)
    # the mcp library logs tool arguments (patient names) at DEBUG: never below INFO
    logging.getLogger("mcp").setLevel(max(logging.INFO, quiet))
