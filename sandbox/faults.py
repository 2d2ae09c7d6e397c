"""Fault injection on proxy calls: provider 429 storms, 502/504s, slow and dropped responses, bad JSON, lost writes,
and the bounds faults: long storms, huge or broken Retry-After values, dripped, oversized and endless bodies.

One `random.Random(seed)` makes every decision, so a run with the same config and requests is reproducible.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from sandbox.config import FaultConfig


class ConnectionDropped(ConnectionError):
    """Raised by the app after a partial body: the connection is cut mid-response."""


@dataclass(frozen=True, slots=True)
class AfterFaults:
    """What happens to a response once the work is done."""

    malformed_json: bool = False
    drop: bool = False
    slow_seconds: float = 0.0
    drip_seconds: float = 0.0
    pad_to: int = 0
    endless: bool = False
    exhausted_reset: str | None = None


class FaultEngine:
    """Draws fault decisions from the configured rates; re-seeds whenever the FaultConfig is replaced."""

    def __init__(self) -> None:
        self._faults: FaultConfig | None = None
        self._rng = random.Random(0)
        self._lost_left = 0
        self._storm_left = 0

    def sync(self, faults: FaultConfig) -> FaultConfig:
        if faults is not self._faults:
            self._faults = faults
            self._rng = random.Random(faults.seed)
            self._lost_left = faults.lost_response_next
            self._storm_left = faults.rate_limit_storm_next
        return faults

    def _hit(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    @staticmethod
    def applies(faults: FaultConfig, resource: str) -> bool:
        return faults.only_resources is None or resource in faults.only_resources

    def storm(self, faults: FaultConfig) -> int | None:
        """Seconds until the provider's window resets when a storm 429 hits this request, else None."""
        if self._storm_left > 0:
            self._storm_left -= 1
            return self._rng.randint(1, 2)
        if self._hit(faults.rate_limit_storm):
            return self._rng.randint(1, 3)
        return None

    def server_error(self, faults: FaultConfig) -> int | None:
        """502 or 504 when this request gets no clean answer upstream, else None."""
        if self._hit(faults.server_errors):
            return self._rng.choice((502, 504))
        return None

    def lose_create(self, faults: FaultConfig) -> bool:
        """Whether this (written) create's response is lost."""
        if self._lost_left > 0:
            self._lost_left -= 1
            return True
        return self._hit(faults.lost_response)

    def after(self, faults: FaultConfig, *, json_get: bool, json: bool = True, binary: bool = False) -> AfterFaults:
        malformed = json_get and self._hit(faults.malformed_json)
        drop = self._hit(faults.drop)
        slow = faults.slow_seconds if self._hit(faults.slow) else 0.0
        return AfterFaults(
            malformed_json=malformed,
            drop=drop,
            slow_seconds=slow,
            drip_seconds=faults.drip_seconds if json else 0.0,
            pad_to=faults.oversized_bytes if json_get else 0,
            endless=faults.endless_media and binary,
            exhausted_reset=faults.exhausted_reset,
        )


FILLER_CHUNK = 64 * 1024
ENDLESS_SAFETY_CAP = 256 * 1024 * 1024  # far past any announced size, far below a disk


async def stream_faulty_body(
    body: bytes,
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    *,
    drip: float = 0.0,
    pad_to: int = 0,
    endless: bool = False,
) -> None:
    """Send a body as the bounds faults shape it (ASGI `http.response.body` messages).

    - `drip`: one byte every `drip` seconds (the read timeout resets on every byte).
    - `pad_to`: a JSON object `{"result": [], "padding": "xxx..."}` of that many bytes, in 64 KiB chunks.
    - `endless`: the body, then filler forever.
    Only the served sandbox (uvicorn) streams these as they are sent; `httpx.ASGITransport` buffers a whole body.
    """

    async def part(data: bytes, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": more})

    if drip > 0:
        for index in range(len(body)):
            await part(body[index : index + 1], index < len(body) - 1)
            await asyncio.sleep(drip)
        return
    if pad_to:
        head, tail = b'{"result":[],"padding":"', b'"}'
        await part(head)
        left = max(0, pad_to - len(head) - len(tail))
        while left > 0:
            size = min(FILLER_CHUNK, left)
            await part(b"x" * size)
            left -= size
            await asyncio.sleep(0)
        await part(tail, False)
        return
    await part(body, endless)
    filler = random.Random(0).randbytes(FILLER_CHUNK)
    sent = 0
    while endless:
        # "forever", to a safety cap: a client that fails to stop must fail its test, not fill the machine's disk
        sent += len(filler)
        last = sent >= ENDLESS_SAFETY_CAP
        await part(filler, not last)
        if last:
            return
        await asyncio.sleep(0)
