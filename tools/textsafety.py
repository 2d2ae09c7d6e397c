"""Text that leaves the process: secrets redacted, control and bidi characters shown escaped.

Two concerns, one module, no dependencies on the rest of the app (tools, graphs and agent all import it):

- `redact(text)` / `redact_value(obj)`: the configured secret values (registered once at start-up with
  `register_secrets`) and anything that looks like a bearer token, an OpenAI-style key or an MCP URL token
  become `[redacted]`. Every output path (stdout, stderr, logs, JSON, checkpoints, errors kept in state)
  goes through this one step.
- `safe_text(s)` / `safe_line(s)`: C0/C1 control characters (except newline and tab in `safe_text`),
  DEL and the bidi overrides/isolates/marks are replaced by a visible escape (`\\x1b`, `\\u202e`), so
  text from a user or the upstream cannot move the cursor, forge a line or reorder what a reader sees.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4

# Things that look like credentials wherever they appear (an upstream echoing a header, an SDK error).
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (
        re.compile(r"(?i)\b((?:access_|api_|refresh_)?token|api[_-]?key)(=|[\"']\s*:\s*[\"'])[A-Za-z0-9._~+/-]{8,}"),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"(?i)(/mcp/|%2Fmcp%2F)[A-Za-z0-9._~%-]{8,}"), rf"\1{REDACTED}"),
    # the password of a URL's userinfo (scheme://user:password@host), whatever the scheme
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@\"'<>]*):[^/\s@\"'<>]+@"), rf"\1:{REDACTED}@"),
)
# What each pattern cannot match without (in lower case): a text holding none of a pattern's words skips it. Most
# text holds none (every row and response of an audit passes here), and `in` over the lower-cased text is one fast
# scan where the patterns are five slower ones (the last tries at every word). With IGNORECASE four non-ASCII
# letters match ASCII ones (dotted and dotless i, the long s, the Kelvin sign): they are mapped first.
_GATES: tuple[tuple[str, ...], ...] = (("bearer", "basic"), ("token", "key"), ("sk-",), ("mcp",), ("://",))
assert len(_GATES) == len(_PATTERNS)
_GATE_WORDS = tuple(word for words in _GATES for word in words)
_IGNORECASE_ASCII = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


_IGNORECASE_SPECIAL = tuple(chr(code) for code in _IGNORECASE_ASCII)
_IGNORECASE_SPECIAL_UTF8 = tuple(letter.encode() for letter in _IGNORECASE_SPECIAL)
_GATES_BYTES = tuple(tuple(word.encode() for word in words) for words in _GATES)


def _gate_text(text: str) -> str:
    if text.isascii() or not any(letter in text for letter in _IGNORECASE_SPECIAL):  # `translate` is slow
        return text.lower()
    return text.translate(_IGNORECASE_ASCII).lower()


def _patterns_for(text: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    """The credential patterns that may match `text` (a pattern is skipped only when its words are absent)."""
    lower = _gate_text(text)
    return tuple(p for p, words in zip(_PATTERNS, _GATES, strict=True) if any(w in lower for w in words))


# C0 (minus \t \n), DEL, C1, the bidi controls (Unicode's Bidi_Control: ALM, LRM/RLM, embeddings/overrides,
# isolates) and the line/paragraph separators (line breaks to `str.splitlines`, editors and JavaScript).
_UNSAFE_ANY = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_MULTILINE = re.compile(f"[{_UNSAFE_ANY}]")
_UNSAFE_LINE = re.compile(f"[{_UNSAFE_ANY}\t\n]")
# Only non-ASCII unsafe characters survive json.dumps(ensure_ascii=False): escape them inside JSON text.
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if match.group(0) == "\n":
        return "\\n"
    if match.group(0) == "\t":
        return "\\t"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """`text` with control and bidi characters shown escaped; newlines and tabs kept (for multi-line text)."""
    return _UNSAFE_MULTILINE.sub(_escape, text)


def safe_line(text: str) -> str:
    """Like `safe_text`, but newlines and tabs are escaped too: one value, one line (names, ids, table cells)."""
    return _UNSAFE_LINE.sub(_escape, text)


def has_unsafe_chars(text: str) -> bool:
    """Whether a one-line value (a display name, an id) carries control or bidi characters (tab, newline too)."""
    return _UNSAFE_LINE.search(text) is not None


def safe_json(text: str) -> str:
    """A JSON document with C1/DEL/bidi characters written as `\\uXXXX` escapes: the same data, safe to print."""
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def _json_plain(secrets: Iterable[str]) -> bool:
    return all(json.dumps(secret, ensure_ascii=False)[1:-1] == secret for secret in secrets)


class Redactor:
    """The secrets this process knows, the credential patterns, and the values it may show on purpose."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self._secret_bytes: tuple[bytes, ...] = ()
        self._revealed: tuple[str, ...] = ()
        self._json_plain = True  # no secret holds a character JSON escapes (`may_change_json` relies on it)
        self._generation = 0

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    @property
    def generation(self) -> int:
        """Changes whenever what `text` does changes (a secret registered or forgotten, a value revealed or not):
        a cache of redacted values is good while it stays the same."""
        return self._generation

    def register(self, values: Iterable[str | None]) -> None:
        """Add secret values (longest first, so a URL is replaced before the token inside it), and the forms an
        upstream may echo them in: URL-encoded (a URL or token in a query parameter of an error message)."""
        with self._lock:
            found = set(self._secrets)
            for value in values:
                if value and len(value.strip()) >= MIN_SECRET_LENGTH:
                    for form in (value, value.strip()):
                        found.update((form, quote(form, safe=""), quote(form), quote_plus(form)))
            self._secrets = tuple(sorted(found, key=len, reverse=True))
            self._secret_bytes = tuple(s.encode() for s in self._secrets)
            self._json_plain = _json_plain(self._secrets)
            self._generation += 1

    def keep_only(self, secrets: tuple[str, ...]) -> None:
        """Put the registered secrets back to `secrets` (a value of `secrets` read before; tests: each test's
        secrets end with it, so thousands of tests do not make every redaction check thousands of values)."""
        with self._lock:
            self._secrets = secrets
            self._secret_bytes = tuple(s.encode() for s in secrets)
            self._json_plain = _json_plain(secrets)
            self._generation += 1

    def forget(self) -> None:
        """Drop every registered secret (tests)."""
        with self._lock:
            self._secrets, self._secret_bytes, self._revealed = (), (), ()
            self._json_plain = True
            self._generation += 1

    @contextmanager
    def revealing(self, value: str) -> Iterator[None]:
        """Let this exact value through while it is printed on purpose (`mcp create` shows its new URL once)."""
        with self._lock:
            self._revealed = (*self._revealed, value)
            self._generation += 1
        try:
            yield
        finally:
            with self._lock:
                items = list(self._revealed)
                items.remove(value)
                self._revealed = tuple(items)
                self._generation += 1

    def text(self, text: str) -> str:
        """`text` with every secret value and credential-looking token replaced by `[redacted]`."""
        if not text:
            return text
        kept: list[str] = []
        for value in self._revealed:
            if value and value in text:
                kept.append(value)
                text = text.replace(value, f"\x00{len(kept) - 1}\x00")
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _patterns_for(text):
            text = pattern.sub(replacement, text)
        for index, value in enumerate(kept):
            text = text.replace(f"\x00{index}\x00", value)
        return text

    def needs(self, data: bytes) -> bool:
        """Whether serialized bytes may hold something to redact (a quick check before a structural pass)."""
        if any(secret in data for secret in self._secret_bytes):
            return True
        if not any(letter in data for letter in _IGNORECASE_SPECIAL_UTF8):
            lower = data.lower()  # ASCII letters only, which is all the gates need here (fast on large blobs)
            gated = [p for (p, _), words in zip(_PATTERNS, _GATES_BYTES, strict=True) if any(w in lower for w in words)]
            if not gated:
                return False
            text = data.decode("utf-8", "replace")
            return any(pattern.search(text) for pattern in gated)
        return self.needs_text(data.decode("utf-8", "replace"))

    def needs_text(self, text: str) -> bool:
        """`needs` for text: whether `text` may hold a secret value or a credential-looking token."""
        if any(secret in text for secret in self._secrets):
            return True
        return any(pattern.search(text) for pattern, _ in _patterns_for(text))

    def may_change_json(self, text: str) -> bool:
        """Whether `value(obj)` may change anything in `obj`, given `text = json.dumps(obj, ensure_ascii=False)`:
        False only when no registered secret and none of the patterns' words appear in it (JSON escapes none of
        those words' characters, so a string inside holding one shows it). A secret that JSON would escape (a
        quote, a backslash, a control character) makes the answer True: the structural pass decides."""
        if not self._json_plain or any(secret in text for secret in self._secrets):
            return True
        lower = _gate_text(text)
        return any(word in lower for word in _GATE_WORDS)

    def mask_bytes(self, data: bytes) -> bytes:
        """Overwrite secret values in serialized bytes with `*` of the same length (lengths in the encoding hold)."""
        for secret in self._secret_bytes:
            if secret in data:
                data = data.replace(secret, b"*" * len(secret))
        return data

    def value(self, obj: Any) -> Any:
        """`obj` with every string inside it redacted; exceptions become `"ClassName: redacted message"`."""
        return _redact_value(self, obj, 0)


def error_record(error: BaseException) -> str:
    """How an error is kept (state, checkpoints, JSON): its class name and its redacted message, never the object."""
    message = redact(str(error)) or redact(repr(error))
    return f"{type(error).__name__}: {message}"


_MAX_DEPTH = 64


def _redact_value(redactor: Redactor, obj: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return obj
    if isinstance(obj, str):
        return redactor.text(obj)
    if obj is None or isinstance(obj, bool | int | float | bytes | bytearray):
        return obj
    if isinstance(obj, BaseException):
        return error_record(obj)
    nested = depth + 1
    if isinstance(obj, Mapping):
        items = {_redact_value(redactor, k, nested): _redact_value(redactor, v, nested) for k, v in obj.items()}
        try:
            return type(obj)(items)  # type: ignore[call-arg]
        except TypeError:
            return items
    if isinstance(obj, tuple):
        values = [_redact_value(redactor, v, nested) for v in obj]
        if hasattr(obj, "_fields"):  # a NamedTuple
            return type(obj)(*values)
        return tuple(values)
    if isinstance(obj, list):
        return [_redact_value(redactor, v, nested) for v in obj]
    if isinstance(obj, set | frozenset):
        return type(obj)(_redact_value(redactor, v, nested) for v in obj)
    model_fields = getattr(type(obj), "model_fields", None)
    if isinstance(model_fields, Mapping) and hasattr(obj, "model_copy"):  # pydantic models, LangChain messages
        update = {}
        for name in model_fields:
            current = getattr(obj, name, None)
            cleaned = _redact_value(redactor, current, nested)
            if cleaned is not current and cleaned != current:
                update[name] = cleaned
        return obj.model_copy(update=update) if update else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            current = getattr(obj, f.name, None)
            cleaned = _redact_value(redactor, current, nested)
            if cleaned is not current and cleaned != current:
                changes[f.name] = cleaned
        if not changes:
            return obj
        try:
            return dataclasses.replace(obj, **changes)
        except (TypeError, ValueError):
            return obj
    return obj


REDACTOR = Redactor()


def register_secrets(values: Iterable[str | None]) -> None:
    """Register the configured secret values (the settings' tokens, keys and URLs) for every output path."""
    REDACTOR.register(values)


def redact(text: str) -> str:
    return REDACTOR.text(text)


def redact_value(obj: Any) -> Any:
    return REDACTOR.value(obj)


def clean_text(text: str) -> str:
    """Redacted and escaped: what a terminal or a report may show of text from outside (multi-line kept)."""
    return safe_text(redact(text))


def clean_line(text: str) -> str:
    """Redacted and escaped to a single line."""
    return safe_line(redact(text))
