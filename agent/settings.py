"""Every setting of the contract (§3) as one pydantic-settings model, read from env and `.env`.

Secrets are `SecretStr`: they never appear in reprs, logs or output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tools.timeparse import known_zone

if TYPE_CHECKING:
    from agent.notify import Channel
    from tools.toolbox import Bounds

# The embedded sandbox's demo ids (sandbox/demo.py uses the same values; a test checks they agree).
SANDBOX_ACCOUNT_ID = "sandbox"
SANDBOX_API_KEY = "sandbox"
SANDBOX_BASE_URL = "http://sandbox.local"
# The `source` of every report and JSON output made on the embedded sandbox (else the integrated account's id).
SANDBOX_SOURCE = "sandbox"
NO_TRUTO_ACCOUNT = (
    "TRUTO_API_KEY is not set: set TRUTO_API_KEY and TRUTO_INTEGRATED_ACCOUNT_ID for the clinic's account, "
    "or ask for the demo clinic with `coviu-agent --sandbox ...` (or COVIU_AGENT_SANDBOX=1)"
)


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


def _userinfo_problem(name: str, url: str, credential: str = "TRUTO_API_KEY") -> str | None:
    """A URL with `user:password@` is bad input: httpx would send it as Basic auth in place of the token, and its
    password would be one more secret to keep out of every log. The message never shows the userinfo."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        has_userinfo = "@" in parts.netloc
    except ValueError:
        return None
    if not has_userinfo:
        return None
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return (
        f"{name} carries a user name or password (user:password@): remove it and use {shown}; "
        f"the credential goes in {credential}"
    )


def _shown_url(url: str) -> str:
    """A URL for an error message: any userinfo is left out."""
    import re

    return re.sub(r"(?i)^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url)


# Default rate-limit wait budgets (seconds) of the long commands; triage and ask use tools.ratelimit's 120 s.
LONG_RUN_MAX_WAIT = 1800.0


def default_state_path() -> str:
    from platformdirs import user_state_dir  # only when COVIU_AGENT_STATE is not set

    return str(Path(user_state_dir("coviu-agent")) / "checkpoints.sqlite")


class Settings(BaseSettings):
    """coviu-agent's configuration. CLI flags override these."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    truto_api_key: SecretStr | None = Field(default=None, validation_alias="TRUTO_API_KEY")
    # The embedded sandbox (demo data) runs only when asked for: COVIU_AGENT_SANDBOX=1 (with no TRUTO_API_KEY) or
    # `coviu-agent --sandbox` (always; the Truto account settings are then ignored). Neither, no key: exit 2.
    sandbox: bool = Field(default=False, validation_alias="COVIU_AGENT_SANDBOX")
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
    log_format: str = Field(default="text", validation_alias="COVIU_AGENT_LOG_FORMAT")
    # Operations (README "Operations"): a Prometheus textfile of runs and counters; OpenTelemetry reads OTEL_*.
    metrics_file: Path | None = Field(default=None, validation_alias="COVIU_AGENT_METRICS_FILE")

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

    # A second run of a thread waits this long for the first to end, then exits 3 (agent/threadlock.py).
    thread_lock_wait_seconds: float = Field(
        default=10.0, ge=0, le=3600, validation_alias="COVIU_AGENT_THREAD_LOCK_WAIT"
    )

    # Staff notifications (README "Alerts and reports to staff"): Apprise URLs, secrets. The second names channels
    # allowed to carry patient data (names); the first, channels that never get them.
    notify: SecretStr | None = Field(default=None, validation_alias="COVIU_AGENT_NOTIFY")
    notify_patient_data: SecretStr | None = Field(default=None, validation_alias="COVIU_AGENT_NOTIFY_PATIENT_DATA")
    # "22:00-07:00" in the clinic's time zone: queue alerts raised then are remembered, not sent (dropped)
    quiet_hours: str | None = Field(default=None, validation_alias="COVIU_AGENT_QUIET_HOURS")

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from agent.quiet import parse_quiet_hours

        parse_quiet_hours(value)  # ValueError names the setting
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if known_zone(value) is None:
            raise ValueError(f"COVIU_AGENT_TIMEZONE={value!r} is not an IANA time zone (e.g. Australia/Sydney)")
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

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value.strip().lower() not in ("text", "json"):
            raise ValueError(f"COVIU_AGENT_LOG_FORMAT={value!r}: expected text or json")
        return value.strip().lower()

    @field_validator("metrics_file")
    @classmethod
    def _metrics_file_not_a_directory(cls, value: Path | None) -> Path | None:
        if value is not None and value.expanduser().is_dir():
            raise ValueError(
                f"COVIU_AGENT_METRICS_FILE={str(value)!r} is a directory: name a file in it (e.g. coviu_agent.prom)"
            )
        return value

    @field_validator("state")
    @classmethod
    def _state_not_a_directory(cls, value: str) -> str:
        # a PostgreSQL store named in a form we do not take would be a SQLite path: a local file named after it
        # (its password in a folder name), never the shared store the operator meant
        scheme = re.match(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://", value)
        if scheme and scheme.group(1) not in ("postgresql", "postgres"):
            raise ValueError(
                f"COVIU_AGENT_STATE: a {scheme.group(1)!r} URL is not taken: give a PostgreSQL store as "
                "postgresql://user:password@host:port/database, or a SQLite file path"
            )
        if re.match(r"\s*(host|hostaddr|port|dbname|user|password|service)\s*=", value):
            raise ValueError(
                "COVIU_AGENT_STATE: a libpq keyword string is not taken: give a PostgreSQL store as "
                "postgresql://user:password@host:port/database, or a SQLite file path"
            )
        if not value.startswith(("postgresql://", "postgres://")) and Path(value).expanduser().is_dir():
            raise ValueError(f"COVIU_AGENT_STATE={value!r} is a directory: name a file in it (e.g. state.sqlite)")
        return value

    @field_validator("truto_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        shown = _shown_url(value)
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"TRUTO_BASE_URL={shown!r}: expected an http(s) URL")
        from urllib.parse import urlsplit

        try:
            host = urlsplit(value).hostname
        except ValueError as exc:  # e.g. "http://[::1": an unclosed IPv6 bracket
            raise ValueError(f"TRUTO_BASE_URL={shown!r}: not a valid URL ({_shown_url(str(exc))})") from None
        problem = _userinfo_problem("TRUTO_BASE_URL", value)
        if problem:
            raise ValueError(problem)
        if not host:
            raise ValueError(f"TRUTO_BASE_URL={shown!r}: expected an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("openai_base_url")
    @classmethod
    def _no_userinfo(cls, value: str | None) -> str | None:
        problem = _userinfo_problem("OPENAI_BASE_URL", value, "OPENAI_API_KEY") if value else None
        if problem:
            raise ValueError(problem)
        return value

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
        if self.truto_mcp_url is not None:
            problem = _userinfo_problem("TRUTO_MCP_URL", self.truto_mcp_url.get_secret_value())
            if problem:  # its path is a secret too: only the host is shown
                raise ValueError(problem.split(": remove it")[0] + ": remove it (the URL's token is its credential)")
        if self.planner == "llm" and not self.llm_configured:
            raise ValueError("COVIU_AGENT_PLANNER=llm needs OPENAI_API_KEY (or COVIU_AGENT_MODEL=<provider>:<model>)")
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
                and self.truto_api_key is not None
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
        """The embedded sandbox answers in-process: asked for (COVIU_AGENT_SANDBOX=1 or `--sandbox`), no Truto key."""
        return self.sandbox and self.truto_api_key is None

    @property
    def source(self) -> str:
        """Where the data comes from, as every report and JSON output names it: "sandbox" or the integrated account."""
        if self.uses_sandbox:
            return SANDBOX_SOURCE
        return self.truto_integrated_account_id or "unknown"

    def on_sandbox(self) -> Settings:
        """These settings on the embedded sandbox (`--sandbox`): a Truto account's settings (key, account, MCP URL,
        clinic ids) are left out, so a demo never reaches a real account."""
        update: dict[str, object] = {"sandbox": True}
        if self.truto_api_key is not None:
            update |= dict.fromkeys(
                (
                    "truto_api_key",
                    "truto_integrated_account_id",
                    "truto_mcp_url",
                    "coviu_team_id",
                    "coviu_waiting_queue_id",
                    "coviu_intake_collection_id",
                )
            )
        return self.model_copy(update=update)

    @property
    def llm_configured(self) -> bool:
        """A model is named and can be reached: OPENAI_API_KEY for an OpenAI-compatible one (a bare name or
        `openai:`), or another LangChain provider (`anthropic:...`), which reads its own key (agent/model.py)."""
        from agent.model import uses_openai_key

        return self.openai_api_key is not None or not uses_openai_key(self.model)

    @property
    def effective_planner(self) -> Literal["llm", "rules"]:
        if self.planner == "auto":
            return "llm" if self.llm_configured else "rules"
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
        """Every secret value, for the log redaction filter. The served sandbox's token is the public word
        `sandbox` (`TRUTO_API_KEY=sandbox`, README): not a secret, and redacting it would turn the `sandbox`
        account's name into "[redacted]" everywhere."""
        out = []
        for secret in (
            self.truto_api_key,
            self.openai_api_key,
            self.truto_mcp_url,
            self.notify,
            self.notify_patient_data,
        ):
            if secret is not None and secret.get_secret_value() and secret.get_secret_value() != SANDBOX_API_KEY:
                out.append(secret.get_secret_value())
        for urls in (self.notify, self.notify_patient_data):  # each URL alone too (a log line may quote one)
            if urls is not None:
                from agent.notify import split_urls, url_secrets  # only when configured: not on triage's way

                for url in split_urls(urls.get_secret_value()):
                    out += [url, *url_secrets(url)]
        return out

    def channels(self) -> list[Channel]:
        """The notification channels (COVIU_AGENT_NOTIFY, COVIU_AGENT_NOTIFY_PATIENT_DATA); BadInput names a bad URL."""
        from agent.notify import channels_from

        return channels_from(
            self.notify.get_secret_value() if self.notify else None,
            self.notify_patient_data.get_secret_value() if self.notify_patient_data else None,
        )
