"""Every setting of the contract (§3) as one pydantic-settings model, read from env and `.env`.

Secrets are `SecretStr`: they never appear in reprs, logs or output.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from tools.toolbox import Bounds

# The embedded sandbox's demo ids (sandbox/demo.py uses the same values; a test checks they agree).
SANDBOX_ACCOUNT_ID = "sandbox"
SANDBOX_API_KEY = "sandbox"
SANDBOX_BASE_URL = "http://sandbox.local"


def _insecure(url: str) -> bool:
    """Plain http:// to a host that is not loopback (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


# Default rate-limit wait budgets (seconds) of the long commands; triage and ask use tools.ratelimit's 120 s.
LONG_RUN_MAX_WAIT = 1800.0


def default_state_path() -> str:
    from platformdirs import user_state_dir  # only when COVIU_AGENT_STATE is not set

    return str(Path(user_state_dir("coviu-agent")) / "checkpoints.sqlite")


class Settings(BaseSettings):
    """coviu-agent's configuration. CLI flags override these."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    truto_api_key: SecretStr | None = Field(default=None, validation_alias="TRUTO_API_KEY")
    truto_integrated_account_id: str | None = Field(default=None, validation_alias="TRUTO_INTEGRATED_ACCOUNT_ID")
    truto_base_url: str = Field(default="https://api.truto.one", validation_alias="TRUTO_BASE_URL")
    truto_mcp_url: SecretStr | None = Field(default=None, validation_alias="TRUTO_MCP_URL")
    truto_rate_limit: int = Field(default=50, ge=1, le=10_000, validation_alias="TRUTO_RATE_LIMIT_PER_10S")
    # plain http:// to a host other than loopback would send the token in clear: refused unless this is set
    truto_allow_insecure: bool = Field(default=False, validation_alias="TRUTO_ALLOW_INSECURE")

    coviu_team_id: str | None = Field(default=None, validation_alias="COVIU_TEAM_ID")
    coviu_waiting_queue_id: str | None = Field(default=None, validation_alias="COVIU_WAITING_QUEUE_ID")
    coviu_intake_collection_id: str | None = Field(default=None, validation_alias="COVIU_INTAKE_COLLECTION_ID")
    coviu_clinic_name: str | None = Field(
        default=None, validation_alias="COVIU_CLINIC_NAME", description="The clinic's name for report headers."
    )

    timezone: str = Field(default="UTC", validation_alias="COVIU_AGENT_TIMEZONE")

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    model: str = Field(default="gpt-4o", validation_alias=AliasChoices("COVIU_AGENT_MODEL"))
    planner: Literal["llm", "rules", "auto"] = Field(default="auto", validation_alias="COVIU_AGENT_PLANNER")

    state: str = Field(default_factory=default_state_path, validation_alias="COVIU_AGENT_STATE")
    # Where an account's pacing lives: `shared` (the rate store beside the state: every process of the deployment
    # spends one budget) or `process` (this process's memory: for a worker that alone audits its accounts, e.g.
    # `audit --fleet F --shard I/N`; docs/scale.md).
    rate_store: Literal["shared", "process"] = Field(default="shared", validation_alias="COVIU_AGENT_RATE_STORE")
    log_level: str = Field(default="INFO", validation_alias="COVIU_AGENT_LOG_LEVEL")

    # Bounds (README "Bounds"): the run's total rate-limit wait (unset: each command's default: audit and
    # recordings 1800 s, triage and ask 120 s, queue watch one interval), each request's deadline, the JSON cap.
    max_wait: float | None = Field(default=None, gt=0, le=7 * 86_400, validation_alias="COVIU_AGENT_MAX_WAIT")
    request_deadline: float = Field(default=60.0, gt=0, le=3600, validation_alias="COVIU_AGENT_REQUEST_DEADLINE")
    max_response_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, le=4 * 1024**3, validation_alias="COVIU_AGENT_MAX_RESPONSE_BYTES"
    )
    # A recording download that brings fewer than 64 KiB in this many seconds has stalled (resumed later).
    download_stall_seconds: float = Field(
        default=60.0, ge=1, le=3600, validation_alias="COVIU_AGENT_DOWNLOAD_STALL_SECONDS"
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"COVIU_AGENT_TIMEZONE={value!r} is not an IANA time zone (e.g. Australia/Sydney)"
            ) from None
        return value

    @field_validator("rate_store", mode="before")
    @classmethod
    def _known_rate_store(cls, value: object) -> object:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in ("shared", "process"):
            raise ValueError(f"COVIU_AGENT_RATE_STORE={value!r}: expected shared or process")
        return text

    @field_validator("planner", mode="before")
    @classmethod
    def _planner_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"COVIU_AGENT_LOG_LEVEL={value!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("state")
    @classmethod
    def _state_not_a_directory(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")) and Path(value).expanduser().is_dir():
            raise ValueError(f"COVIU_AGENT_STATE={value!r} is a directory: name a file in it (e.g. state.sqlite)")
        return value

    @field_validator("truto_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"TRUTO_BASE_URL={value!r}: expected an http(s) URL")
        from urllib.parse import urlsplit

        try:
            host = urlsplit(value).hostname
        except ValueError as exc:  # e.g. "http://[::1": an unclosed IPv6 bracket
            raise ValueError(f"TRUTO_BASE_URL={value!r}: not a valid URL ({exc})") from None
        if not host:
            raise ValueError(f"TRUTO_BASE_URL={value!r}: expected an http(s) URL with a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _account_with_key(self) -> Settings:
        if self.truto_api_key is not None and not self.truto_api_key.get_secret_value().strip():
            self.truto_api_key = None
        if self.truto_api_key is not None and not self.truto_integrated_account_id:
            raise ValueError("TRUTO_API_KEY is set but TRUTO_INTEGRATED_ACCOUNT_ID is not")
        if self.truto_mcp_url is not None and not self.truto_mcp_url.get_secret_value().startswith(
            ("http://", "https://")
        ):
            raise ValueError("TRUTO_MCP_URL is set but is not an http(s) URL")
        if self.planner == "llm" and self.openai_api_key is None:
            raise ValueError("COVIU_AGENT_PLANNER=llm needs OPENAI_API_KEY")
        if not self.truto_allow_insecure:
            if self.truto_api_key is not None and _insecure(self.truto_base_url):
                raise ValueError(
                    "TRUTO_BASE_URL is plain http:// to a non-loopback host: the token would be sent in clear "
                    "(use https://, or set TRUTO_ALLOW_INSECURE=1)"
                )
            if self.openai_api_key is not None and self.openai_base_url and _insecure(self.openai_base_url):
                raise ValueError(
                    "OPENAI_BASE_URL is plain http:// to a non-loopback host: the OpenAI key would be sent in clear "
                    "(use https://, or set TRUTO_ALLOW_INSECURE=1)"
                )
            # without a Truto key the MCP URL can only be the embedded sandbox's (in-process, never on the wire)
            if (
                self.truto_mcp_url is not None
                and not self.uses_sandbox
                and _insecure(self.truto_mcp_url.get_secret_value())
            ):
                raise ValueError(
                    "TRUTO_MCP_URL is plain http:// to a non-loopback host: its token would be sent in clear "
                    "(use https://, or set TRUTO_ALLOW_INSECURE=1)"
                )
        return self

    # --- derived ---------------------------------------------------------------------------------

    @property
    def uses_sandbox(self) -> bool:
        """No Truto key: the embedded sandbox answers in-process."""
        return self.truto_api_key is None

    @property
    def effective_planner(self) -> Literal["llm", "rules"]:
        if self.planner == "auto":
            return "llm" if self.openai_api_key is not None else "rules"
        return self.planner

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def use_max_wait(self, flag: float | None, command_default: float) -> None:
        """The command's rate-limit wait budget: `--max-wait`, else COVIU_AGENT_MAX_WAIT, else the command's default."""
        if flag is not None:
            self.max_wait = flag
        elif self.max_wait is None:
            self.max_wait = command_default

    def bounds(self) -> Bounds:
        """What the tool layer needs to bound every wait and request (tools.toolbox.Bounds)."""
        from tools.toolbox import Bounds

        return Bounds(
            max_wait=self.max_wait if self.max_wait is not None else Bounds.max_wait,
            request_deadline=self.request_deadline,
            max_json_bytes=self.max_response_bytes,
            zone=self.zone,
        )

    def secrets(self) -> list[str]:
        """Every secret value, for the log redaction filter."""
        out = []
        for secret in (self.truto_api_key, self.openai_api_key, self.truto_mcp_url):
            if secret is not None and secret.get_secret_value():
                out.append(secret.get_secret_value())
        return out
