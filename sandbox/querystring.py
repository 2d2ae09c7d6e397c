"""Query strings as Truto sends them, bracket syntax included (`a[b]=1`, `arr[]=1&arr[]=2`).

Plain keys give strings; a repeated plain key gives a list; bracketed keys give nested dicts and lists.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def parse_query(raw: str) -> dict[str, Any]:
    """Parse a raw query string into nested dicts/lists of strings."""
    result: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        head, _, rest = key.partition("[")
        if not rest or not head:
            _put_plain(result, key, value)
            continue
        segments = _BRACKETS.findall("[" + rest)
        _put_nested(result, head, segments, value)
    return result


def _put_plain(target: dict[str, Any], key: str, value: str) -> None:
    existing = target.get(key)
    if existing is None:
        target[key] = value
    elif isinstance(existing, list):
        existing.append(value)
    else:
        target[key] = [existing, value]


def _put_nested(target: dict[str, Any], head: str, segments: list[str], value: str) -> None:
    node: Any = target
    key: str | int = head
    for segment in segments:
        child_is_list = segment == "" or segment.isdigit()
        container = _child(node, key, [] if child_is_list else {})
        if isinstance(container, list):
            if segment == "":
                node, key = container, len(container)
                continue
            if segment.isdigit():
                node, key = container, int(segment)
                continue
            # A named key under what started as a list: turn the list into a dict.
            container = {str(i): item for i, item in enumerate(container)}
            _assign(node, key, container)
        node, key = container, segment
    _assign(node, key, value)


def _child(node: Any, key: str | int, default: dict[str, Any] | list[Any]) -> Any:
    if isinstance(node, list):
        assert isinstance(key, int)
        if key < len(node) and isinstance(node[key], dict | list):
            return node[key]
        _assign(node, key, default)
        return default
    current = node.get(key)
    if isinstance(current, dict | list):
        return current
    node[key] = default
    return default


def _assign(node: Any, key: str | int, value: Any) -> None:
    if isinstance(node, list):
        assert isinstance(key, int)
        while len(node) <= key:
            node.append(None)
        node[key] = value
    else:
        node[key] = value
