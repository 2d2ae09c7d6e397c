"""Errors of the application shell that the CLI and the server map to exit codes or replies.

The tool layer's errors (`tools/errors.py`) stay there; these are about our own input and configuration.
"""

from __future__ import annotations

# The process's exit codes, one table for every command and for fleets (README "Exit codes"; every `--help`).
EXIT_OK, EXIT_BAD_INPUT, EXIT_UPSTREAM, EXIT_APPROVAL, EXIT_INCOMPLETE = 0, 2, 3, 4, 5
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "done"),
    (EXIT_BAD_INPUT, "bad input or an unknown id (flag, setting, team, queue, account); nothing sent"),
    (
        EXIT_UPSTREAM,
        "upstream failure after retries (Truto, Coviu, the model, a server); said: what was done",
    ),
    (EXIT_APPROVAL, "needs approval: `ask --thread-id T --yes` (or --no) answers it"),
    (EXIT_INCOMPLETE, "incomplete: a report with sessions not checked; ask: an action refused, failed or not tried"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


def exit_codes_epilog() -> str:
    """The exit-code table as every command's `--help` epilog (click's \\b keeps its lines as they are)."""
    return "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)


def exit_code_for(error: BaseException) -> int:
    """The one mapping of a failure to an exit code, for a single run and for each clinic of a fleet."""
    from tools.errors import is_bad_input

    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, BadInput) or is_bad_input(error):
        return EXIT_BAD_INPUT
    return EXIT_UPSTREAM


class BadInput(Exception):
    """A flag or setting is wrong; nothing was sent (exit 2)."""


class ConfigError(BadInput):
    """A setting is missing or wrong (exit 2): the message names it."""
