"""Recordings and submission files as bytes: deterministic WebM generated from a seed, and HTTP ranges.

Nothing is stored but a seed and a size; each file is a valid EBML header, a Segment and a Void filler.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

EBML_MAGIC = b"\x1a\x45\xdf\xa3"


def _element(element_id: bytes, payload: bytes, *, long_size: bool = False) -> bytes:
    return element_id + _size_vint(len(payload), long_size) + payload


def _size_vint(size: int, long_size: bool) -> bytes:
    """An EBML size: one byte (0x80 | size) when it fits, as encoders write headers, or 8 bytes."""
    if size < 0x7F and not long_size:
        return bytes([0x80 | size])
    return b"\x01" + size.to_bytes(7, "big")


def _uint(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def webm_bytes(seed: int, size: int) -> bytes:
    """`size` bytes of a syntactically valid WebM (EBML) file, identical for the same seed and size."""
    header = _element(
        EBML_MAGIC,
        _element(b"\x42\x86", _uint(1))  # EBMLVersion
        + _element(b"\x42\xf7", _uint(1))  # EBMLReadVersion
        + _element(b"\x42\xf2", _uint(4))  # EBMLMaxIDLength
        + _element(b"\x42\xf3", _uint(8))  # EBMLMaxSizeLength
        + _element(b"\x42\x82", b"webm")  # DocType
        + _element(b"\x42\x87", _uint(4))  # DocTypeVersion
        + _element(b"\x42\x85", _uint(2)),  # DocTypeReadVersion
    )
    segment_id = b"\x18\x53\x80\x67"
    void_id = b"\xec"
    overhead = len(header) + len(segment_id) + 8 + len(void_id) + 8
    filler = random.Random(seed).randbytes(max(0, size - overhead))
    segment = _element(segment_id, _element(void_id, filler, long_size=True), long_size=True)
    return (header + segment)[: max(size, 0)] if size < overhead else header + segment


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range `[first, last]` of a file of `total` bytes."""

    first: int
    last: int
    total: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self.total}"


class RangeNotSatisfiable(ValueError):
    """A `Range` header that selects nothing in the file."""


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str | None, total: int) -> ByteRange | None:
    """`bytes=a-`, `bytes=a-b` or `bytes=-n` → a range; None for no (or an unsupported) Range header.

    Raises `RangeNotSatisfiable` when the range starts past the end of the file.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None  # multiple ranges or another unit: serve the whole file, as servers may
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        suffix = int(last_text)
        if suffix == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, total - suffix), total - 1, total)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # syntactically invalid: ignored, the whole file is served
    if first >= total:
        raise RangeNotSatisfiable(header)
    last = total - 1 if not last_text else min(int(last_text), total - 1)
    return ByteRange(first, last, total)
