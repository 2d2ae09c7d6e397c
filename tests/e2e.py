"""Helpers for end-to-end tests: the sandbox served by uvicorn in a thread, and the CLI as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandbox import Sandbox
from sandbox.server import build_server

FAKE_TRUTO_TOKEN = "truto-secret-TOKEN-7f3a9c"
FAKE_OPENAI_KEY = "sk-fake-openai-KEY-5b2e8d"
CLI = [sys.executable, "-m", "agent"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    sandbox: Sandbox


@contextmanager
def serve(sandbox: Sandbox) -> Iterator[Served]:
    """Serve this sandbox on a free loopback port for the duration of the block."""
    port = free_port()
    server = build_server(sandbox, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", sandbox)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def cli_env(tmp: Path, base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTO_", "COVIU_", "OPENAI_"))}
    env.update(
        TRUTO_BASE_URL=base_url,
        TRUTO_API_KEY=FAKE_TRUTO_TOKEN,
        TRUTO_INTEGRATED_ACCOUNT_ID="sandbox",
        COVIU_TEAM_ID="7d1c4b2e-5a3f-4e8b-9c61-2f0a8d3e4b57",
        COVIU_WAITING_QUEUE_ID="c2e9f6a1-8b4d-4f3a-a7e2-5d9b1c0f6e38",
        COVIU_INTAKE_COLLECTION_ID="4f8a2c6e-1d3b-4a5f-8e9c-7b0d2a6f3c91",
        COVIU_AGENT_STATE=str(tmp / "state.sqlite"),
        # the embedded sandbox, for a test that drops the TRUTO_* settings (with TRUTO_API_KEY set, the account wins)
        COVIU_AGENT_SANDBOX="1",
        HOME=str(tmp),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
