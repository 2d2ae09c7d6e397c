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


class _Run:
    """What this invocation was asked for before its command ran: `coviu-agent --sandbox ...`, and the source its
    settings name (every JSON object printed then carries it as `"source"`)."""

    sandbox: bool = False
    source: str | None = None


RUN = _Run()


def ask_for_sandbox(flag: bool) -> None:
    """The global `--sandbox` flag (set once per invocation by the app's callback)."""
    RUN.sandbox = flag
    RUN.source = None


def fail(code: int, message: str, *, as_json: bool = False, extra: dict[str, Any] | None = None) -> NoReturn:
    if as_json:
        emit_json({"error": message, "exit_code": code, **(extra or {})})
    err.print(styled("error:", "bold red", message), highlight=False)
    raise typer.Exit(code)


def emit_json(payload: Any) -> None:
    """One JSON object on stdout: secrets redacted, bidi/C1 characters as \\u escapes (the same data)."""
    from tools.textsafety import redact_value, safe_json

    if isinstance(payload, dict) and RUN.source is not None and "source" not in payload:
        payload = {"source": RUN.source, **payload}
    sys.stdout.write(safe_json(json.dumps(redact_value(payload), ensure_ascii=False, default=str)) + "\n")


# Every command's -v/-q (one definition: the same words in every --help).
VERBOSE: Any = typer.Option(
    0, "-v", "--verbose", count=True, show_default=False, help="More log lines: -v debug, -vv libraries too."
)
QUIET: Any = typer.Option(False, "-q", "--quiet", help="Errors only: no info or warning lines.")


def log_level(verbose: int, configured: str | None) -> str:
    """The stderr log level: -q ERROR; -v DEBUG; else COVIU_AGENT_LOG_LEVEL when set; else WARNING for a person at
    a terminal (the command's own output says what happened) and INFO when stderr is not a terminal (cron, systemd,
    CI: the log is the run's record; ids and counts, never names). README "Log lines"."""
    if verbose < 0:
        return "ERROR"
    if verbose > 0:
        return "DEBUG"
    if configured:
        return configured
    return "WARNING" if sys.stderr.isatty() else "INFO"


def configure_cli_logging(verbose: int, settings: Settings | None = None) -> None:
    """Logging for a command: `-v` DEBUG for coviu-agent's own loggers, `-vv` the libraries too, `-q` errors only."""
    from agent.logging import configure_logging

    configured = settings.log_level if settings is not None and "log_level" in settings.model_fields_set else None
    secrets = settings.secrets() if settings is not None else ()
    configure_logging(
        log_level(verbose, configured),
        secrets,
        libraries_debug=int(verbose) >= 2,
        json_lines=settings is not None and settings.log_format == "json",
    )


def load_settings(verbose: int = 0, as_json: bool = False, *, needs_truto: bool = True) -> Settings:
    """Settings from env and `.env` (a wrong one: exit 2, one line naming it), and logging (`configure_cli_logging`;
    `verbose` -1 is -q). `--sandbox` puts them on the embedded sandbox; a command that talks to Truto
    (`needs_truto`) with no TRUTO_API_KEY and no sandbox asked for: exit 2 with the fix, before anything runs."""
    from pydantic import ValidationError  # pydantic(-settings) only where settings are read: `--help` stays fast

    from agent.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(setting_problem(Settings, e) for e in exc.errors())
        fail(EXIT_BAD_INPUT, f"configuration: {problems}", as_json=as_json)
    if RUN.sandbox:
        settings = settings.on_sandbox()
    if needs_truto:
        from agent.settings import NO_TRUTO_ACCOUNT

        if settings.truto_api_key is None and not settings.uses_sandbox:
            fail(EXIT_BAD_INPUT, NO_TRUTO_ACCOUNT, as_json=as_json)
        RUN.source = settings.source
        # the state store (checkpoints, summary cache) is input too: named with its fix before the first request
        from agent.local_inputs import StateStoreUnreachable, check_state

        try:
            check_state(settings.state)
        except BadInput as exc:
            fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
        except StateStoreUnreachable as exc:
            fail(EXIT_UPSTREAM, str(exc), as_json=as_json)
    configure_cli_logging(verbose, settings)
    from tools import telemetry

    try:
        telemetry.setup(metrics_file=settings.metrics_file)  # off (nothing imported) unless OTEL_* or the file asks
    except ValueError as exc:
        fail(EXIT_BAD_INPUT, f"configuration: {exc}", as_json=as_json)
    from agent.tracing import configure_langsmith

    configure_langsmith()  # LangSmith by LangChain's own variables, patient data hidden before upload
    return settings


_EXPECTED = (  # pydantic's words for what a setting accepts, in a person's
    ("a valid number, unable to parse string as a number", "a number"),
    ("a valid integer, unable to parse string as an integer", "a whole number"),
    ("a valid boolean, unable to interpret input", "true or false (1/0, yes/no, on/off)"),
    ("greater than or equal to", "a number of at least"),
    ("less than or equal to", "a number of at most"),
    ("greater than", "a number over"),
    ("less than", "a number under"),
)


def setting_problem(model: Any, error: Any) -> str:
    """One pydantic error of the settings, for a person: the variable, its value (never a secret's) and what is
    accepted, e.g. `COVIU_AGENT_MAX_WAIT='abc': expected a number`."""
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    loc: tuple[Any, ...] = tuple(error.get("loc") or ())
    if len(loc) != 1:  # a check across settings: its message names them (and the input is every setting)
        return message
    name = str(loc[0])  # the variable (pydantic-settings reports the alias)
    field = next((f for f in model.model_fields.values() if f.validation_alias == name), None)
    secret = name.endswith(("_KEY", "_URL", "_TOKEN")) or "SecretStr" in repr(getattr(field, "annotation", ""))
    value = "(hidden)" if secret else repr(error.get("input"))
    if message.startswith(("Input should be", "Value should be")):
        expected = message.split(" be ", 1)[1]
        for pydantic_words, ours in _EXPECTED:
            expected = expected.replace(pydantic_words, ours)
        message = f"expected {expected}"
    elif name in message:  # a field's own check that says it all (e.g. COVIU_AGENT_TIMEZONE='Mars/X' is not ...)
        return message
    return f"{name}={value}: {message}"


def say(line: str) -> None:
    """A status line on stderr, as text (a run's `on_event`)."""
    err.print(line, highlight=False, markup=False)


def check_id(name: str, value: str | None) -> None:
    if value is not None and not _ID_PATTERN.fullmatch(value):
        raise BadInput(f"{name}: expected an id (letters, digits, '-', '_', '.', ':'; up to 128), got {value!r}")


def run_async(
    fn: Callable[[], Awaitable[T]], *, as_json: bool, interrupted: Callable[[], str | None] | None = None
) -> T:
    """Run a command body and turn the app's errors into exit codes (`agent.errors.exit_code_for`, the same for a
    fleet's clinics) and messages written for a person (`tools.errors.for_person`). `interrupted` may say what a
    Ctrl-C left behind (e.g. the command that answers a pending approval)."""
    from agent.errors import exit_code_for
    from tools.errors import CoviuAgentError, RetriesExhaustedError, TransportError, for_person, model_failure

    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except typer.Exit:
        raise
    except (KeyboardInterrupt, EOFError):  # EOFError: stdin closed at a prompt, no answer given
        said = (interrupted() if interrupted is not None else None) or (
            "interrupted (Ctrl-C): run the same command again to resume"
        )
        err.print(said, highlight=False, markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    except (RetriesExhaustedError, TransportError) as exc:
        fail(EXIT_UPSTREAM, f"upstream failure: {exc}", as_json=as_json)
    except CoviuAgentError as exc:
        fail(exit_code_for(exc), for_person(exc), as_json=as_json)
    except Exception as exc:  # a chat model's own error that no graph mapped: the same table (tools.errors)
        mapped = model_failure(exc)
        if mapped is None:
            raise
        fail(exit_code_for(mapped), str(mapped), as_json=as_json)
