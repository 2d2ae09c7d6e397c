"""Tests of the sandbox served over real HTTP by uvicorn: `/tools`, a proxy call and a dropped connection.

The server runs on a free 127.0.0.1 port in a background thread and is stopped at the end.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from sandbox import FaultConfig, Sandbox, create_sandbox
from sandbox.server import build_server
from tools.clock import FakeClock

IA = {"integrated_account_id": "sandbox"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[Sandbox, str]]:
    sb = create_sandbox(clock=FakeClock())
    port = free_port()
    server = build_server(sb, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sb, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_tools_and_dropped_connection_over_http(served: tuple[Sandbox, str]) -> None:
    sb, base_url = served
    headers = {"Authorization": "Bearer sandbox"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=5.0) as client:
        tools = await client.get("/integrated-account/sandbox/tools")
        assert tools.status_code == 200
        assert "create_a_coviu_session" in {tool["name"] for tool in tools.json()["result"]}
        assert tools.headers["date"] == "Wed, 25 Nov 2026 09:00:00 GMT"  # from the injected clock
        assert "server" not in tools.headers
        sessions = await client.get("/proxy/sessions", params=IA)
        assert sessions.status_code == 200 and sessions.headers["ratelimit-limit"] == "50"
        sb.set_faults(FaultConfig(drop=1.0))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/proxy/sessions", params=IA)
        sb.set_faults(FaultConfig())
        again = await client.get("/proxy/sessions", params=IA)
        assert again.status_code == 200
    assert [r.fault for r in sb.requests] == [None, None, "drop", None]
