"""The CLI's output guard: every string leaving the process is redacted, and outside text is printed as text.

- `SafeConsole`: a Rich console that never reads markup in strings (`[/x]` is printed, not parsed) and shows
  control/bidi characters escaped; styled parts are passed as `Text` built with `styled()`.
- `RedactingStream`: wraps `sys.stdout` / `sys.stderr`, so even a library's print or a traceback is redacted.
- `run_guarded(main)`: installs both streams and turns any unexpected crash into one redacted line (exit 1).
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from tools.textsafety import clean_line, clean_text, redact

EXIT_CRASH = 1


class SafeConsole(Console):
    """A Console for text from outside: no markup in strings, secrets redacted, control characters escaped."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        # every str a print or a table cell renders comes through here
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(clean_text(text), **kwargs)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        kwargs["markup"] = False
        kwargs.setdefault("emoji", False)
        super().print(*(_clean_renderable(o) for o in objects), **kwargs)


def _clean_renderable(obj: Any) -> Any:
    if isinstance(obj, Text):
        plain = obj.plain
        cleaned = clean_text(plain)
        if cleaned == plain:
            return obj
        return Text(cleaned, style=obj.style, end=obj.end)
    return obj


def styled(label: str, style: str, message: str = "") -> Text:
    """`label` in `style`, then `message` as plain text (redacted, escaped): the way to color outside text."""
    text = Text(label, style=style)
    if message:
        text.append(" ")
        text.append(clean_line(message))
    return text


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what is written to it before passing it on."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.inner, "errors", None)

    def writable(self) -> bool:
        return True


def install_redacting_streams() -> None:
    """Redact everything written to stdout and stderr from now on (idempotent)."""
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)


def crash_line(error: BaseException) -> str:
    """One redacted, single-line description of an unexpected error."""
    return clean_line(f"unexpected error ({type(error).__name__}): {error}")


def run_guarded(main: Callable[[], Any]) -> None:
    """Run the CLI; an unexpected exception prints one redacted line (the redacted traceback only with -v)."""
    install_redacting_streams()
    try:
        main()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    except Exception as exc:  # the last line of defence: never a traceback with locals, never a secret
        verbose = "-v" in sys.argv or "--verbose" in sys.argv
        if verbose or os.environ.get("COVIU_AGENT_LOG_LEVEL", "").upper() == "DEBUG":
            sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        sys.stderr.write(f"error: {crash_line(exc)}\n")
        raise SystemExit(EXIT_CRASH) from None
