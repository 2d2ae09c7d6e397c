"""Errors the simulator answers with: Truto's own, and Coviu's passed through Truto.

Both render as Truto's error body `{"statusCode", "error", "message", "truto_is_remote_error"?, "raw_response"?}`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class CoviuError(Exception):
    """An error Coviu itself returns (rule violation, unknown id, invalid field); Truto passes it through."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TrutoError(Exception):
    """An error answered by Truto (or passed through it when `remote` is set)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        remote: bool = False,
        raw_response: Any = None,
        insight: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.remote = remote
        self.raw_response = raw_response
        self.insight = insight
        self.headers = headers or {}

    @classmethod
    def from_coviu(cls, error: CoviuError) -> TrutoError:
        """Coviu's error as Truto forwards it: remote flag, provider body in `raw_response`."""
        return cls(
            error.status,
            error.message,
            remote=True,
            raw_response={"error": {"message": error.message}},
        )

    def body(self) -> dict[str, Any]:
        """The JSON body Truto sends."""
        payload: dict[str, Any] = {
            "statusCode": self.status,
            "error": reason_phrase(self.status),
            "message": self.message,
        }
        if self.remote:
            payload["truto_is_remote_error"] = True
            payload["raw_response"] = self.raw_response
        if self.insight is not None:
            payload["truto_error_insight"] = self.insight
        return payload


def reason_phrase(status: int) -> str:
    """`Not Found` for 404, and so on."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
