"""Truto's list paging over Coviu's lists: `limit` (default 25, max 200) and an opaque `next_cursor`.

Cursors are URL-safe base64 of a small JSON object: a keyset position for sessions and submissions, an offset otherwise.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

from sandbox.errors import TrutoError

DEFAULT_LIMIT = 25
MAX_LIMIT = 200

T = TypeVar("T")


def encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: Any, resource: str) -> dict[str, Any] | None:
    """The cursor's payload, or None when no cursor was sent; 400 when it is not one of ours."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TrutoError(400, "`next_cursor` must be a string")
    try:
        padded = value + "=" * (-len(value) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise TrutoError(400, f"invalid `next_cursor`: {value!r}") from exc
    if not isinstance(payload, dict) or payload.get("r") != resource:
        raise TrutoError(400, f"invalid `next_cursor` for resource {resource}: {value!r}")
    return payload


def parse_limit(value: Any) -> int:
    """`limit` as Truto takes it: default 25, at most 200 (larger values are capped)."""
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        limit = int(str(value))
    except ValueError as exc:
        raise TrutoError(400, f"`limit` must be a positive integer, got {value!r}") from exc
    if limit < 1:
        raise TrutoError(400, f"`limit` must be a positive integer, got {value!r}")
    return min(limit, MAX_LIMIT)


def page_by_key(
    entries: Iterable[tuple[tuple[int, int], T]], limit: int, cursor_base: dict[str, Any]
) -> tuple[list[T], str | None]:
    """One page from a keyset-ordered stream; the cursor remembers the last position returned."""
    iterator: Iterator[tuple[tuple[int, int], T]] = iter(entries)
    taken = list(islice(iterator, limit + 1))
    page = taken[:limit]
    if len(taken) <= limit or not page:
        return [item for _, item in page], None
    last_key = page[-1][0]
    return [item for _, item in page], encode_cursor({**cursor_base, "k": list(last_key)})


def page_by_offset(
    items: Sequence[T], limit: int, cursor: dict[str, Any] | None, resource: str
) -> tuple[list[T], str | None]:
    """One page of a short list by position."""
    offset = 0
    if cursor is not None:
        offset = cursor.get("o", 0)
        if not isinstance(offset, int) or offset < 0:
            raise TrutoError(400, f"invalid `next_cursor` for resource {resource}")
    page = list(items[offset : offset + limit])
    more = offset + limit < len(items)
    return page, encode_cursor({"r": resource, "o": offset + limit}) if more else None


def cursor_key(cursor: dict[str, Any] | None, mode: str, resource: str) -> tuple[int, int] | None:
    """The keyset position in a cursor, checked against the ordering of this request."""
    if cursor is None:
        return None
    key = cursor.get("k")
    if cursor.get("m") != mode or not isinstance(key, list) or len(key) != 2:
        raise TrutoError(400, f"`next_cursor` does not match this {resource} query (order or filters changed)")
    first, second = key
    if not isinstance(first, int) or not isinstance(second, int):
        raise TrutoError(400, f"invalid `next_cursor` for resource {resource}")
    return first, second
