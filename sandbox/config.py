"""Settings of the simulated Truto account and the faults it injects.

`sandbox.profiles.config_from_env()` builds one from the environment: the profile (`COVIU_SANDBOX_PROFILE`,
`COVIU_SANDBOX_SEED`), then `COVIU_SANDBOX_CONFIG` and `COVIU_SANDBOX_FAULTS` (JSON objects).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AccountStatus = Literal["active", "needs_reauth", "blocked", "read_only", "missing_scopes"]


class FaultConfig(BaseModel):
    """Which faults the proxy injects, and how often; one seeded `random.Random` decides each one."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = 0
    rate_limit_storm: float = Field(default=0.0, ge=0.0, le=1.0)
    server_errors: float = Field(default=0.0, ge=0.0, le=1.0)
    slow: float = Field(default=0.0, ge=0.0, le=1.0)
    slow_seconds: float = Field(default=2.0, ge=0.0)
    drop: float = Field(default=0.0, ge=0.0, le=1.0)
    malformed_json: float = Field(default=0.0, ge=0.0, le=1.0)
    lost_response: float = Field(default=0.0, ge=0.0, le=1.0)
    lost_response_next: int = Field(default=0, ge=0)
    only_resources: list[str] | None = None
    # Bounds. A storm of the next N proxy calls: each a remote 429 with Retry-After 1-2 s (as seconds or
    # an HTTP date, per `retry_after_format`).
    rate_limit_storm_next: int = Field(default=0, ge=0)
    # A raw value for the storm 429s' Retry-After and ratelimit-reset (e.g. "3600", "inf", "1e400", "soon").
    retry_after_value: str | None = Field(default=None, max_length=200)
    # Successful proxy replies say `ratelimit-remaining: 0` with this raw `ratelimit-reset` (e.g. "86400").
    exhausted_reset: str | None = Field(default=None, max_length=200)
    # Faulty JSON replies are sent one byte every `drip_seconds` (0: off); the Content-Length is honest.
    drip_seconds: float = Field(default=0.0, ge=0.0)
    # Faulty JSON GET replies are padded to this many bytes, streamed without a Content-Length (0: off).
    oversized_bytes: int = Field(default=0, ge=0)
    # Binary replies never end: after the file's bytes, filler forever, without a Content-Length.
    endless_media: bool = False


class SandboxConfig(BaseModel):
    """How the simulated Truto account behaves (formats, limits, account status, rules)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    integrated_account_id: str = "sandbox"
    # More integrated accounts (clinics) served by the proxy: each has its own store (the demo clinic's structure and
    # demo day, generated on first use) and its own rate-limit window of `rate_limit` per `rate_window_seconds`.
    accounts: list[str] = Field(default_factory=list)
    api_token: str | None = None
    rate_limit: int = Field(default=50, ge=1)
    rate_window_seconds: float = Field(default=10.0, gt=0.0)
    ratelimit_reset_format: Literal["seconds", "unix"] = "seconds"
    retry_after_format: Literal["seconds", "http-date"] = "seconds"
    time_format: Literal["iso", "rfc1123"] = "iso"
    tools_envelope: Literal["result", "results"] = "result"
    id_location: Literal["query", "body"] = "query"
    honour_idempotency_keys: bool = True
    account_status: AccountStatus = "active"
    participant_cancel_rule: Literal["finished", "started"] = "finished"
    # Readings of Truto and Coviu that a real account may differ by (sandbox/profiles.py turns them on).
    list_envelope: Literal["result", "results"] = "result"
    summary_method: Literal["get", "custom"] = "get"  # custom: POST /proxy/session_summaries/summary
    page_size: int | None = Field(default=None, ge=1)  # every list pages by this many rows; `limit` is ignored
    canceled_listed_by_default: bool = False  # canceled sessions listed unless `include_canceled=false`
    submission_layout: Literal["full", "sparse"] = "full"  # sparse: null fields left out, keys in another order
    remote_error_message: Literal["message", "raw_response"] = "message"  # raw_response: `message` is empty
    session_actual_end_listed: bool = False  # sessions (lists and gets) carry OAS's optional `actual_end_time`
    participant_entry_listed: bool = False  # a session's participants (lists and gets) carry their `entry_time`
    faults: FaultConfig = Field(default_factory=FaultConfig)
