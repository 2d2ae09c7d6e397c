"""Streaming one file to disk: `<path>.part` appended in chunks (never whole in memory, never to a model),
resumed with Range and If-Range, bounded in size and in how slowly it may arrive, and never stitched across versions."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tools.errors import CoviuAgentError, TransportError, TrutoError
from tools.private_files import NOFOLLOW, owner_only_opener, write_private
from tools.toolbox import Toolbox
from workers.recordings.media import MediaItem

log = logging.getLogger(__name__)

# A download that brings fewer than this many bytes in any window of this many seconds has stalled: a server dripping
# a byte at a time (each byte resets the read timeout) cannot hold the worker for the length of a recording.
STALL_WINDOW_SECONDS = 60.0
STALL_MIN_BYTES = 64 * 1024
# A body with no announced size (no Content-Length, no size in the metadata) stops at this many bytes.
MAX_UNANNOUNCED_BYTES = 16 * 1024**3
# Free space a download must leave on the target disk.
FREE_SPACE_RESERVE = 256 * 1024**2

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class DownloadError(CoviuAgentError):
    """A file could not be fetched intact (size mismatch, an unexpected range)."""


class ChangedUpstream(DownloadError):
    """The remote file is not the one a `.part` holds the start of: its bytes are never stitched to the new ones."""


_REPR_DIGEST = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]+):", re.IGNORECASE)
_LEGACY_DIGEST = re.compile(r"(?:^|,)\s*sha-256\s*=\s*([A-Za-z0-9+/=]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Validators:
    """What the server said identifies the file a `.part` holds the start of (kept beside it in `.part.meta`):
    its ETag, Last-Modified, total length, and the whole file's SHA-256 where the server gives one (RFC 9530
    `Repr-Digest`, or the older `Digest`). A resume sends `If-Range` with them; a change starts again from zero."""

    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str], total: int | None) -> Validators:
        return cls(
            etag=headers.get("etag") or None,
            last_modified=headers.get("last-modified") or None,
            total=total,
            sha256=_digest_hex(headers.get("repr-digest"), _REPR_DIGEST)
            or _digest_hex(headers.get("digest"), _LEGACY_DIGEST),
        )

    def if_range(self) -> str | None:
        """A strong ETag, else Last-Modified (a weak ETag may not be used in If-Range: RFC 9110 13.1.5)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def differs(self, other: Validators) -> bool:
        """Some fact both know is not the same: another version of the file."""
        pairs = zip(asdict(self).values(), asdict(other).values(), strict=True)
        return any(a is not None and b is not None and a != b for a, b in pairs)

    def merged(self, newer: Validators) -> Validators:
        return Validators(**{k: v if v is not None else asdict(self)[k] for k, v in asdict(newer).items()})

    @classmethod
    def load(cls, path: Path) -> Validators | None:
        try:
            with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW), "r", encoding="utf-8") as handle:
                raw = json.load(handle)
            return cls(**{k: raw.get(k) for k in cls.__dataclass_fields__}) if isinstance(raw, dict) else None
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self)))


def _digest_hex(header: str | None, pattern: re.Pattern[str]) -> str | None:
    match = pattern.search(header or "")
    if match is None:
        return None
    try:
        return base64.b64decode(match.group(1), validate=True).hex()
    except ValueError:
        return None


# Every file the worker opens is opened without following a symlink (NOFOLLOW: a link planted at a `.part`, a target
# or the manifest is never written through; tools/private_files.py writes by rename, which replaces a link).


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW), "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


async def fetch(
    toolbox: Toolbox,
    item: MediaItem,
    part: Path,
    expected: int | None,
    state: dict[str, Any],
    *,
    max_unannounced_bytes: int = MAX_UNANNOUNCED_BYTES,
    stall_seconds: float = STALL_WINDOW_SECONDS,
) -> None:
    """One attempt: GET (with `Range: bytes=<size>-` and `If-Range` when a `.part` exists), appending chunks to
    `.part`. A `.part` of another version of the file (the server's validators, total or digest differ) is
    dropped and the file fetched from zero in the same attempt: never stitched."""
    try:
        await _fetch_once(toolbox, item, part, expected, state, max_unannounced_bytes, stall_seconds)
    except ChangedUpstream as exc:
        log.info("%s: %s; downloading it from zero", part.name, exc)
        part.unlink(missing_ok=True)
        part.with_name(part.name + ".meta").unlink(missing_ok=True)
        state.clear()
        await _fetch_once(toolbox, item, part, expected, state, max_unannounced_bytes, stall_seconds)


async def _fetch_once(
    toolbox: Toolbox,
    item: MediaItem,
    part: Path,
    expected: int | None,
    state: dict[str, Any],
    max_unannounced_bytes: int,
    stall_seconds: float,
) -> None:
    spec = toolbox.executor.validate(item.tool, item.arguments)
    record_id, query, _ = spec.split(item.arguments)
    meta = part.with_name(part.name + ".meta")
    offset = part.stat().st_size if part.is_file() and not part.is_symlink() else 0
    if expected is not None and offset > expected:
        part.unlink()
        offset = 0
    seen = Validators.load(meta) if offset else None
    headers = {"Accept": "*/*"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if seen is not None and seen.if_range():
            headers["If-Range"] = str(seen.if_range())  # the Range holds only for the version we started
    client = toolbox.client
    path = client.proxy_path(spec.resource, spec.method, record_id)
    try:
        async with client.stream_proxy(
            spec.resource, spec.method, record_id=record_id, query=query, headers=headers
        ) as response:
            state["content_type"] = response.headers.get("content-type", "").split(";")[0].strip() or None
            mode = "wb"
            if offset and response.status_code == 206:
                start, total = _content_range(response.headers.get("content-range"))
                if start != offset:
                    raise DownloadError(f"asked for bytes from {offset}, the server sent from {start}")
                now = Validators.of(response.headers, total)
                if seen is not None and seen.differs(now):
                    raise ChangedUpstream("the remote file changed since the partial download")
                if seen is None and now.sha256 is None:
                    # no `.part.meta` (missing or unreadable): nothing says which version the `.part` holds,
                    # and no digest will catch a stitch
                    raise ChangedUpstream("nothing records which version the partial download holds")
                if expected is not None and total is not None and total != expected:
                    raise ChangedUpstream(f"the remote file is {total} bytes, not the {expected} expected")
                mode = "ab"
                state["resumed"] = True
                state["total"] = total
                now = seen.merged(now) if seen is not None else now
            else:
                if offset:
                    log.info(
                        "the server ignored Range or If-Range (status %d); downloading from the start",
                        response.status_code,
                    )
                length = response.headers.get("content-length")
                state["total"] = int(length) if length and length.isdigit() else None
                state["resumed"] = False
                now = Validators.of(response.headers, state["total"])
            state["sha256"] = now.sha256
            now.save(meta)  # before the first byte: an interrupted download knows which version it holds
            bound = ByteBound.for_response(response, offset, expected, state, part, max_unannounced_bytes)
            floor = ThroughputFloor(toolbox.clock.monotonic, path, stall_seconds)
            try:
                handle = open(part, mode, opener=owner_only_opener)  # noqa: SIM115 (closed below)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise DownloadError(f"{part.name} is a symlink: downloads never follow one") from None
                raise
            with handle:
                # Each piece as it arrives (no chunk size: httpx would buffer pieces into chunks of that size,
                # and the floor would only see a drip once a whole chunk had come, however long that took).
                async for chunk in response.aiter_bytes():
                    bound.take(len(chunk))  # stops as soon as the bytes exceed the announced size
                    floor.take(len(chunk))  # stops a download that has stalled (kept as .part: resumed later)
                    handle.write(chunk)
                    state["fetched"] = int(state.get("fetched", 0)) + len(chunk)
    except httpx.TransportError as exc:  # mid-body: the client maps errors only until the headers arrive
        raise TransportError(
            "connection dropped", f"{type(exc).__name__} while streaming", method="GET", path=path
        ) from exc
    except TrutoError as exc:
        if exc.status_code != 416 or not offset:
            raise
        total = _unsatisfied_total(exc.headers.get("content-range"))
        if total is not None and total == offset:
            state.update({"total": total, "already_complete": True, "resumed": False})
            state["sha256"] = seen.sha256 if seen is not None else None
            return
        part.unlink(missing_ok=True)  # the partial file does not match the remote one: start over
        meta.unlink(missing_ok=True)
        raise DownloadError(f"range from {offset} not satisfiable (remote size {total}); restarting next run") from exc


def _content_range(header: str | None) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.match(header or "")
    if match is None:
        raise DownloadError(f"a 206 without a usable Content-Range ({header!r})")
    total = match.group(3)
    return int(match.group(1)), (int(total) if total != "*" else None)


def _unsatisfied_total(header: str | None) -> int | None:
    match = _UNSATISFIED_RANGE.match(header or "")
    return int(match.group(1)) if match else None


class DownloadTooLargeError(DownloadError):
    """The server sent more bytes than it (or the metadata) announced: stopped, the partial file removed."""


def ensure_free_space(directory: Path, needed: int | None, what: str) -> None:
    """Refuse (before any byte is written) a download that would not fit on the target disk."""
    if needed is None or needed <= 0:
        return
    free = shutil.disk_usage(directory).free
    if needed + FREE_SPACE_RESERVE > free:
        raise DownloadError(
            f"{what}: needs {needed} bytes but the disk holding {directory} has {free} free "
            f"(keeping {FREE_SPACE_RESERVE} spare); not downloaded"
        )


class ThroughputFloor:
    """Ends a download that brings fewer than `STALL_MIN_BYTES` in a window of `window` seconds (default
    `STALL_WINDOW_SECONDS`; `COVIU_AGENT_DOWNLOAD_STALL_SECONDS`). Transient: the `.part` is kept and the retry
    resumes it with `Range`."""

    def __init__(self, monotonic: Callable[[], float], path: str, window: float = STALL_WINDOW_SECONDS) -> None:
        self.monotonic = monotonic
        self.path = path
        self.window = window
        self.window_start = monotonic()
        self.window_bytes = 0

    def take(self, count: int) -> None:
        self.window_bytes += count
        now = self.monotonic()
        if now - self.window_start < self.window:
            return
        if self.window_bytes < STALL_MIN_BYTES:
            raise TransportError(
                "stalled",
                f"{self.window_bytes} bytes in {now - self.window_start:.0f} s (the floor is {STALL_MIN_BYTES} bytes "
                f"per {self.window:g} s; COVIU_AGENT_DOWNLOAD_STALL_SECONDS)",
                method="GET",
                path=self.path,
            )
        self.window_start, self.window_bytes = now, 0


@dataclass
class ByteBound:
    """How many bytes one response may write: the smallest announced size, or a cap when none is announced."""

    limit: int
    announced: bool
    what: str
    taken: int = 0

    @classmethod
    def for_response(
        cls,
        response: httpx.Response,
        offset: int,
        expected: int | None,
        state: Mapping[str, Any],
        part: Path,
        unannounced_cap: int,
    ) -> ByteBound:
        base = offset if state.get("resumed") else 0
        announced: list[int] = []
        length = response.headers.get("content-length", "")
        if length.isdigit():
            announced.append(int(length))
        if isinstance(state.get("total"), int):
            announced.append(int(state["total"]) - base)
        if expected is not None:
            announced.append(expected - base)
        if announced:
            limit = max(0, min(announced))
            ensure_free_space(part.parent, limit, part.name)
            return cls(limit, True, part.name)
        free = shutil.disk_usage(part.parent).free - FREE_SPACE_RESERVE
        return cls(max(0, min(unannounced_cap, free)), False, part.name)

    def take(self, count: int) -> None:
        self.taken += count
        if self.taken > self.limit:
            said = "announced" if self.announced else "allowed for a body of unannounced size (or free on disk)"
            raise DownloadTooLargeError(
                f"{self.what}: the server sent more than the {self.limit} bytes {said}; stopped, and the partial "
                "file was removed as corrupt"
            )
