"""The sandbox over real HTTP with uvicorn (`coviu-agent sandbox serve`).

Uvicorn's own Date/Server headers are off: the app sends `date` from its injected clock.
"""

from __future__ import annotations

import logging

import uvicorn

from sandbox.app import Sandbox, create_sandbox
from sandbox.config import SandboxConfig
from sandbox.faults import ConnectionDropped
from sandbox.profiles import config_from_env


class _HideDroppedConnections(logging.Filter):
    """Keeps uvicorn from logging a traceback for each connection the sandbox drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def build_server(
    sandbox: Sandbox, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning"
) -> uvicorn.Server:
    """A uvicorn server for this sandbox (call `.run()`, or set `.should_exit` to stop it)."""
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(_HideDroppedConnections())
    config = uvicorn.Config(
        sandbox,
        host=host,
        port=port,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config)


def serve_sandbox(
    host: str = "127.0.0.1",
    port: int = 8765,
    config: SandboxConfig | None = None,
    *,
    sandbox: Sandbox | None = None,
    log_level: str = "warning",
) -> None:
    """Serve a sandbox over HTTP until interrupted (blocking). Without a config, reads it from the environment."""
    app = sandbox or create_sandbox(config or config_from_env())
    build_server(app, host, port, log_level).run()
