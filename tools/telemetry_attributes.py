"""What a span's or a metric's attributes may carry: ids, names of tools and resources, counts and outcomes, never
a secret or a patient's name. Every string goes through the redactor and must look like an id, or is withheld;
the checked forms are remembered while the redactor's secrets stay the same.

`tools/telemetry.py` (the recording API) and `tools/telemetry_providers.py` check with these; `tools.telemetry`
re-exports them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from tools.textsafety import REDACTOR

WITHHELD = "(withheld)"
# What a string attribute may look like: an id, a tool or resource name, a path of ids, an outcome.
_SAFE = re.compile(r"[A-Za-z0-9._:/#@+={}-]{0,200}")
AttrValue = str | bool | int | float
# The checked form of each string seen (most repeat: accounts, resources, tools, outcomes), while the redactor's
# secrets stay the same (its `generation`); bounded, emptied when full.
_CHECKED: dict[str, str] = {}
_CHECKED_GENERATION = -1
_CHECKED_MAX = 4096


def safe_text(value: str) -> str:
    """`value` when, redacted, it is unchanged and looks like an id; else `(withheld)` (or its redacted form
    when that still looks like an id). Remembered per value while the redactor's secrets stay the same."""
    global _CHECKED_GENERATION
    generation = REDACTOR.generation
    if generation != _CHECKED_GENERATION or len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
        _CHECKED_GENERATION = generation
    checked = _CHECKED.get(value)
    if checked is None:
        text = REDACTOR.text(value)
        checked = _CHECKED[value] = text if _SAFE.fullmatch(text) else WITHHELD
    return checked


def safe_attributes(attributes: Mapping[str, object]) -> dict[str, AttrValue]:
    """Numbers and booleans as they are; a string only when, redacted, it still looks like an id; None dropped."""
    out: dict[str, AttrValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[key] = safe_text(value)
        elif isinstance(value, bool | int):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else str(value)
        else:
            out[key] = safe_text(str(value))
    return out


_CHECKED_ATTRIBUTES: dict[tuple[Any, ...], dict[str, AttrValue]] = {}


def checked_attributes(attributes: Mapping[str, object]) -> dict[str, AttrValue]:
    """`safe_attributes`, remembered per set of attributes while the redactor's secrets stay the same (most spans and
    events repeat a few: a tool's name, a route and a status). The dict returned is shared: do not change it."""
    key = (REDACTOR.generation, *attributes.items())
    try:
        checked = _CHECKED_ATTRIBUTES.get(key)
    except TypeError:  # a value that cannot be a key
        return safe_attributes(attributes)
    if checked is None:
        if len(_CHECKED_ATTRIBUTES) >= _CHECKED_MAX:
            _CHECKED_ATTRIBUTES.clear()
        checked = _CHECKED_ATTRIBUTES[key] = safe_attributes(attributes)
    return checked


def account_of(key: str) -> str:
    """The integrated account in a governor key (`base_url#account`, or the account alone)."""
    return key.rpartition("#")[2]


def resource_of(path: str) -> str:
    """The Truto resource a request path is for (`/proxy/{resource}/...`), else `tools` (the catalog)."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "proxy":
        return parts[2]
    return "tools" if path.endswith("/tools") else "other"


def route_of(path: str) -> str:
    """A request path with its ids as `{id}` (`/proxy/sessions/{id}`): few distinct values, no id to check."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "proxy":
        return "/".join([*parts[:3], *("{id}" for _ in parts[3:])])
    return "/tools" if path.endswith("/tools") else "other"
