"""What every command shares: the consoles, `fail`, `emit_json`, settings loading, id checks and
`run_async` (the app's errors → exit codes). Command modules import this; it imports no command module.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from agent.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_UPSTREAM, BadInput
from agent.redact import SafeConsole, styled

if TYPE_CHECKING:
    from agent.settings import Settings

T = TypeVar("T")

# Strings printed through these are text, never markup; secrets redacted, control/bidi characters escaped.
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def fail(code: int, message: str, *, as_json: bool = False, extra: dict[str, Any] | None = None) -> NoReturn:
    if as_json:
        emit_json({"error": message, "exit_code": code, **(extra or {})})
    err.print(styled("error:", "bold red", message), highlight=False)
    raise typer.Exit(code)


def emit_json(payload: Any) -> None:
    """One JSON object on stdout: secrets redacted, bidi/C1 characters as \\u escapes (the same data)."""
    from tools.textsafety import redact_value, safe_json

    sys.stdout.write(safe_json(json.dumps(redact_value(payload), ensure_ascii=False, default=str)) + "\n")


def load_settings(verbose: int = 0, as_json: bool = False) -> Settings:
    """Settings from env and `.env` (a wrong one: exit 2, one line), and logging: `-v` DEBUG for coviu-agent's own
    loggers, `-vv` for the libraries too."""
    from pydantic import ValidationError  # pydantic(-settings) only where settings are read: `--help` stays fast

    from agent.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        fail(EXIT_BAD_INPUT, f"configuration: {problems}", as_json=as_json)
    from agent.logging import configure_logging

    configure_logging("DEBUG" if verbose else settings.log_level, settings.secrets(), libraries_debug=int(verbose) >= 2)
    return settings


def say(line: str) -> None:
    """A status line on stderr, as text (a run's `on_event`)."""
    err.print(line, highlight=False, markup=False)


def check_id(name: str, value: str | None) -> None:
    if value is not None and not _ID_PATTERN.fullmatch(value):
        raise BadInput(f"{name}: expected an id (letters, digits, '-', '_', '.', ':'; up to 128), got {value!r}")


def run_async(fn: Callable[[], Awaitable[T]], *, as_json: bool) -> T:
    """Run a command body and turn the app's errors into exit codes (`agent.errors.exit_code_for`, the same for a
    fleet's clinics) and messages written for a person (`tools.errors.for_person`)."""
    from agent.errors import exit_code_for
    from tools.errors import CoviuAgentError, RetriesExhaustedError, TransportError, for_person

    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted (Ctrl-C): run the same command again to resume", highlight=False, markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    except (RetriesExhaustedError, TransportError) as exc:
        fail(EXIT_UPSTREAM, f"upstream failure: {exc}", as_json=as_json)
    except CoviuAgentError as exc:
        fail(exit_code_for(exc), for_person(exc), as_json=as_json)
