"""Typed errors for everything that can go wrong between the app and Truto.

Each error says whether retrying can help and, for writes, whether the write may already have happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

# Transport-level failures that happen before a response arrives.
RETRYABLE_STATUSES = frozenset({429, 502, 504})


class CoviuAgentError(Exception):
    """Base class for the app's own errors."""


class RunInputError(CoviuAgentError, ValueError):
    """A run cannot start with what it was given (an id, a window, a patient name, a tool); nothing was sent."""


class MissingSettingError(RunInputError):
    """A setting the run needs is not set (COVIU_TEAM_ID, ...); the message names it; nothing was sent."""


class ToolArgumentError(CoviuAgentError, ValueError):
    """Arguments for a tool were invalid; nothing was sent."""

    def __init__(self, tool: str, field: str, expected: str, got: Any = None) -> None:
        self.tool = tool
        self.field = field
        self.expected = expected
        self.got = got
        where = f"`{field}`" if field else "the arguments"
        super().__init__(f"{tool}: {where}: expected {expected}")


class UnknownToolError(CoviuAgentError, KeyError):
    """The catalog has no tool of that name (or resource/method)."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(name)

    def __str__(self) -> str:
        return f"no tool named {self.name!r} in this account's catalog ({len(self.known)} tools known)"


class TrutoError(CoviuAgentError):
    """An error response from Truto (or from Coviu passed through by Truto)."""

    def __init__(
        self,
        status_code: int,
        error: str,
        message: str,
        *,
        truto_is_remote_error: bool = False,
        raw_response: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str = "",
        path: str = "",
        insight: Any = None,
    ) -> None:
        self.status_code = status_code
        self.error = error
        self.message = message
        self.truto_is_remote_error = truto_is_remote_error
        self.raw_response = raw_response
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.method = method
        self.path = path
        self.insight = insight
        super().__init__(self.describe())

    @property
    def provider_message(self) -> str:
        """The provider's own message when Truto's is empty (Truto passes it in raw_response)."""
        if self.message:
            return self.message
        raw = self.raw_response
        if isinstance(raw, dict):
            err = raw.get("error")
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
            if isinstance(err, str):
                return err
            if raw.get("message"):
                return str(raw["message"])
        return self.error

    @property
    def retryable(self) -> bool:
        """429, 502, 504 and any Truto 5xx are worth retrying; other 4xx never."""
        if self.status_code in RETRYABLE_STATUSES:
            return True
        if self.status_code == 503:  # the integrated account is blocked
            return False
        return self.status_code >= 500

    @property
    def may_have_written(self) -> bool:
        """A 502/504 can come after the provider did the write (the response was lost)."""
        return self.status_code in (502, 504) or (self.status_code >= 500 and not self.truto_is_remote_error)

    def describe(self) -> str:
        """A clear, actionable sentence for a human or a model."""
        code = self.status_code
        msg = self.provider_message
        where = f" ({self.method} {self.path})" if self.method else ""
        if code == 401 and self.truto_is_remote_error:
            return (
                f"401 from Coviu{where}: the integrated account needs re-authentication; reconnect it in Truto. {msg}"
            )
        if code == 401:
            return f"401 from Truto{where}: the Truto API token was refused; check TRUTO_API_KEY. {msg}"
        if code == 403:
            scopes = _missing_scopes(self.insight)
            extra = f" missing scopes: {', '.join(scopes)}." if scopes else ""
            return f"403{where}: the account lacks permission for this call.{extra} {msg}".strip()
        if code == 404:
            return f"404{where}: not found. {msg}"
        if code == 405:
            return f"405{where}: this is a read-only (sandbox) integrated account; writes are refused. {msg}"
        if code == 503:
            return f"503{where}: the integrated account is blocked in Truto; unblock it there. {msg}"
        if code == 429:
            return f"429{where}: rate limited. {msg}"
        if code in (400, 409, 422):
            return f"{code} from Coviu{where}: {msg}"
        return f"{code} {self.error}{where}: {msg}"


def _missing_scopes(insight: Any) -> list[str]:
    try:
        scopes = insight["forbidden_error"]["value"]["missing_scopes"]
    except (KeyError, TypeError):
        return []
    return [str(s) for s in scopes] if isinstance(scopes, list) else []


class RateLimitedError(TrutoError):
    """A 429. `retry_after` is how long the governor said every caller must wait, from `received_at` (when the answer
    came, on the caller's clock; None: unknown, taken as when the error is handled)."""

    def __init__(
        self, *args: Any, retry_after: float = 10.0, received_at: datetime | None = None, **kwargs: Any
    ) -> None:
        self.retry_after = retry_after
        self.received_at = received_at
        super().__init__(*args, **kwargs)


class TransportError(CoviuAgentError):
    """No usable response: connect error, timeout, dropped connection, malformed body.

    `may_have_written` is true when the request was sent, so a write may have happened.
    """

    def __init__(self, kind: str, detail: str, *, method: str = "", path: str = "", sent: bool = True) -> None:
        self.kind = kind
        self.detail = detail
        self.method = method
        self.path = path
        self.sent = sent
        super().__init__(f"{kind} on {method} {path}: {detail}" if method else f"{kind}: {detail}")

    retryable = True

    @property
    def may_have_written(self) -> bool:
        return self.sent and self.method in ("POST", "PATCH", "PUT", "DELETE")


class MalformedResponseError(TransportError):
    """A 2xx (or 3xx) whose body is not what the call promises: empty, 204, `null`, HTML, an `error` object,
    a list call without a list, a get without an object, a redirect. Never an empty result: retried like any
    transient failure, and an error once retries are spent.
    """

    def __init__(self, detail: str, *, method: str = "", path: str = "", sent: bool = True) -> None:
        super().__init__("malformed response", detail, method=method, path=path, sent=sent)


class ResponseTooLargeError(MalformedResponseError):
    """A JSON body longer than the configured cap: stopped while streaming, never read into memory whole."""

    def __init__(self, limit: int, *, method: str = "", path: str = "", announced: int | None = None) -> None:
        self.limit = limit
        self.announced = announced
        said = f"announced {announced} bytes" if announced is not None else "the body kept coming"
        super().__init__(
            f"{said}, over the {limit}-byte cap for a JSON body (COVIU_AGENT_MAX_RESPONSE_BYTES); not read further",
            method=method,
            path=path,
        )


class RateLimitBudgetError(CoviuAgentError):
    """A rate-limit wait longer than what is left of the run's wait budget: not started, the run ends (exit 3).

    `until` (aware, UTC) is when the account is expected to accept requests again.
    """

    def __init__(
        self, until: datetime, *, wait: float, left: float, budget: float, why: str = "", zone: tzinfo | None = None
    ) -> None:
        self.until = until
        self.wait = wait
        self.left = left
        self.budget = budget
        self.why = why
        self.zone = zone
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.zone is not None:
            local = self.until.astimezone(self.zone)
            when = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or ''} (clinic time)".replace("  ", " ")
        else:
            when = f"{self.until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        reason = f" ({self.why})" if self.why else ""
        return (
            f"the account is rate limited until {when}{reason}: waiting {self.wait:.0f} s would exceed what is left "
            f"of this run's {self.budget:.0f} s rate-limit wait budget ({self.left:.0f} s left), so the wait was not "
            "started. Run again after that time, or allow longer waits with --max-wait / COVIU_AGENT_MAX_WAIT."
        )


class RetriesExhaustedError(CoviuAgentError):
    """Retries ran out; the run fails with exit code 3."""

    def __init__(self, what: str, attempts: int, last: Exception) -> None:
        self.what = what
        self.attempts = attempts
        self.last = last
        super().__init__(f"{what}: gave up after {attempts} attempts; last error: {last}")


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same request can succeed."""
    if isinstance(error, TrutoError):
        return error.retryable
    return isinstance(error, TransportError)


def error_from_payload(
    status: int,
    payload: Mapping[str, Any],
    *,
    reason: str = "",
    headers: Mapping[str, str] | None = None,
    method: str = "",
    path: str = "",
    hold: float = 0.0,
    received_at: datetime | None = None,
) -> TrutoError:
    """The typed error for a Truto error body (`error`, `message`, `truto_is_remote_error`, `raw_response`,
    `truto_error_insight`): the one mapping the proxy client and the MCP source share. A 429 carries the governor's
    `hold` (seconds) from `received_at`.
    """
    kwargs: dict[str, Any] = {
        "truto_is_remote_error": bool(payload.get("truto_is_remote_error", False)),
        "raw_response": payload.get("raw_response"),
        "headers": dict(headers or {}),
        "method": method,
        "path": path,
        "insight": payload.get("truto_error_insight"),
    }
    error = str(payload.get("error") or reason or "")
    message = str(payload.get("message") or "")
    if status == 429:
        return RateLimitedError(status, error, message, retry_after=hold, received_at=received_at, **kwargs)
    return TrutoError(status, error, message, **kwargs)


def error_from_httpx(exc: Exception, *, method: str = "", path: str = "") -> TransportError:
    """The typed error for an httpx failure before or while a response arrives: the one mapping both sources share.

    `sent` is false only when the request cannot have reached the server (connect errors, connect/pool timeouts).
    """
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        return TransportError("timeout", type(exc).__name__, method=method, path=path, sent=sent)
    if isinstance(exc, httpx.ConnectError):
        return TransportError("connect error", str(exc)[:200] or "refused", method=method, path=path, sent=False)
    return TransportError("connection dropped", type(exc).__name__, method=method, path=path)


class ModelFailedError(CoviuAgentError):
    """The chat model failed after its retries (unreachable, 5xx, 429 beyond the run's wait budget): an upstream
    failure, exit 3. `what` is the step that asked it."""


class ModelConfigError(RunInputError):
    """The chat model refused the configuration (401/403/404: key, base URL or model name): exit 2, nothing sent."""


MODEL_CONFIG_HINT = "check OPENAI_API_KEY, OPENAI_BASE_URL and COVIU_AGENT_MODEL"


def model_failure(exc: BaseException, what: str = "the model call") -> CoviuAgentError | None:
    """The app's error for a chat model's failure (LangChain's `ModelError` family, whatever the provider), or None
    when `exc` is not one. The one mapping every command shares (`agent.cli.common.run_async`, the graphs' model
    calls); langchain_core is not imported here: if it is not loaded, `exc` cannot be one of its errors."""
    import sys

    errors = sys.modules.get("langchain_core.exceptions")
    if errors is None or not isinstance(exc, errors.ModelError):
        return None
    from tools.textsafety import error_record

    if isinstance(exc, errors.ModelAuthenticationError | errors.ModelPermissionDeniedError | errors.ModelNotFoundError):
        return ModelConfigError(f"the LLM refused the configuration ({type(exc).__name__}): {MODEL_CONFIG_HINT}")
    return ModelFailedError(f"the LLM failed ({what}): {error_record(exc)[:300]}")


# Where each id a tool call carries comes from (for messages written for a person: which setting or flag to fix).
ID_SOURCES = {
    "team_id": "COVIU_TEAM_ID or --team-id",
    "teamId": "COVIU_TEAM_ID or --team-id",
    "waiting_queue_id": "COVIU_WAITING_QUEUE_ID or --queue-id",
    "collection_id": "COVIU_INTAKE_COLLECTION_ID or --collection-id",
    "collectionId": "COVIU_INTAKE_COLLECTION_ID or --collection-id",
    "integrated account": "TRUTO_INTEGRATED_ACCOUNT_ID or --accounts/--fleet",
}


def is_bad_input(error: BaseException | None) -> bool:
    """Whether a failure is the caller's input and a rerun of the same can never succeed: an invalid argument or
    run input (nothing was sent) or an id the account does not know (a 404: a team, queue, collection or integrated
    account). Errors that wrap another (`cause`) are judged by it. Everything else is upstream (exit 3)."""
    if error is None:
        return False
    if isinstance(error, RunInputError | ToolArgumentError):
        return True
    if isinstance(error, TrutoError):
        return error.status_code == 404
    return is_bad_input(getattr(error, "cause", None))


def for_person(error: BaseException) -> str:
    """A failure said to a person at a terminal or in cron mail (not to the model): what was wrong, with the value,
    which setting or flag it came from, and whether anything was sent. Secrets are redacted by the consoles.
    An error that wraps another says it already (its message was made with this)."""
    if isinstance(error, ToolArgumentError):
        source = ID_SOURCES.get(error.field)
        where = f"{error.field} (from {source})" if source else f"{error.tool}: {error.field or 'the arguments'}"
        return f"{where}: expected {error.expected}; nothing was sent"
    if isinstance(error, TrutoError) and error.status_code == 404:
        what = error.provider_message or "not found"
        hint = next((s for name, s in ID_SOURCES.items() if name in what), None)
        check = f"check {hint}" if hint else "check the ids in your settings and flags"
        where = f" ({error.method} {error.path})" if error.method else ""
        return f"not found: {what}{where}; {check} (a rerun will not help)"
    if isinstance(error, TrutoError):
        return error.describe()
    return str(error)
