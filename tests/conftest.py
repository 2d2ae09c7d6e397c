"""Shared fixtures: a fake clock, the in-process sandbox, and services wired to it.

Every test runs against the sandbox (or mocks); nothing leaves loopback.

Profiles: every test that uses `sandbox_profile` (directly or through `sandbox_config`, `sandbox`, `services`)
runs once per sandbox profile (sandbox/profiles.py): `default`, `variant`, and `random-<seed>` for each seed in
`COVIU_TEST_PROFILE_SEEDS` (default `1-2`; `make soak` runs more). A failing `random-<seed>` replays with
`coviu-agent sandbox serve --profile random --seed <seed>`. `@pytest.mark.profiles("default")` pins a test that
depends on one profile's exact format.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from graphs.context import Services
from sandbox import (
    DEMO_ACCOUNT_ID,
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
    create_sandbox,
)
from sandbox.profiles import Profile, parse_label, parse_seeds
from tools.clock import FakeClock
from tools.ratelimit import RateLimitGovernor
from tools.toolbox import open_toolbox

START = datetime(2026, 11, 25, 9, 0, 7, tzinfo=UTC)

# The embedded sandbox runs only when asked for: every test process asks, so the CLI (CliRunner, and
# subprocesses that inherit this environment) and `Settings()` run on it when no TRUTO_API_KEY is set. A test of the
# unasked case removes it (monkeypatch.delenv); helpers that build a clean environment set it again themselves.
os.environ["COVIU_AGENT_SANDBOX"] = "1"


def profile_labels() -> list[str]:
    """The profiles every scenario test runs on: default, variant, and random-<seed> per test seed."""
    seeds = parse_seeds(os.environ.get("COVIU_TEST_PROFILE_SEEDS", "1-2"))
    return ["default", "variant", *(f"random-{seed}" for seed in seeds)]


PROFILE_LABELS = profile_labels()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "profiles(*labels): run this test only on these sandbox profiles (e.g. 'default')"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that reaches `sandbox_profile` over the profiles (or those its marker names)."""
    if "sandbox_profile" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("profiles")
    labels = [str(label) for label in marker.args] if marker else PROFILE_LABELS
    metafunc.parametrize("sandbox_profile", labels, indirect=True)


@pytest.fixture(autouse=True)
def _the_machine_as_it_was() -> Iterator[None]:
    """No test changes the machine's shared files: run as root, a chmod through a state path of /dev/null once made
    it 0600 for every other program (PostgreSQL's start-up among them)."""
    import os
    import stat

    before = os.stat(os.devnull).st_mode
    yield
    after = os.stat(os.devnull).st_mode
    assert after == before, f"{os.devnull} went from {stat.filemode(before)} to {stat.filemode(after)}"


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A CLI run configures logging (levels of our loggers, the root's handlers), names its source and registers its
    secrets: put them back after each test, so a test's `caplog`, output and redaction are its own whatever ran
    before it (secrets piling up over the suite made redacting a 10,000-session report take minutes)."""
    import logging

    names = ["", "agent", "graphs", "tools", "sandbox", "prompts", "bench", "httpx", "httpcore", "openai", "mcp"]
    levels = {name: logging.getLogger(name).level for name in names}
    handlers = list(logging.getLogger().handlers)
    from tools.textsafety import REDACTOR

    secrets = REDACTOR.secrets
    yield
    REDACTOR.keep_only(secrets)  # the secrets this test registered end with it
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    from agent.cli.common import ask_for_sandbox

    ask_for_sandbox(False)  # a CLI run in this process named its source: the next test's output starts unnamed


@pytest.fixture
def sandbox_profile(request: pytest.FixtureRequest) -> Profile:
    """The sandbox profile of this test run (its label is in the test id, e.g. `[random-2]`)."""
    return parse_label(str(getattr(request, "param", "default")))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def sandbox_config(sandbox_profile: Profile) -> SandboxConfig:
    return sandbox_profile.config


@pytest.fixture
def sandbox(clock: FakeClock, sandbox_config: SandboxConfig) -> Sandbox:
    return create_sandbox(config=sandbox_config, clock=clock)


async def make_services(
    sandbox: Sandbox, clock: FakeClock, report_dir: Path, *, timeout: httpx.Timeout | None = None, **kwargs: object
) -> Services:
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=SandboxTransport(sandbox),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
        **({"timeout": timeout} if timeout is not None else {}),  # type: ignore[arg-type]
    )
    return Services(
        toolbox=toolbox,
        team_id=DEMO_TEAM_ID,
        waiting_queue_id=DEMO_WAITING_QUEUE_ID,
        collection_id=DEMO_INTAKE_COLLECTION_ID,
        report_dir=report_dir,
        **({"source": "sandbox"} | kwargs),  # type: ignore[arg-type]
    )


@pytest.fixture
async def services(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Services]:
    built = await make_services(sandbox, clock, tmp_path / "reports")
    yield built
    await built.toolbox.aclose()
