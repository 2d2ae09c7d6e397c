"""The audit's progress, where a person or a cron log can see it.

At a terminal: a progress bar on stderr with done/total, elapsed time and ETA; log lines are printed above it (the
log handler writes through the bar's console while it is shown). Elsewhere (cron, a pipe): an INFO log line every
10% or every 30 s, whichever comes first: done/total, rate and ETA.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

from rich.console import Console

log = logging.getLogger("agent.progress")

LOG_EVERY_SECONDS = 30.0
LOG_EVERY_FRACTION = 0.10
MIN_PACE_SECONDS = 1.0  # a pace measured over less than this is noise


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class AuditProgress:
    """`services.on_progress` for the audit: ("sessions", n, n) sets the total; ("cached", k, _) adds k done from
    the summary cache (no request: they take no time, so they count in done but not in the pace or the ETA);
    ("summaries", k, _) adds k fetched."""

    def __init__(
        self, console: Console, *, clock: Callable[[], float] = time.monotonic, terminal: bool | None = None
    ) -> None:
        self.console = console
        self.clock = clock
        self.terminal = console.is_terminal if terminal is None else terminal
        self.total = 0
        self.done = 0
        self.cached = 0
        self.started = clock()
        self._logged_at = self.started
        self._logged_step = 0
        self._swapped: list[tuple[logging.StreamHandler[IO[str]], IO[str]]] = []
        self._bar: Any = None
        self._task: Any = None

    # --- the callback -------------------------------------------------------------------------------

    def __call__(self, kind: str, count: int, total: int) -> None:
        if kind == "sessions":
            self.total = total
            self.started = self._logged_at = self.clock()
            if self._bar is not None:
                self._bar.update(self._task, total=total, description=f"summaries of {total} sessions")
            return
        if kind == "cached":
            self.cached += count
            self.done += count
            if self._bar is not None:  # the bar paces the summaries still to fetch
                to_fetch = max(self.total - self.cached, 0)
                self._bar.update(
                    self._task, total=to_fetch, description=f"summaries to fetch ({self.cached} of {self.total} cached)"
                )
            return
        self.done += count
        if self._bar is not None:
            self._bar.advance(self._task, count)
        elif not self.terminal:
            self._maybe_log()

    def line(self) -> str:
        """`250/500 summaries (50%; 100 cached), 4.8/s, about 52 s left`: the pace and the ETA of the fetched ones
        only, once there is a second of them to measure (a burst would promise "about 0 s left")."""
        elapsed = self.clock() - self.started
        fetched = self.done - self.cached
        text = f"{self.done}/{self.total} summaries"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%" + (f"; {self.cached} cached)" if self.cached else ")")
        if fetched > 0 and elapsed >= MIN_PACE_SECONDS:
            rate = fetched / elapsed
            text += f", {rate:.1f}/s"
            if self.total > self.done:
                text += f", about {_duration((self.total - self.done) / rate)} left"
        return text

    def _maybe_log(self) -> None:
        now = self.clock()
        step = int(self.done / self.total / LOG_EVERY_FRACTION) if self.total else 0
        if step > self._logged_step or now - self._logged_at >= LOG_EVERY_SECONDS:
            self._logged_step = max(step, self._logged_step)
            self._logged_at = now
            log.info("audit progress: %s", self.line())

    # --- the bar and the log lines above it ---------------------------------------------------------

    def __enter__(self) -> AuditProgress:
        if not self.terminal:
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            redirect_stderr=True,
        )
        self._task = self._bar.add_task("summaries", total=self.total or None)
        original = sys.stderr
        self._bar.start()
        # the bar now owns stderr (sys.stderr is its proxy): log handlers write through it, above the bar
        if sys.stderr is not original:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is original:
                    handler.setStream(sys.stderr)
                    self._swapped.append((handler, original))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is None:
            return
        for handler, stream in self._swapped:
            handler.setStream(stream)
        self._swapped.clear()
        self._bar.stop()
        self._bar = None
