"""The embedded Truto + Coviu simulator: an ASGI app with a faithful in-memory clinic account.

Use it in-process (`SandboxTransport`) or over HTTP (`serve_sandbox`); see `create_sandbox`.
"""

from sandbox.app import RequestRecord, Sandbox, create_sandbox
from sandbox.clock import Clock, SystemClock
from sandbox.config import FaultConfig, SandboxConfig
from sandbox.demo import generate_sessions
from sandbox.ids import (
    DEMO_ACCOUNT_ID,
    DEMO_CLIENT_ID,
    DEMO_CONSENT_COLLECTION_ID,
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
)
from sandbox.profiles import config_from_env
from sandbox.transport import SandboxTransport

TYPE_CHECKING = False
if TYPE_CHECKING:
    from sandbox.server import build_server, serve_sandbox

__all__ = [
    "DEMO_ACCOUNT_ID",
    "DEMO_CLIENT_ID",
    "DEMO_CONSENT_COLLECTION_ID",
    "DEMO_INTAKE_COLLECTION_ID",
    "DEMO_TEAM_ID",
    "DEMO_WAITING_QUEUE_ID",
    "Clock",
    "FaultConfig",
    "RequestRecord",
    "Sandbox",
    "SandboxConfig",
    "SandboxTransport",
    "SystemClock",
    "build_server",
    "config_from_env",
    "create_sandbox",
    "generate_sessions",
    "serve_sandbox",
]


def __getattr__(name: str) -> object:
    """`build_server` and `serve_sandbox` load uvicorn: only when the sandbox is served (not in-process)."""
    if name in ("build_server", "serve_sandbox"):
        from sandbox import server

        return getattr(server, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
