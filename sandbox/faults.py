"""Fault injection on proxy calls: provider 429 storms, 502/504s, slow and dropped responses, bad JSON, lost writes.

One `random.Random(seed)` makes every decision, so a run with the same config and requests is reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sandbox.config import FaultConfig


class ConnectionDropped(ConnectionError):
    """Raised by the app after a partial body: the connection is cut mid-response."""


@dataclass(frozen=True, slots=True)
class AfterFaults:
    """What happens to a response once the work is done."""

    malformed_json: bool = False
    drop: bool = False
    slow_seconds: float = 0.0


class FaultEngine:
    """Draws fault decisions from the configured rates; re-seeds whenever the FaultConfig is replaced."""

    def __init__(self) -> None:
        self._faults: FaultConfig | None = None
        self._rng = random.Random(0)
        self._lost_left = 0

    def sync(self, faults: FaultConfig) -> FaultConfig:
        if faults is not self._faults:
            self._faults = faults
            self._rng = random.Random(faults.seed)
            self._lost_left = faults.lost_response_next
        return faults

    def _hit(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    @staticmethod
    def applies(faults: FaultConfig, resource: str) -> bool:
        return faults.only_resources is None or resource in faults.only_resources

    def storm(self, faults: FaultConfig) -> int | None:
        """Seconds until the provider's window resets when a storm 429 hits this request, else None."""
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

    def after(self, faults: FaultConfig, *, json_get: bool) -> AfterFaults:
        malformed = json_get and self._hit(faults.malformed_json)
        drop = self._hit(faults.drop)
        slow = faults.slow_seconds if self._hit(faults.slow) else 0.0
        return AfterFaults(malformed_json=malformed, drop=drop, slow_seconds=slow)
