"""Errors of the application shell that the CLI and the server map to exit codes or replies.

The tool layer's errors (`tools/errors.py`) stay there; these are about our own input and configuration.
"""

from __future__ import annotations


class BadInput(Exception):
    """A flag or setting is wrong; nothing was sent (exit 2)."""


class ConfigError(BadInput):
    """A setting is missing or wrong (exit 2): the message names it."""
