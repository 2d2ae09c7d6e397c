"""Prompt texts live here as Markdown files, loaded by name.

`load_prompt("triage")` reads `prompts/triage.md`; `{placeholders}` are filled with str.format.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any


@cache
def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")


def load_prompt(name: str, **values: Any) -> str:
    """The prompt `name`, with `{key}` placeholders filled from `values`."""
    text = _read(name)
    return text.format(**values) if values else text
