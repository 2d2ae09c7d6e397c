"""Errors of the application shell that the CLI and the server map to exit codes or replies.

The tool layer's errors (`tools/errors.py`) stay there; these are about our own input and configuration.
"""

from __future__ import annotations

# The process's exit codes (README): 0 done; 2 bad input (nothing sent); 3 upstream failure after retries;
# 4 needs approval; 5 the report is written but incomplete (`ask`: an action was refused, failed or not attempted).
EXIT_OK, EXIT_BAD_INPUT, EXIT_UPSTREAM, EXIT_APPROVAL, EXIT_INCOMPLETE = 0, 2, 3, 4, 5


class BadInput(Exception):
    """A flag or setting is wrong; nothing was sent (exit 2)."""


class ConfigError(BadInput):
    """A setting is missing or wrong (exit 2): the message names it."""
